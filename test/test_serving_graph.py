"""The ROS graph (real rclpy, separate node processes) with `checkpoint: ws://...`: policy_node runs
a policy served by `apo-ros serve`; the graph announces and records the server's ids; killing the
server gives zero-motion holds (never a stale command), and a restarted server is picked up."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from graph_helpers import wait_until  # noqa: E402
from serving_helpers import ServeProcess, make_checkpoint  # noqa: E402

from apo_ros.nodes.local_launch import LocalGraph  # noqa: E402
from apo_ros.nodes.probe import GraphProbe  # noqa: E402
from apo_ros.nodes.wiring import SIM, resolve  # noqa: E402
from apo_ros.recording import messages as M  # noqa: E402

# one graph at a time, with test_graph.py's; a real graph takes tens of seconds: not in the fast tier
pytestmark = [pytest.mark.xdist_group("ros_graph"), pytest.mark.slow]


def executed(probe: GraphProbe, since_ns: int) -> list[tuple[int, np.ndarray]]:
    """(observation stamp, action) of every policy action the arbiter executed since `since_ns`."""
    return [(M.stamp_to_ns(r.msg.header), M.joint_state_to_action(r.msg)[0])
            for r in probe.messages("action/executed", since_ns) if r.msg.header.frame_id == "policy"]


def test_policy_node_with_a_remote_policy_holds_when_the_server_dies(tmp_path):
    from apo_ros.policies import load_policy

    checkpoint = str(tmp_path / "ckpt")
    make_checkpoint(checkpoint)
    local = load_policy(checkpoint, device="cpu")
    server = ServeProcess(checkpoint)
    nodes = resolve(SIM, {"checkpoint": server.url, "bags_dir": str(tmp_path / "bags"),
                          "teleop_device": "joy"})
    try:
        with LocalGraph(nodes, str(tmp_path / "run")) as graph:
            graph.start()
            probe = GraphProbe(graph.domain_id)

            logs = graph.logs_tail
            try:
                moving = lambda since: any(np.any(a[:6] != 0) for _, a in executed(probe, since))  # noqa: E731
                wait_until(lambda: moving(0), 150, "the graph never executed a remote action", logs)
                active = json.loads(probe.wait_for("policy/active", timeout=30).msg.data)
                assert active["policy_id"] == local.policy_id
                assert active["stats_id"] == local.stats.statistics_id()

                ok, path = probe.call("episode/start", timeout=30)
                assert ok, path
                t = time.time_ns()
                wait_until(lambda: len(executed(probe, t)) >= 3, 60, "no actions in the episode", logs)
                assert probe.call("episode/success", timeout=30)[0]
                from apo_ros.recording.reader import read_episode

                episode = read_episode(path, load_images=False)
                assert episode.metadata["policy_id"] == local.policy_id  # the server's ids
                assert episode.metadata["stats_id"] == local.stats.statistics_id()

                server.kill()
                killed = time.time_ns()
                time.sleep(3.0)
                # from 1 s after the kill on, every twist sent to the arm is zero motion ...
                twists = [np.concatenate(M.twist_stamped_to_arrays(r.msg))
                          for r in probe.messages("arm/delta_twist_cmds", killed + 1_000_000_000)]
                assert len(twists) >= 5, f"no twists while the server was down\n{logs()}"
                assert all(np.all(v == 0) for v in twists), "the arm moved with no policy server"
                # ... and no policy action computed from an observation after the kill was executed
                late = [a for stamp, a in executed(probe, killed) if stamp > killed + 500_000_000]
                assert all(np.all(a[:6] == 0) for a in late), "a motion was executed with no server"
                assert "holding (zero motion)" in graph.log("policy_node")

                server.start()
                restarted = time.time_ns()
                wait_until(lambda: any(np.any(a[:6] != 0) for s, a in executed(probe, restarted)
                                       if s > restarted), 60, "no recovery after the restart", logs)
                assert "is back after" in graph.log("policy_node")
                assert graph.dead() == {}, logs()
            finally:
                probe.close()
    finally:
        server.stop()
