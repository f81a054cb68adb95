"""The ROS 2 graph for real: sim_arm_node, policy_node, teleop_arbiter_node (Joy), recorder_node and
trainer_node as separate processes over real rclpy + Fast DDS, started from the wiring table the
launch files read, driven by a probe node. One graph for the module (the tests run in order, on
one pytest-xdist worker), in its own ROS domain; every process is stopped even when a test fails.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import Image, JointState, Joy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from apo_ros.nodes.common import EVENTS_QOS, LATCHED_QOS  # noqa: E402
from apo_ros.nodes.local_launch import LocalGraph  # noqa: E402
from apo_ros.nodes.probe import GraphProbe  # noqa: E402
from apo_ros.nodes.wiring import SIM, TRAIN, resolve  # noqa: E402
from apo_ros.recording import messages as M  # noqa: E402

pytestmark = [pytest.mark.xdist_group("ros_graph"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# The graph runs at 2.5 Hz here (10 Hz by default): the test machine is shared and often loaded
# far beyond its two cores, and the timing model's deadlines are real time. Set as a user would
# (parameters over the launch table), so the wiring is the launch files'.
HZ = 2.5
RATE = {"sim_arm_node": {"control_hz": HZ}, "policy_node": {"rate_hz": HZ},
        "teleop_arbiter_node": {"control_hz": HZ, "decision_deadline_s": 0.3, "device_timeout_s": 1.0},
        # episodes end only through the services and signals the tests send: a policy that happens
        # to finish the task would otherwise close the episode a test is about to interrupt
        "recorder_node": {"end_on_task_success": False}}
WAIT = 60.0  # seconds: generous, the machine may be crowded
T = M.rclpy_types()


def make_checkpoint(path: Path) -> str:
    from apo_ros.policies import build_policy, save_policy
    from apo_ros.policies.testing import default_statistics

    policy = build_policy("small", default_statistics(0.03), instructions=["put the lemon on the plate"],
                          device="cpu", channels=(8, 16, 16), hidden=64)
    save_policy(policy, str(path))
    return str(path)


class Stack:
    def __init__(self, graph: LocalGraph, probe: GraphProbe, tmp: Path, checkpoint: str):
        self.graph, self.probe, self.tmp, self.checkpoint = graph, probe, tmp, checkpoint
        self.bags = tmp / "bags"

    def logs(self) -> str:
        return self.graph.logs_tail()

    def assert_alive(self) -> None:
        assert self.graph.dead() == {}, f"nodes died: {self.graph.dead()}\n{self.logs()}"

    def call(self, service: str) -> str:
        ok, message = self.probe.call(service, timeout=WAIT)
        assert ok, f"{service}: {message}\n{self.logs()}"
        return message

    def episode(self, body, outcome: str = "success") -> tuple[str, int, int]:
        """start, body(), outcome -> (bag path, start ns, end ns)."""
        t0 = time.time_ns()
        path = self.call("episode/start")
        body()
        self.call(f"episode/{outcome}")
        return path, t0, time.time_ns()

    def executed_after(self, since_ns: int, n: int = 3, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.probe.messages("action/executed", since_ns)) < n:
            assert time.monotonic() < deadline, f"no executed actions after {since_ns}\n{self.logs()}"
            time.sleep(0.05)


def claim_the_graph_for_this_worker(tmp_path_factory) -> None:
    """The tests share one graph and run in order: fail loudly if pytest-xdist split them over two
    workers (each would start a graph of its own and run only some of the tests, out of order)."""
    run, worker = os.environ.get("PYTEST_XDIST_TESTRUNUID"), os.environ.get("PYTEST_XDIST_WORKER")
    if run is None or worker is None:
        return
    claim = tmp_path_factory.getbasetemp().parent / f"test_graph-{run}.worker"
    try:
        with open(claim, "x") as f:
            f.write(worker)
    except FileExistsError:
        owner = claim.read_text()
        if owner != worker:
            pytest.fail(f"the graph tests run on {owner} and {worker}: the xdist_group mark was "
                        "ignored (run pytest with --dist loadgroup; see test/conftest.py)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    claim_the_graph_for_this_worker(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("graph")
    checkpoint = make_checkpoint(tmp / "ckpt")
    nodes = resolve(SIM, {"checkpoint": checkpoint, "bags_dir": str(tmp / "bags"),
                          "teleop_device": "joy"}, extra_parameters=RATE)
    nodes += resolve(TRAIN, {"init_checkpoint": checkpoint, "bags_dir": str(tmp / "bags"),
                             "demos_dir": str(tmp / "bags"), "out_dir": str(tmp / "rounds"),
                             "method": "bc"},
                     extra_parameters={"trainer_node": {"steps": 3, "device": "cpu"}})
    with LocalGraph(nodes, str(tmp / "run")) as graph:
        graph.start()
        probe = GraphProbe(graph.domain_id)
        try:
            s = Stack(graph, probe, tmp, checkpoint)
            try:  # the graph runs, and the probe has matched the streams the tests count
                for topic in ("action/executed", "ee_pose"):
                    probe.wait_for(topic, timeout=180)
            except TimeoutError:
                pytest.fail(f"the graph did not start\n{s.logs()}")
            yield s
        finally:
            probe.close()


def read_bag(path: str) -> dict:
    """Raw look at a bag: custom_data, start/end, and per topic [(bag time, message)]."""
    from rosbags.highlevel import AnyReader

    out: dict = {"topics": {}}
    with AnyReader([Path(path)]) as reader:
        out["start"], out["end"] = reader.start_time, reader.end_time
        for conn, t, raw in reader.messages():
            out["topics"].setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    from apo_ros.recording.reader import read_episode

    out["episode"] = read_episode(path, load_images=False)
    return out


def bags_info(path: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "apo_ros.cli", "bags", "info", "--json", path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["episodes"][0]


def joy(axes, buttons=(0, 0)) -> Joy:
    return Joy(header=M.make_header(T, time.time_ns()), axes=[float(a) for a in axes],
               buttons=[int(b) for b in buttons])


# ---- the tests, in the order they run ---------------------------------------------------------

def test_the_arm_moves_under_the_policy_with_its_provenance(stack):
    from apo_ros.policies import load_policy, policy_id

    t0 = time.time_ns()
    stack.executed_after(t0, n=5)
    deadline = time.monotonic() + WAIT  # the pose after the fifth action may still be on its way
    while len(received := stack.probe.messages("ee_pose", t0)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    poses = np.array([M.pose_stamped_to_array(r.msg)[:3] for r in received])
    assert len(poses) >= 5, stack.logs()
    # the arm moves the way the policy commanded: its displacement over the window points along
    # the sum of the translations executed in it (base frame, both)
    commanded = sum(M.joint_state_to_action(r.msg)[0][:3] for r in stack.probe.messages("action/executed", t0)
                    if received[0].rx_ns <= r.rx_ns < received[-1].rx_ns)
    moved = poses[-1] - poses[0]
    assert np.linalg.norm(moved) > 1e-3, poses
    assert float(np.dot(moved, commanded)) > 0.5 * np.linalg.norm(moved) * np.linalg.norm(commanded), (
        moved, commanded)
    sources = {r.msg.header.frame_id for r in stack.probe.messages("action/executed", t0)}
    assert sources == {"policy"}
    active = json.loads(stack.probe.wait_for("policy/active").msg.data)
    assert active["policy_id"] == policy_id(stack.checkpoint)
    assert active["stats_id"] == load_policy(stack.checkpoint, device="cpu").stats.statistics_id() != ""
    # the latched instruction is published once per episode, not at the control rate
    assert [r.msg.data for r in stack.probe.messages("instruction")] == ["put the lemon on the plate"]
    stack.assert_alive()


def test_joy_takeover_episode_is_one_bag_equal_to_what_the_arm_executed(stack):
    from apo_ros.policies import load_policy, policy_id

    def body():
        stack.executed_after(time.time_ns(), n=2)
        t = time.time_ns()
        deadline = time.monotonic() + WAIT
        # the operator pushes (spacenav publishes while the puck moves) for 3 of the arm's steps
        def human_steps() -> int:
            return sum(r.msg.header.frame_id == "human" for r in stack.probe.messages("action/executed", t))

        while human_steps() < 3:
            assert time.monotonic() < deadline, stack.logs()
            stack.probe.publish("spacenav/joy", joy([0.8, 0, 0, 0, 0, 0]))
            time.sleep(0.05)
        stack.probe.wait_for("teleop/mode", lambda m: m.data == "intervention", since_ns=t, timeout=WAIT)
        stack.probe.publish("spacenav/joy", joy([0, 0, 0, 0, 0, 0]))  # released: idle hand-back 1 s
        t = time.time_ns()
        stack.probe.wait_for("action/executed", lambda m: m.header.frame_id == "policy", since_ns=t,
                             timeout=WAIT)
        stack.executed_after(time.time_ns(), n=2)

    path, t0, t1 = stack.episode(body, "failure")
    time.sleep(3 / HZ)  # the last twist reaches the arm
    info = bags_info(path)
    assert info["interventions"] == 1 and info["human_steps"] >= 2 and info["outcome"] == "failure"
    assert info["steps"] >= 6 and 0 < info["duration_s"] < 3 * WAIT
    bag = read_bag(path)
    episode = bag["episode"]
    # provenance: the same content-hash ids the in-process session writes
    assert episode.metadata["policy_id"] == policy_id(stack.checkpoint)
    assert episode.metadata["stats_id"] == load_policy(stack.checkpoint, device="cpu").stats.statistics_id()
    # one executed action per control step, each linked to its own observation in the bag
    executed = [(M.stamp_to_ns(m.header), M.joint_state_to_action(m)[0], m.header.frame_id)
                for _, m in bag["topics"]["action/executed"]]
    stamps = [s for s, _, _ in executed]
    assert len(stamps) == len(set(stamps)), "an observation's action was executed twice"
    observed = {M.stamp_to_ns(m.header) for _, m in bag["topics"]["joint_states"]}
    assert {M.stamp_to_ns(m.header) for _, m in bag["topics"]["object_poses"]} == observed
    unobserved = [s for s in stamps if s not in observed]
    assert len(unobserved) <= 1, (  # only the step that straddles the start
        f"executed actions whose observation is not in the bag: {unobserved}; "
        f"bag observations {sorted(observed)[:3]}... ({len(observed)}), executed {stamps[:3]}...")
    # ... and the bag equals what the arm executed: every recorded action is a twist the arm
    # applied exactly once, and every motion the arm applied is recorded
    # (from before the start: the step that straddles it was sent before the episode began)
    since = t0 - 5_000_000_000
    twists = [(M.stamp_to_ns(r.msg.header), np.concatenate(M.twist_stamped_to_arrays(r.msg)))
              for r in stack.probe.messages("arm/delta_twist_cmds", since)]
    applied = [M.stamp_to_ns(r.msg.header) for r in stack.probe.messages("sim/applied", since)]
    assert len(applied) == len(set(applied)), "a twist was applied twice"
    used = set()
    for stamp, action, source in executed:
        match = [ts for ts, v in twists if stamp < ts <= stamp + 5_000_000_000
                 and np.allclose(v, action[:6] * HZ, rtol=1e-9, atol=1e-12) and ts not in used]
        assert len(match) >= 1, f"executed {source} action at {stamp} was never sent to the arm"
        used.add(match[0])
        assert applied.count(match[0]) == 1, f"executed {source} action at {stamp} was not applied"
    window = [ts for ts, v in twists if stamps[1] < ts < stamps[-1] and np.any(v != 0)]
    assert set(window) <= used, "the arm moved on a command the bag does not have"


def test_the_bag_holds_the_token_ids_the_policy_produced(stack):
    from apo_ros.policies import load_policy

    path, _t0, _t1 = stack.episode(lambda: stack.executed_after(time.time_ns(), n=4))
    policy = load_policy(stack.checkpoint, device="cpu")
    steps = [s for s in read_bag(path)["episode"].steps if s.proposed is not None]
    assert len(steps) >= 3 and all(s.tokens is not None for s in steps), stack.logs()
    assert {s.token_space for s in steps} == {policy.action_token_space()}
    import torch

    tokens = torch.as_tensor(np.stack([s.tokens for s in steps]))
    decoded, ok = policy.decode_tokens(tokens, torch.ones_like(tokens, dtype=torch.bool))
    assert ok.all() and np.allclose(decoded[:, 0], np.stack([s.proposed for s in steps]))  # argmax decode


def test_every_bad_message_leaves_every_node_alive(stack):
    bad = [
        ("spacenav/joy", joy([0.5, 0.5])),  # 2 axes
        ("camera/front/image_raw", Image(header=M.make_header(T, time.time_ns()), height=64, width=64,
                                         encoding="rgb8", step=192, data=bytes(100))),
        ("camera/wrist/image_raw", Image(header=M.make_header(T, time.time_ns()), height=2, width=2,
                                         encoding="16UC1", step=4, data=bytes(8))),
        ("gripper/state", JointState(header=M.make_header(T, time.time_ns()))),
        ("policy/command", M.make_joint_state(T, time.time_ns(), [f"j{i}" for i in range(7)], [0.0] * 7)),
        ("arm/delta_twist_cmds", M.make_twist_stamped(T, time.time_ns(), [math.nan, 0, 0], [0, 0, 0])),
        ("episode/events", String(data="party")),
    ]
    negative = PoseStamped()
    negative.header.stamp.sec = -5
    zero = M.make_pose_stamped(T, 0, [0.4, 0, 0.3, 0, 0, 0, 1])

    def body():
        time.sleep(0.5)
        for topic, msg in bad:
            qos = EVENTS_QOS if topic == "episode/events" else None
            stack.probe.publish(topic, msg, *([qos] if qos else []))
        stack.probe.publish("ee_pose", negative)
        stack.probe.publish("ee_pose", zero)  # once made the bag start in 1970
        stack.probe.publish("policy/active", String(data="{not json"), LATCHED_QOS)
        time.sleep(2.0)
        stack.assert_alive()
        stack.executed_after(time.time_ns())  # and still working

    path, _t0, _t1 = stack.episode(body)
    stack.assert_alive()
    logs = {n: stack.graph.log(n) for n in stack.graph.procs}
    for node, topic in [("teleop_arbiter_node", "spacenav/joy"), ("recorder_node", "spacenav/joy"),
                        ("policy_node", "camera/front/image_raw"), ("policy_node", "camera/wrist/image_raw"),
                        ("policy_node", "gripper/state"), ("teleop_arbiter_node", "policy/command"),
                        ("teleop_arbiter_node", "gripper/state"), ("sim_arm_node", "arm/delta_twist_cmds"),
                        ("recorder_node", "ee_pose"), ("recorder_node", "episode/events"),
                        ("recorder_node", "policy/active")]:
        assert f"{topic}: dropped a malformed message" in logs[node], f"{node} / {topic}\n{logs[node]}"
    assert "Traceback" not in "".join(logs.values())
    bag = read_bag(path)
    assert bag["start"] > 1_000_000_000 * 1_000_000_000  # not 1970
    assert (bag["end"] - bag["start"]) / 1e9 < 3 * WAIT
    assert bag["episode"].metadata["outcome"] == "success"
    assert json.loads(bag["episode"].metadata["rejected_stamps"])["ee_pose"] >= 1


def test_hold_and_resume_are_recorded_and_hold_stops_the_arm(stack):
    def body():
        time.sleep(0.5)
        stack.call("teleop/hold")
        stack.probe.wait_for("teleop/mode", lambda m: m.data == "hold", since_ns=time.time_ns(),
                             timeout=WAIT)
        t = time.time_ns()
        time.sleep(2.5 / HZ)
        assert stack.probe.messages("action/executed", t) == []
        twists = [np.concatenate(M.twist_stamped_to_arrays(r.msg))
                  for r in stack.probe.messages("arm/delta_twist_cmds", t)]
        assert twists and not np.any(twists)  # zero twists while holding
        stack.call("teleop/resume")
        stack.executed_after(time.time_ns())

    path, _t0, _t1 = stack.episode(body)
    kinds = [k for _, k in read_bag(path)["episode"].events]
    assert kinds.index("hold") < kinds.index("resume"), kinds


def test_a_trainer_round_hot_swaps_the_policy(stack):
    from apo_ros.policies import policy_id

    t = time.time_ns()
    stack.call("trainer/train_round")
    done = stack.probe.wait_for("trainer/status", lambda m: "done" in m.data or "failed" in m.data,
                                since_ns=t, timeout=3 * WAIT)
    assert "done" in done.msg.data, f"{done.msg.data}\n{stack.logs()}"
    new_checkpoint = done.msg.data.split("done: ", 1)[1]
    new_id = policy_id(new_checkpoint)
    assert new_id != policy_id(stack.checkpoint)
    active = stack.probe.wait_for("policy/active", lambda m: json.loads(m.data)["policy_id"] == new_id,
                                  since_ns=t, timeout=WAIT)
    assert json.loads(active.msg.data)["checkpoint"] == new_checkpoint
    path, _t0, _t1 = stack.episode(lambda: stack.executed_after(time.time_ns()))
    assert read_bag(path)["episode"].metadata["policy_id"] == new_id
    stack.assert_alive()


def test_kill_9_of_the_recorder_is_repaired(stack):
    path = stack.call("episode/start")
    stack.executed_after(time.time_ns(), n=8)  # > the writer's 1 s flush interval
    stack.graph.send("recorder_node", signal.SIGKILL)
    assert stack.graph.wait("recorder_node", 10) == -signal.SIGKILL
    proc = subprocess.run([sys.executable, "-m", "apo_ros.cli", "bags", "repair", path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    repaired = [p for p in stack.bags.iterdir() if p.name == Path(path).name + "_repaired"]
    assert len(repaired) == 1, (proc.stdout, list(stack.bags.iterdir()))
    info = bags_info(str(repaired[0]))
    assert info["truncated"] and info["steps"] >= 3  # what was flushed before the kill
    stack.graph.start("recorder_node")  # the graph goes on with a new recorder
    deadline = time.monotonic() + 3 * WAIT
    while True:
        try:
            stack.probe.call("episode/start", timeout=10)
            break
        except TimeoutError:
            assert time.monotonic() < deadline, stack.logs()


def test_sigint_and_sigterm_exit_0_with_the_bag_finalized(stack):
    stack.probe.call("episode/abort", timeout=WAIT)  # whatever the previous test left open
    t = time.time_ns()
    path = stack.call("episode/start")
    stack.executed_after(t, n=5)
    for name in stack.graph.procs:
        stack.graph.send(name, signal.SIGTERM if name in ("teleop_arbiter_node", "trainer_node")
                         else signal.SIGINT)
    codes = {name: stack.graph.wait(name, WAIT) for name in stack.graph.procs}
    assert codes == {name: 0 for name in codes}, f"{codes}\n{stack.logs()}"
    info = bags_info(str(path))
    assert info["outcome"] == "abort" and not info["truncated"] and info["steps"] >= 3
    assert "Traceback" not in stack.logs()
