"""Chunked policies in the real ROS graph (separate node processes over rclpy + Fast DDS): the
action queue runs every action of a chunk at the tick it was planned for, once, linked to the
observation its chunk was computed from, with local and remote policies (a remote one behind a
relay that makes every reply take 0.3 s); the operator's take-over still decides the next step,
and after the hand-back the first policy action comes from a newer observation. The assertions
are counts with wide margins (rates belong in `apo-ros bench runtime`)."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")

from graph_helpers import wait_until  # noqa: E402
from sensor_msgs.msg import Joy  # noqa: E402
from serving_helpers import ServeProcess, make_checkpoint  # noqa: E402

from apo_ros.nodes.local_launch import LocalGraph  # noqa: E402
from apo_ros.nodes.probe import GraphProbe  # noqa: E402
from apo_ros.nodes.wiring import SIM, resolve  # noqa: E402
from apo_ros.recording import chunks  # noqa: E402
from apo_ros.recording import messages as M  # noqa: E402

# one graph at a time, with test_graph.py's; a real graph takes tens of seconds: not in the fast tier
pytestmark = [pytest.mark.xdist_group("ros_graph"), pytest.mark.slow]

HZ = 5.0  # below 10 Hz: the shared test machine is loaded, and the deadlines are real time
RATE = {"sim_arm_node": {"control_hz": HZ}, "policy_node": {"rate_hz": HZ},
        "teleop_arbiter_node": {"control_hz": HZ, "decision_deadline_s": 0.15,
                                "device_timeout_s": 1.0},
        "recorder_node": {"end_on_task_success": False}}
WAIT = 90.0
T = M.rclpy_types()


def executed(probe: GraphProbe, since_ns: int) -> list[tuple[int, str, chunks.ChunkInfo | None]]:
    """(observation stamp, source, provenance) of every executed action since `since_ns`."""
    out = []
    for r in probe.messages("action/executed", since_ns):
        names, values = M.joint_state_arrays(r.msg)
        out.append((M.stamp_to_ns(r.msg.header), r.msg.header.frame_id, chunks.split(names, values)))
    return out


def joy(axes) -> Joy:
    return Joy(header=M.make_header(T, time.time_ns()), axes=[float(a) for a in axes], buttons=[0, 0])


@pytest.mark.parametrize("chunk_size,remote_delay_s", [(1, None), (8, None), (1, 0.0), (8, 0.3)],
                         ids=["chunk1-local", "chunk8-local", "chunk1-remote", "chunk8-remote-300ms"])
def test_every_action_of_a_chunk_runs_once_at_its_tick(tmp_path, chunk_size, remote_delay_s):
    checkpoint = str(tmp_path / "ckpt")
    make_checkpoint(checkpoint, chunk_size=chunk_size)
    server = relay = None
    spec = checkpoint
    if remote_delay_s is not None:
        from apo_ros.serving.delay import DelayRelay

        server = ServeProcess(checkpoint)
        relay = DelayRelay(server.url, remote_delay_s)
        spec = f"{relay.url}?timeout_s=3"
    nodes = resolve(SIM, {"checkpoint": spec, "bags_dir": str(tmp_path / "bags"),
                          "teleop_device": "joy"}, extra_parameters=RATE)
    try:
        with LocalGraph(nodes, str(tmp_path / "run")) as graph:
            graph.start()
            probe = GraphProbe(graph.domain_id)

            logs = graph.logs_tail
            try:
                wait_until(lambda: len(executed(probe, 0)) >= 3, 180, "the graph never acted", logs)
                wait_until(lambda: probe.messages("ee_pose"), WAIT, "the probe saw no ee_pose", logs)
                ok, path = probe.call("episode/start", timeout=30)
                assert ok, path
                t0 = time.time_ns()
                wait_until(lambda: len(executed(probe, t0)) >= 30, WAIT, "too few actions", logs)
                t1 = time.time_ns()
                observed = [M.stamp_to_ns(r.msg.header) for r in probe.messages("ee_pose", t0)
                            if r.rx_ns < t1]
                acted = [e for e in executed(probe, t0) if e[0] and e[1] == "policy"]
                # ... most control steps got a policy action (a chunk-8 policy got one in 8 when
                # every action of a chunk carried one stamp), and none ran twice
                assert len(acted) >= 0.5 * len(observed), (len(acted), len(observed), logs())
                keys = [(stamp, info.chunk_index) for stamp, _s, info in acted if info is not None]
                assert len(keys) == len(acted), "a policy action without its provenance"
                assert len(set(keys)) == len(keys), "an action of a chunk ran twice"
                ticks = [info.tick_stamp_ns for _st, _s, info in acted]
                assert len(set(ticks)) == len(ticks), "two actions in one control step"
                seen = set(M.stamp_to_ns(r.msg.header) for r in probe.messages("ee_pose"))
                # a chunk planned before the probe's ee_pose subscription matched (discovery
                # takes seconds on a loaded machine) links to an observation the probe never got:
                # at most one chunk's worth of those
                unseen = [stamp for stamp, _s, _i in acted if stamp < min(seen)]
                assert len(unseen) <= chunk_size, (len(unseen), chunk_size)
                for stamp, _s, info in acted:  # each linked to a real observation, run later
                    assert stamp in seen or stamp < min(seen)
                    assert info.tick_stamp_ns in seen
                    assert info.tick_stamp_ns >= stamp and 0 <= info.chunk_index < chunk_size
                if chunk_size > 1:
                    assert max(k for _s, k in keys) >= 2  # later actions of chunks ran too
                if remote_delay_s:
                    assert min(info.latency_ns for _st, _s, info in acted) >= remote_delay_s * 1e9

                # take-over: the operator's deflection decides the next step
                wait_until(lambda: probe.messages("teleop/mode") and
                           probe.messages("teleop/mode")[-1].msg.data == "autonomous", WAIT,
                           "not autonomous", logs)
                t_joy = time.time_ns()
                deadline = time.monotonic() + WAIT
                while not any(s == "human" for _st, s, _i in executed(probe, t_joy)):
                    assert time.monotonic() < deadline, logs()
                    probe.publish("spacenav/joy", joy([0.8, 0, 0, 0, 0, 0]))
                    time.sleep(0.05)
                first_human = next(r.rx_ns for r in probe.messages("action/executed", t_joy)
                                   if r.msg.header.frame_id == "human")
                # after the first human step, no policy action until the hand-back
                t_released = time.time_ns()
                probe.publish("spacenav/joy", joy([0, 0, 0, 0, 0, 0]))  # idle hand-back after 1 s
                between = [r.msg.header.frame_id for r in probe.messages("action/executed", first_human + 1)
                           if r.rx_ns < t_released]
                assert "policy" not in between, between
                wait_until(lambda: any(s == "policy" for _st, s, _i in executed(probe, t_released)),
                           WAIT, "the policy never acted after the hand-back", logs)
                after = executed(probe, t_released)
                last_human_tick = max(st for st, s, _i in after + executed(probe, t_joy) if s == "human")
                first_policy = next(e for e in after if e[1] == "policy")
                # the first policy action after the hand-back comes from an observation taken
                # after the operator's last step
                assert first_policy[0] > last_human_tick

                assert probe.call("episode/success", timeout=30)[0]
                from apo_ros.recording.reader import read_episode

                episode = read_episode(path, load_images=False)
                policy_steps = [s for s in episode.steps if s.source == "policy"]
                assert len(policy_steps) >= 10 and all(s.chunk is not None for s in policy_steps)
                assert all(s.chunk.tick_stamp_ns >= s.observation.stamp_ns for s in policy_steps)
                assert len({s.chunk.tick_stamp_ns for s in policy_steps}) == len(policy_steps)
                assert all(s.chunk is None for s in episode.steps if s.source == "human")
                assert graph.dead() == {}, logs()
                assert "Traceback" not in logs()
            finally:
                probe.close()
    finally:
        if relay is not None:
            relay.close()
        if server is not None:
            server.stop()
