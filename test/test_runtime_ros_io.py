"""Message handling behind the nodes, with rosbags message classes (same fields as rclpy's)."""

import time

import numpy as np
import pytest

from apo_ros.recording import messages as M
from apo_ros.runtime.config import find_config, load_safety_filter, node_parameters
from apo_ros.runtime.ros_io import (
    AssemblerConfig,
    ObservationAssembler,
    action_to_twist,
    cdr_header_stamp_ns,
    twist_to_action,
)
from apo_ros.runtime.rounds import TrainingRounds

T = M.rosbags_types()
S = 1_000_000_000


def test_action_twist_round_trip_through_twist_stamped():
    action = np.array([0.01, -0.02, 0.005, 0.1, 0.0, -0.05, 0.3])
    lin, ang, g = action_to_twist(action, 10.0)
    np.testing.assert_allclose(lin, [0.1, -0.2, 0.05])
    msg = M.make_twist_stamped(T, 5 * S, lin, ang)
    cdr = T.typestore.serialize_cdr(msg, msg.__msgtype__)
    back = T.typestore.deserialize_cdr(cdr, msg.__msgtype__)
    lin2, ang2 = M.twist_stamped_to_arrays(back)
    np.testing.assert_allclose(twist_to_action(lin2, ang2, g, 10.0), action)
    assert cdr_header_stamp_ns(cdr) == 5 * S
    with pytest.raises(ValueError):
        action_to_twist(np.zeros(6), 10.0)


def test_cdr_stamp_big_endian_and_garbage():
    be = bytes([0, 0, 0, 0]) + (3).to_bytes(4, "big") + (7).to_bytes(4, "big")
    assert cdr_header_stamp_ns(be) == 3 * S + 7
    with pytest.raises(ValueError, match="CDR"):
        cdr_header_stamp_ns(b"\x07\x07")


def _feed(asm, stamp, cams=("front", "wrist"), skip=()):
    img = np.full((4, 6, 3), stamp % 250, np.uint8)
    for c in cams:
        if c not in skip:
            asm.on_image(c, M.make_image(T, stamp, img))
    if "joints" not in skip:
        asm.on_joint_state(M.make_joint_state(T, stamp, ["a", "b"], [0.1, 0.2]))
    asm.on_ee_pose(M.make_pose_stamped(T, stamp, [0.4, 0.1, 0.3, 0, 0, 0, 1]))
    asm.on_gripper(M.make_gripper_state(T, stamp, 0.25))


def test_assembler_builds_observation_once_complete():
    asm = ObservationAssembler(AssemblerConfig(max_skew_s=0.05, instruction="default"))
    _feed(asm, 10 * S, skip=("wrist", "joints"))
    assert asm.observation() is None and set(asm.missing()) == {"camera/wrist", "joint_states"}
    _feed(asm, 10 * S)
    asm.on_instruction(M.make_string(T, "lift the cube"))
    obs = asm.observation()
    assert obs is not None and obs.stamp_ns == 10 * S and obs.instruction == "lift the cube"
    assert obs.images["front"].shape == (4, 6, 3) and obs.joint_names == ("a", "b")
    assert obs.gripper == 0.25 and obs.ee_pose[0] == pytest.approx(0.4)
    assert asm.observation() is None  # nothing new
    assert asm.observation(fresh_only=False) is not None
    # one part far behind the others: not an observation
    asm.on_ee_pose(M.make_pose_stamped(T, 11 * S, [0.4, 0.1, 0.3, 0, 0, 0, 1]))
    assert asm.observation() is None


def test_config_files_found_and_node_parameters(tmp_path):
    path = find_config("safety.yaml")
    assert path.endswith("config/safety.yaml")
    assert load_safety_filter("").config.max_delta[0] > 0
    with pytest.raises(FileNotFoundError, match="looked in"):
        find_config("nope.yaml")
    f = tmp_path / "p.yaml"
    f.write_text("my_node:\n  ros__parameters:\n    a: 1.0\n")
    assert node_parameters(str(f), "my_node") == {"a": 1.0}
    with pytest.raises(ValueError, match="other_node"):
        node_parameters(str(f), "other_node")


def test_training_rounds_chain_checkpoints(tmp_path):
    calls, done = [], []

    def train(init, out, index):
        calls.append((init, index))
        time.sleep(0.05)
        if index == 2:
            raise RuntimeError("out of memory")
        return out

    rounds = TrainingRounds(train, "ckpt0", str(tmp_path), on_done=done.append)
    ok, msg = rounds.request()
    assert ok and "round 1" in msg
    again, msg = rounds.request()
    assert not again and "still training" in msg
    rounds.wait(5)
    assert done[0].checkpoint.endswith("round_001")
    rounds.request()
    rounds.wait(5)
    assert done[1].error.startswith("RuntimeError") and rounds.current == done[0].checkpoint
    rounds.request()
    rounds.wait(5)
    assert [c[0] for c in calls] == ["ckpt0", done[0].checkpoint, done[0].checkpoint]
