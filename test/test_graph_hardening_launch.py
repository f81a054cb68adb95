"""The graph as a team deploys it, on real rclpy processes: the one-command launcher under a
namespace (with and without the leading slash) applies its overrides; a recorder with no drivers
says what it waits for, then records a best-effort (sensor-data QoS) camera; under use_sim_time
the arm publishes /clock and the nodes stamp and record on it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from apo_ros.nodes.common import LATCHED_QOS, RECORD_QOS, SENSOR_QOS  # noqa: E402
from apo_ros.nodes.local_launch import LocalGraph  # noqa: E402
from apo_ros.nodes.probe import GraphProbe  # noqa: E402
from apo_ros.nodes.wiring import SIM, resolve  # noqa: E402
from apo_ros.recording import messages as M  # noqa: E402

pytestmark = [pytest.mark.xdist_group("ros_graph_hardening"), pytest.mark.slow]

WAIT = 60.0
T = M.rclpy_types()


def only(nodes, *names):
    return [n for n in nodes if n.name in names]


def logs(graph: LocalGraph) -> str:
    return graph.logs_tail()


@pytest.mark.parametrize("namespace", ["arm1", "/arm1"])
def test_the_launcher_runs_under_a_namespace_with_its_overrides(tmp_path, namespace):
    from apo_ros.sim.tasks import get_task

    nodes = only(resolve(SIM, {"checkpoint": "unused", "namespace": namespace, "task": "hang_cup"},
                         extra_parameters={"sim_arm_node": {"frame_id": "arm1_base"}}), "sim_arm_node")
    watched = {"/arm1/instruction": (String, LATCHED_QOS), "/arm1/ee_pose": (PoseStamped, RECORD_QOS)}
    with LocalGraph(nodes, str(tmp_path / "run")) as graph:
        graph.start()
        probe = GraphProbe(graph.domain_id, watched=watched)
        try:
            try:
                pose = probe.wait_for("/arm1/ee_pose", timeout=180)
                instruction = probe.wait_for("/arm1/instruction", timeout=WAIT)
            except TimeoutError:
                pytest.fail(logs(graph))
            assert pose.msg.header.frame_id == "arm1_base"  # the override was applied
            assert instruction.msg.data == get_task("hang_cup").instruction  # the launch argument too
            assert graph.dead() == {}, logs(graph)
        finally:
            probe.close()
    assert "Traceback" not in logs(graph)


def test_a_recorder_says_what_it_waits_for_then_records_a_best_effort_camera(tmp_path):
    from apo_ros.recording.reader import read_episode

    nodes = only(resolve(SIM, {"checkpoint": "unused", "bags_dir": str(tmp_path / "bags")}),
                 "recorder_node")
    with LocalGraph(nodes, str(tmp_path / "run")) as graph:
        graph.start()
        probe = GraphProbe(graph.domain_id, watched={})
        try:
            deadline = time.monotonic() + 3 * WAIT
            while "waiting for: " not in graph.log("recorder_node"):
                assert time.monotonic() < deadline, logs(graph)
                time.sleep(0.2)
            line = next(ln for ln in graph.log("recorder_node").splitlines() if "waiting for: " in ln)
            for topic in ("camera/front/image_raw", "camera/wrist/image_raw", "joint_states", "ee_pose",
                          "gripper/state"):
                assert topic in line, line
            assert "(no publisher)" in line
            # the drivers come up with the sensor-data profile (best effort), as most do
            path = probe.call("episode/start", timeout=WAIT)[1]
            rng = np.random.default_rng(0)
            sent = 0
            for k in range(40):
                stamp = time.time_ns()
                img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                for cam in ("front", "wrist"):
                    probe.publish(f"camera/{cam}/image_raw", M.make_image(T, stamp, img, frame_id=cam),
                                  SENSOR_QOS)
                probe.publish("joint_states", M.make_joint_state(T, stamp, ["j1"], [0.1 * k]), SENSOR_QOS)
                probe.publish("ee_pose", M.make_pose_stamped(T, stamp, [0.4, 0, 0.3, 0, 0, 0, 1]),
                              SENSOR_QOS)
                probe.publish("gripper/state", M.make_gripper_state(T, stamp, 1.0), SENSOR_QOS)
                sent += 1
                time.sleep(0.1)
            assert probe.call("episode/abort", timeout=WAIT)[0]
        finally:
            probe.close()
    assert "subscribed best-effort" in graph.log("recorder_node")
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(path)]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    # the first frames may go before the subscription switches; most are in the bag
    assert counts.get("camera/front/image_raw", 0) >= sent // 2, counts
    assert counts.get("ee_pose", 0) >= sent // 2, counts
    assert read_episode(path, load_images=False).metadata["outcome"] == "abort"


def test_under_sim_time_the_arm_is_the_clock(tmp_path):
    from apo_ros.recording.reader import read_episode

    sim_time = {"use_sim_time": True}
    nodes = only(resolve(SIM, {"checkpoint": "unused", "bags_dir": str(tmp_path / "bags")},
                         extra_parameters={"sim_arm_node": sim_time, "recorder_node": sim_time}),
                 "sim_arm_node", "recorder_node")
    watched = {"/clock": (Clock, RECORD_QOS), "ee_pose": (PoseStamped, RECORD_QOS)}
    with LocalGraph(nodes, str(tmp_path / "run")) as graph:
        graph.start()
        probe = GraphProbe(graph.domain_id, watched=watched)
        try:
            try:
                probe.wait_for("ee_pose", timeout=180)
                deadline = time.monotonic() + WAIT
                while not (started := probe.call("episode/start", timeout=WAIT))[0]:
                    # refused until the recorder's clock has started (its first /clock)
                    assert "no clock yet" in started[1] and time.monotonic() < deadline, started
                    time.sleep(0.2)
                path = started[1]
            except TimeoutError:
                pytest.fail(logs(graph))
            t = time.time_ns()
            deadline = time.monotonic() + WAIT
            while len(probe.messages("ee_pose", t)) < 20:
                assert time.monotonic() < deadline, logs(graph)
                time.sleep(0.05)
            assert probe.call("episode/abort", timeout=WAIT)[0]
        finally:
            probe.close()
    clock = [r.msg.clock.sec * 1_000_000_000 + r.msg.clock.nanosec for r in probe.messages("/clock")]
    stamps = [M.stamp_to_ns(r.msg.header) for r in probe.messages("ee_pose")]
    # simulated time advances by exactly one control period per step, whatever the machine does
    assert set(np.diff(stamps[-20:])) == {100_000_000}, np.diff(stamps[-20:])
    assert set(stamps[-20:]) <= set(clock)
    # the recorder ran on the arm's clock: its episode started at a tick of simulated time
    episode = read_episode(path, load_images=False)
    start = next(t for t, kind in episode.events if kind == "start")
    assert (start - clock[0]) % 100_000_000 == 0, (start, clock[0])
    assert "Traceback" not in logs(graph)
