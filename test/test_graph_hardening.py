"""The graph a robot team can trust, on real rclpy processes at the default 10 Hz: sim_arm_node and
recorder_node from the wiring table, driven by a probe that plays the arbiter (twists on each
observation) and the drivers (images, Joy). The sim arm's twist queue drains after a stall;
twists are speed-limited and taken in their frame; the recorder writes rgb8 (converted) and
drops the rest per kind; NaN Joy axes and a second kind of problem are reported; parameters have
descriptors and are applied or refused with a reason; /diagnostics from every node; Ctrl-C exits
0 after bad messages and while starting. Count-based assertions with margins, no timing ones.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from sensor_msgs.msg import Image, Joy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from apo_ros.nodes.common import LATCHED_QOS, RECORD_QOS  # noqa: E402
from apo_ros.nodes.local_launch import LocalGraph  # noqa: E402
from apo_ros.nodes.probe import GraphProbe  # noqa: E402
from apo_ros.nodes.wiring import SIM, TRAIN, resolve  # noqa: E402
from apo_ros.recording import messages as M  # noqa: E402

pytestmark = [pytest.mark.xdist_group("ros_graph_hardening"), pytest.mark.slow]

WAIT = 60.0
T = M.rclpy_types()
NODES = ("sim_arm_node", "recorder_node")
WATCHED = {"ee_pose": (PoseStamped, RECORD_QOS), "sim/applied": (TwistStamped, RECORD_QOS),
           "instruction": (String, LATCHED_QOS), "/diagnostics": (DiagnosticArray, RECORD_QOS)}


class Stack:
    def __init__(self, graph: LocalGraph, probe: GraphProbe, tmp: Path):
        self.graph, self.probe, self.tmp = graph, probe, tmp

    def logs(self) -> str:
        return self.graph.logs_tail()

    def call(self, service: str) -> str:
        ok, message = self.probe.call(service, timeout=WAIT)
        assert ok, f"{service}: {message}\n{self.logs()}"
        return message

    def next_pose(self, after_ns: int, timeout: float = WAIT):
        """The first ee_pose received after `after_ns` (receive time)."""
        return self.probe.wait_for("ee_pose", since_ns=after_ns + 1, timeout=timeout)

    def applied(self, stamp_ns: int) -> list[TwistStamped]:
        return [r.msg for r in self.probe.messages("sim/applied")
                if M.stamp_to_ns(r.msg.header) == stamp_ns]

    def wait_ticks(self, n: int) -> None:
        t = time.time_ns()
        for _ in range(n):
            t = self.next_pose(t).rx_ns


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    nodes = [n for n in resolve(SIM, {"checkpoint": "unused", "bags_dir": str(tmp / "bags")},
                                extra_parameters={"recorder_node": {"end_on_task_success": False}})
             if n.name in NODES]
    nodes += resolve(TRAIN, {"init_checkpoint": str(tmp / "unused"), "bags_dir": str(tmp / "bags")})
    with LocalGraph(nodes, str(tmp / "run")) as graph:
        graph.start()
        probe = GraphProbe(graph.domain_id, watched=WATCHED)
        try:
            s = Stack(graph, probe, tmp)
            try:
                probe.wait_for("ee_pose", timeout=180)
                probe.call("episode/abort", timeout=180)  # the recorder's services are up
            except TimeoutError:
                pytest.fail(f"the graph did not start\n{s.logs()}")
            yield s
        finally:
            probe.close()


def twist(stamp_ns: int, linear, angular=(0.0, 0.0, 0.0), frame_id: str = "base_link") -> TwistStamped:
    return M.make_twist_stamped(T, stamp_ns, linear, angular, frame_id=frame_id)


def image(stamp_ns: int, encoding: str, h: int, w: int, step: int, data: bytes) -> Image:
    return Image(header=M.make_header(T, stamp_ns, "front_camera_optical_frame"), height=h,
                 width=w, encoding=encoding, is_bigendian=0, step=step, data=data)


# ---- the tests, in the order they run ---------------------------------------------------------

def test_the_twist_queue_drains_after_a_stall(stack):
    """The probe answers each observation with a twist, as the arbiter does; then it stalls for
    three observations and sends what it owed at once. Afterwards each twist must again be
    applied before the next observation (it used to wait behind the burst for good)."""
    probe = stack.probe
    sent: list[tuple[int, int]] = []  # (twist stamp, receive time of the ee_pose it answered)
    seq = 0

    def answer(pose_rx: int) -> None:
        nonlocal seq
        seq += 1
        stamp = time.time_ns() + seq  # unique: matches the twist to its sim/applied
        probe.publish("arm/delta_twist_cmds", twist(stamp, [0.001, 0.0, 0.0]))
        sent.append((stamp, pose_rx))

    t = time.time_ns()
    for _ in range(8):  # steady state
        t = stack.next_pose(t).rx_ns
        answer(t)
    for _ in range(3):  # the stall: three observations unanswered
        t = stack.next_pose(t).rx_ns
    burst = len(sent)
    for _ in range(4):
        answer(t)
    after = len(sent)
    for _ in range(20):
        t = stack.next_pose(t).rx_ns
        answer(t)
    stack.wait_ticks(3)

    def lag(stamp: int, pose_rx: int) -> int | None:
        """Observations the probe received between the one a twist answered and the twist's
        application (0: applied at the next tick, before the next observation)."""
        applied = [r.rx_ns for r in probe.messages("sim/applied") if M.stamp_to_ns(r.msg.header) == stamp]
        if not applied:
            return None
        return sum(pose_rx < r.rx_ns < applied[0] for r in probe.messages("ee_pose"))

    lags = [lag(s, rx) for s, rx in sent[after:]]
    assert sum(x is not None for x in lags) >= 15, (lags, stack.logs())
    caught_up = sum(x is not None and x <= 1 for x in lags)
    assert caught_up >= 0.75 * len(lags), f"lags after the stall (observations): {lags}"
    assert sum(lag(s, rx) is None for s, rx in sent[burst:after - 1]) >= 1  # late ones superseded
    assert "superseded twists" in stack.graph.log("sim_arm_node")


def test_twists_are_speed_limited_and_taken_in_their_frame(stack):
    probe = stack.probe
    pose = stack.next_pose(time.time_ns())
    fast = time.time_ns()
    probe.publish("arm/delta_twist_cmds", twist(fast, [1e6, 0.0, 0.0], [0.0, 0.0, 1e6]))
    stack.wait_ticks(3)
    applied = stack.applied(fast)
    assert len(applied) == 1, stack.logs()
    linear, angular = M.twist_stamped_to_arrays(applied[0])
    assert np.isclose(np.linalg.norm(linear), 0.25) and np.isclose(np.linalg.norm(angular), 1.5)
    after = stack.next_pose(time.time_ns())
    moved = np.linalg.norm(M.pose_stamped_to_array(after.msg)[:3] - M.pose_stamped_to_array(pose.msg)[:3])
    assert moved < 0.1, f"the tool moved {moved} m on one limited twist"  # 1e6 m/s once moved it 16 cm
    assert "scaled down" in stack.graph.log("sim_arm_node")

    # a twist in the tool frame is rotated into the base frame by the tool's orientation
    pose = stack.next_pose(time.time_ns())
    tool = pose.rx_ns + 17
    probe.publish("arm/delta_twist_cmds", twist(tool, [0.02, 0.0, 0.0], frame_id="tool0"))
    stack.wait_ticks(3)
    applied = stack.applied(tool)
    assert len(applied) == 1, stack.logs()
    from apo_ros.sim.twists import quat_to_matrix

    expected = quat_to_matrix(M.pose_stamped_to_array(pose.msg)[3:7]) @ [0.02, 0.0, 0.0]
    np.testing.assert_allclose(M.twist_stamped_to_arrays(applied[0])[0], expected, atol=2e-3)
    assert not np.allclose(expected, [0.02, 0.0, 0.0], atol=2e-3)  # the tool is not aligned with the base

    # a frame the arm does not know is refused, not applied as if it were the base
    odd = time.time_ns()
    probe.publish("arm/delta_twist_cmds", twist(odd, [0.02, 0.0, 0.0], frame_id="camera_link"))
    stack.wait_ticks(3)
    assert stack.applied(odd) == []
    assert "'camera_link'" in stack.graph.log("sim_arm_node")


def test_the_recorder_writes_rgb8_and_drops_the_rest_per_kind(stack):
    from rosbags.highlevel import AnyReader

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    alpha = np.full((8, 8, 1), 7, np.uint8)
    frames = {  # stamp offset -> (message, what the bag must hold: rgb8 pixels or nothing)
        1: (image(0, "rgba8", 8, 8, 32, np.concatenate([rgb, alpha], 2).tobytes()), rgb),
        2: (image(0, "bgra8", 8, 8, 32, np.concatenate([rgb[:, :, ::-1], alpha], 2).tobytes()), rgb),
        3: (image(0, "16UC1", 8, 8, 16, bytes(128)), None),
        4: (image(0, "rgb8", 0, 0, 0, b""), None),
        5: (image(0, "rgb8", 8, 8, 10, bytes(80)), None),
        6: (image(0, "rgb8", 2000, 2000, 6000, bytes(6000 * 2000)), None),
    }
    path = stack.call("episode/start")
    stack.wait_ticks(2)
    base = time.time_ns()
    for k, (msg, _) in frames.items():
        msg.header = M.make_header(T, base + k, "front_camera_optical_frame")
        stack.probe.publish("camera/front/image_raw", msg)
    stack.wait_ticks(3)
    stack.call("episode/success")
    by_stamp = {}
    with AnyReader([Path(path)]) as reader:
        conns = [c for c in reader.connections if c.topic == "camera/front/image_raw"]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            by_stamp[M.stamp_to_ns(msg.header) - base] = msg
    assert {m.encoding for m in by_stamp.values()} == {"rgb8"}  # the sim's frames and ours
    for k, (_msg, expected) in frames.items():
        if expected is None:
            assert k not in by_stamp, k
        else:
            assert k in by_stamp, (k, sorted(by_stamp)[:5], stack.logs())
            np.testing.assert_array_equal(M.image_to_numpy(by_stamp[k]), expected)
    log = stack.graph.log("recorder_node")
    for text in ("unsupported image encoding '16UC1'", "empty image", "row step 10", "larger than the limit"):
        assert text in log, f"{text!r} not logged\n{log[-3000:]}"
    assert "rgba8 images are recorded as rgb8" in log and "bgra8 images are recorded as rgb8" in log


def test_nan_joy_axes_and_a_second_kind_of_problem_are_both_reported(stack):
    header = M.make_header(T, time.time_ns())
    stack.probe.publish("spacenav/joy", Joy(header=header, axes=[0.5, 0.5], buttons=[0, 0]))
    stack.probe.publish("spacenav/joy", Joy(header=header, axes=[math.nan] + [0.0] * 5, buttons=[0, 0]))
    stack.wait_ticks(3)
    log = stack.graph.log("recorder_node")
    assert "spacenav/joy: dropped a malformed message" in log and "has 2 axes" in log, log[-3000:]
    assert "not all finite" in log, log[-3000:]  # not throttled away behind the first, not read as idle


def test_parameters_are_described_applied_or_refused_with_a_reason(stack):
    probe = stack.probe
    refused = probe.set_parameters("/sim_arm_node", {"control_hz": -3.0})[0]
    assert not refused[0] and refused[1], refused  # it used to say success and change nothing
    speed = probe.set_parameters("/sim_arm_node", {"max_linear_speed": -1.0})[0]
    assert not speed[0] and "range" in speed[1], speed
    assert probe.set_parameters("/sim_arm_node", {"frame_id": ""})[0][0] is False
    assert probe.set_parameters("/recorder_node", {"stamp_tolerance_s": -1.0})[0][0] is False
    assert probe.set_parameters("/recorder_node", {"image_format": "png"})[0][0] is False
    # a change that is accepted takes effect
    assert probe.set_parameters("/sim_arm_node", {"frame_id": "world"}) == [(True, "")]
    t = time.time_ns()
    stack.wait_ticks(2)
    assert stack.next_pose(t).msg.header.frame_id in ("world", "base_link")
    assert stack.probe.wait_for("ee_pose", lambda m: m.header.frame_id == "world", since_ns=t,
                                timeout=WAIT)
    assert probe.set_parameters("/sim_arm_node", {"frame_id": "base_link"}) == [(True, "")]
    assert probe.set_parameters("/recorder_node", {"task": "renamed_task"}) == [(True, "")]
    path = stack.call("episode/start")
    stack.call("episode/abort")
    assert "renamed_task" in Path(path).name
    # every parameter says what it is; numbers have ranges
    for node, names in (("/sim_arm_node", ["task", "control_hz", "seed", "frame_id",
                                           "max_linear_speed"]),
                        ("/recorder_node", ["bags_dir", "stamp_tolerance_s", "sensor_qos",
                                            "max_image_pixels"])):
        for d in probe.describe_parameters(node, names):
            assert d.description, (node, d.name)
    hz = probe.describe_parameters("/sim_arm_node", ["control_hz"])[0]
    assert hz.read_only and hz.floating_point_range[0].from_value > 0


def test_every_node_publishes_diagnostics(stack):
    t = time.time_ns()

    def status(name: str):
        r = stack.probe.wait_for("/diagnostics", lambda m: any(s.name.endswith(name) for s in m.status),
                                 since_ns=t, timeout=WAIT)
        return next(s for s in r.msg.status if s.name.endswith(name))

    sim = {kv.key: kv.value for kv in status("/sim_arm_node").values}
    assert int(sim["twists applied"]) > 10 and int(sim["twists limited"]) >= 1
    assert float(sim["rate arm/delta_twist_cmds (Hz)"]) >= 0.0
    recorder = {kv.key: kv.value for kv in status("/recorder_node").values}
    assert int(recorder["dropped camera/front/image_raw / encoding"]) >= 1
    assert float(recorder["rate ee_pose (Hz)"]) > 0
    trainer = status("/trainer_node")
    assert trainer.message == "idle"
    assert {kv.key for kv in trainer.values} >= {"rounds finished", "checkpoint"}


def test_intervention_events_carry_the_first_human_steps_stamp(stack):
    """The probe plays the arbiter: an intervention announced after its first human step, and one
    announced before it. Both events must carry that step's stamp (they used to carry the
    recorder's arrival time, 11-19 ms later)."""
    from apo_ros.nodes.common import EVENTS_QOS
    from apo_ros.recording.reader import read_episode

    def executed(source: str) -> int:
        stamp = M.stamp_to_ns(stack.next_pose(time.time_ns()).msg.header)
        stack.probe.publish("action/executed", M.make_action(T, stamp, np.zeros(7), source))
        return stamp

    def event(kind: str) -> None:
        stack.probe.publish("episode/events", String(data=kind), EVENTS_QOS)

    path = stack.call("episode/start")
    executed("policy")
    first = executed("human")  # the step first ...
    time.sleep(0.05)
    event("intervention_start")  # ... then its announcement
    executed("human")
    event("intervention_end")  # the announcement first ...
    time.sleep(0.05)
    back = executed("policy")  # ... then the step
    stack.wait_ticks(2)
    stack.call("episode/failure")
    events = {kind: t for t, kind in read_episode(path, load_images=False).events}
    assert events["intervention_start"] == first, (events, first)
    assert events["intervention_end"] == back, (events, back)


def test_ctrl_c_after_bad_messages_and_while_starting_exits_0(stack):
    for msg in (twist(time.time_ns(), [math.nan, 0, 0]), twist(time.time_ns(), [1e9, 0, 0]),
                twist(time.time_ns(), [0.01, 0, 0], frame_id="nowhere")):
        stack.probe.publish("arm/delta_twist_cmds", msg)
    stack.wait_ticks(2)
    for name in stack.graph.procs:
        stack.graph.send(name, signal.SIGINT)
    codes = {name: stack.graph.wait(name, WAIT) for name in stack.graph.procs}
    assert codes == {name: 0 for name in codes}, f"{codes}\n{stack.logs()}"
    # Ctrl-C while the arm is still starting (rclpy up, MuJoCo loading) is a normal end too: it
    # once surfaced as "ImportError: initialization failed" and exit 1
    # A node is up once its /rosout publisher appears (rclpy makes it with the node). A new one is
    # told from the previous ones by its endpoint id: a process stopped while starting may stay in
    # the discovery cache for a lease time, so its name alone says nothing.
    def arm_rosout_ids() -> set:
        return {bytes(i.endpoint_gid) for i in stack.probe.node.get_publishers_info_by_topic("/rosout")
                if i.node_name == "sim_arm_node"}

    for _ in range(3):
        before = arm_rosout_ids()
        stack.graph.start("sim_arm_node")
        deadline = time.monotonic() + WAIT
        while not arm_rosout_ids() - before:
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.01)
        stack.graph.send("sim_arm_node", signal.SIGINT)
        code = stack.graph.wait("sim_arm_node", WAIT)
        assert code == 0, f"exit {code}\n{stack.logs()}"
    assert "Traceback" not in stack.logs()
