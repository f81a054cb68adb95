"""The pieces behind the graph, one at a time: the timing model's cores, the writer's stamp
check, provenance, the policy's error cause, the message helpers with real rclpy classes, and a
node's start-up (its config/<node>.yaml, a bad configuration logged through the node's logger)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from apo_ros.actions.safety import SafetyFilter
from apo_ros.control.policy_runner import PolicyRunner, provenance
from apo_ros.observation import Observation
from apo_ros.recording import messages as M
from apo_ros.runtime.ros_io import CommandOnce, ControlSteps, cdr_header_stamp_ns
from apo_ros.teleop.arbiter import PolicyCommand, TeleopArbiter

S = 1_000_000_000
MS = 1_000_000
ROOT = Path(__file__).resolve().parents[1]


def test_each_command_is_executed_once_then_expires():
    once = CommandOnce(0.2, capacity=4)
    assert once.take(0) is None
    once.put("a", 1 * S)
    assert once.take(1 * S + 50 * MS) == "a"
    assert once.take(1 * S + 60 * MS) is None  # never repeated
    once.put("b", 2 * S)  # arrived just after a tick ...
    once.put("c", 2 * S + 10 * MS)  # ... and the next one before the following tick
    assert once.late == 1
    assert once.take(2 * S + 20 * MS) == "b" and once.take(2 * S + 120 * MS) == "c"  # both, in order
    for k in range(5):
        once.put(k, 3 * S)
    assert once.dropped == 1 and once.take(3 * S) == 1  # at most 4 wait
    once.clear()
    once.put("d", 4 * S)
    assert once.take(4 * S + 300 * MS) is None and once.expired == 1  # too old to apply


def test_control_steps_decide_each_observation_once():
    steps = ControlSteps(deadline_s=0.06)
    assert steps.observe(1 * S, 1 * S + 2 * MS)
    assert steps.accept(1 * S, 1 * S + 20 * MS)  # the command for this observation decides it
    steps.close()
    assert not steps.accept(1 * S, 1 * S + 30 * MS)  # the same command again: dropped
    assert steps.observe(2 * S, 2 * S + 1 * MS)
    assert not steps.accept(1 * S, 2 * S + 5 * MS)  # a command for the previous step: dropped
    assert not steps.expired(2 * S + 50 * MS) and steps.expired(2 * S + 70 * MS)
    assert not steps.accept(2 * S, 2 * S + 70 * MS)  # after the deadline: dropped
    steps.close()
    assert steps.observe(3 * S, 3 * S)
    assert not steps.observe(4 * S, 4 * S)  # step 3 was never decided: it ended undecided
    with pytest.raises(ValueError, match="not newer"):
        steps.observe(0, 5 * S)  # a zero / old stamp does not open a step


def test_arbiter_never_executes_an_expired_policy_command_twice():
    arbiter = TeleopArbiter()
    cmd = PolicyCommand(np.array([0.001, 0, 0, 0, 0, 0, 1.0]), obs_stamp_ns=1 * S)
    out = arbiter.update(1 * S, policy=cmd)
    assert out.source == "policy"
    arbiter.expire_policy()
    again = arbiter.update(1 * S + 100 * MS)  # within policy_timeout_s, but already executed
    assert again.source == "none" and not np.any(again.action[:6])


class _Raising:
    def select_action(self, observation):
        raise IndexError("token 300 out of range")

    def reset(self):
        pass


def _obs(stamp: int) -> Observation:
    img = np.zeros((8, 8, 3), np.uint8)
    return Observation(images={"front": img, "wrist": img}, joint_positions=np.zeros(3),
                       ee_pose=np.array([0.5, 0, 0.3, 0, 0, 0, 1.0]), gripper=1.0,
                       instruction="x", stamp_ns=stamp)


def test_a_policy_exception_is_zero_motion_with_its_cause():
    runner = PolicyRunner(_Raising(), SafetyFilter())
    step = runner.step(_obs(1 * S))
    assert not step.ok and not np.any(step.action[:6])
    assert "policy_error: IndexError: token 300 out of range" in step.reasons


def test_provenance_is_content_hash_and_statistics_id(tmp_path):
    from apo_ros.policies import build_policy, load_policy, policy_id, save_policy
    from apo_ros.policies.testing import default_statistics

    policy = build_policy("small", default_statistics(0.03), instructions=["x"], device="cpu",
                          channels=(8, 8, 8), hidden=16)
    save_policy(policy, str(tmp_path / "ckpt"))
    loaded = load_policy(str(tmp_path / "ckpt"), device="cpu")
    assert provenance(loaded, loaded.policy_id) == {
        "policy_id": policy_id(str(tmp_path / "ckpt")),
        "stats_id": default_statistics(0.03).statistics_id()}
    assert provenance(_Raising(), "expert") == {"policy_id": "expert", "stats_id": ""}


def test_the_session_writes_the_same_provenance_as_the_graph(tmp_path):
    from apo_ros.policies import build_policy, policy_id, save_policy
    from apo_ros.policies.testing import default_statistics
    from apo_ros.recording.reader import read_episode
    from apo_ros.runtime.session import run_session

    policy = build_policy("small", default_statistics(0.03), instructions=["put the lemon on the plate"],
                          device="cpu", channels=(8, 8, 8), hidden=16)
    save_policy(policy, str(tmp_path / "ckpt"))
    summary = run_session("lemon_on_plate", str(tmp_path / "ckpt"), "none", 1, str(tmp_path / "bags"),
                          max_steps=3, device="cpu")
    meta = read_episode(summary.episodes[0].path, load_images=False).metadata
    assert meta["policy_id"] == policy_id(str(tmp_path / "ckpt"))
    assert meta["stats_id"] == default_statistics(0.03).statistics_id()


def test_writer_rejects_stamps_before_the_episode(tmp_path):
    from rosbags.rosbag2 import Reader

    from apo_ros.recording.reader import read_custom_data
    from apo_ros.recording.writer import EpisodeWriter, StampOutsideEpisode

    t0 = 1_800_000_000 * S
    types = M.rosbags_types()
    with EpisodeWriter(str(tmp_path / "ep"), metadata={"task": "t"}) as w:
        w.write_event(t0, "start")
        pose = M.make_pose_stamped(types, t0 + 10 * MS, [0.4, 0, 0.3, 0, 0, 0, 1])
        w.write_message("ee_pose", pose, t0 + 10 * MS)
        w.write_message("ee_pose", pose, t0 - 500 * MS)  # slightly older sensor data: kept
        for bad in (0, t0 - 5 * S):  # a zero stamp once made the bag start in 1970
            with pytest.raises(StampOutsideEpisode, match="ee_pose: stamp .* before the episode"):
                w.write_message("ee_pose", pose, bad)
        with pytest.raises(StampOutsideEpisode):
            w.write_serialized("ee_pose", "geometry_msgs/msg/PoseStamped", -1, b"\0\1\0\0")
        w.close("success")
    with Reader(tmp_path / "ep") as reader:
        assert reader.start_time >= t0 - S and reader.duration < 2 * S
        custom = read_custom_data(reader)
    assert json.loads(custom["rejected_stamps"]) == {"ee_pose": 3}


def test_message_helpers_build_real_rclpy_messages():
    """The rclpy flavour of the helpers, with rclpy's own message classes (they check field
    types), through rclpy's serializer and back through the rosbags typestore (same CDR)."""
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import Image, JointState

    T = M.rclpy_types()
    stamp = 1_700_000_000 * S + 123
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    msg = M.make_image(T, stamp, img, frame_id="front")
    assert isinstance(msg, Image) and msg.encoding == "rgb8"
    np.testing.assert_array_equal(M.image_to_numpy(msg), img)
    cdr = rclpy_serialization.serialize_message(msg)
    assert cdr_header_stamp_ns(cdr) == stamp
    back = M.rosbags_types().typestore.deserialize_cdr(cdr, "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(M.image_to_numpy(back), img)

    action = np.array([0.01, -0.02, 0.0, 0.1, 0.0, -0.1, 0.5])
    act = M.make_action(T, stamp, action, "human")
    assert isinstance(act, JointState)
    got, source, obs_stamp = M.joint_state_to_action(rclpy_serialization.deserialize_message(
        rclpy_serialization.serialize_message(act), JointState))
    np.testing.assert_allclose(got, action)
    assert (source, obs_stamp) == ("human", stamp)
    pose = M.make_pose_stamped(T, stamp, [0.4, 0.1, 0.3, 0, 0, 0, 1])
    np.testing.assert_allclose(M.pose_stamped_to_array(pose), [0.4, 0.1, 0.3, 0, 0, 0, 1])
    twist = M.make_twist_stamped(T, stamp, [0.1, 0, 0], [0, 0, 0.2])
    np.testing.assert_allclose(np.concatenate(M.twist_stamped_to_arrays(twist)), [0.1, 0, 0, 0, 0, 0.2])
    assert M.make_gripper_state(T, stamp, 0.25).position[0] == 0.25
    with pytest.raises(ValueError):
        M.image_to_numpy(Image(height=64, width=64, encoding="rgb8", step=192, data=bytes(100)))
    with pytest.raises(ValueError):
        M.joint_state_to_action(JointState(name=["a"], position=[0.0]))


def test_a_node_reads_its_config_file_and_logs_bad_configuration(tmp_path):
    """`ros2 run apo_ros policy_node` (no parameter file) runs with config/policy_node.yaml from
    the install's share directory; a bad configuration is one line through the node's logger
    and exit 1, no traceback."""
    pytest.importorskip("rclpy")
    from apo_ros.nodes.local_launch import DomainClaim, graph_env

    share = tmp_path / "install" / "share" / "apo_ros" / "config"
    share.mkdir(parents=True)
    (share / "policy_node.yaml").write_text(
        "policy_node:\n  ros__parameters:\n    checkpoint: /nonexistent/from_config_file\n")
    domain = DomainClaim()
    try:
        env = graph_env(domain.domain_id)
        env["AMENT_PREFIX_PATH"] = f"{tmp_path / 'install'}{os.pathsep}{env.get('AMENT_PREFIX_PATH', '')}"
        proc = subprocess.run([sys.executable, "-m", "apo_ros.nodes.policy_node"], env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        domain.release()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "[FATAL]" in out and "[policy_node]: cannot start:" in out
    assert "/nonexistent/from_config_file" in out
    assert "Traceback" not in out


def test_assembler_adds_object_poses_for_a_state_policy():
    from apo_ros.runtime.ros_io import AssemblerConfig, ObservationAssembler

    types = M.rosbags_types()
    asm = ObservationAssembler(AssemblerConfig(cameras=(), object_poses=True))
    stamp = 5 * S
    asm.on_joint_state(M.make_joint_state(types, stamp, ["a"], [0.1]))
    asm.on_ee_pose(M.make_pose_stamped(types, stamp, [0.4, 0, 0.3, 0, 0, 0, 1]))
    asm.on_gripper(M.make_gripper_state(types, stamp, 1.0))
    assert asm.observation() is None and asm.missing() == ["object_poses"]
    poses = np.array([[0.5, 0.1, 0.02, 0, 0, 0, 1], [0.6, -0.1, 0.0, 0, 0, 0, 1]])
    asm.on_object_poses(M.make_pose_array(types, stamp, poses))
    obs = asm.observation()
    assert obs is not None and obs.images == {}
    np.testing.assert_allclose(obs.object_poses, poses, atol=1e-6)
