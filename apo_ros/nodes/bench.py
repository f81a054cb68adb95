"""`apo-ros bench runtime`, the ROS 2 graph's figures beside the in-process ones
(`apo_ros.runtime.bench`): the sim graph (real rclpy over Fast DDS, one process per node, a small
untrained CNN policy, 64x64 images) watched in steady state: observation-to-command latency, the
achieved control rate, the share of control steps with a policy action, CPU and memory per node,
the take-over through a Joy message, and the same rate with a remote policy whose replies take
300 ms. `run` is the whole `runtime` section."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time

import numpy as np

from apo_ros.nodes.wiring import SIM, resolve
from apo_ros.policies import build_policy, save_policy
from apo_ros.policies.testing import default_statistics
from apo_ros.recording import chunks
from apo_ros.recording import messages as M
from apo_ros.runtime import bench as runtime_bench
from apo_ros.runtime.bench import _pct
from apo_ros.serving.delay import DelayRelay
from apo_ros.serving.server import PolicyServer, ServeConfig


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _graph_takeover(probe, trials: int = 3) -> dict:
    """The operator deflects the puck (a Joy message, as the spacenav driver sends) while the
    policy drives: control steps (ee_pose) that opened after the message was sent, up to and
    including the first human step. 1 = the first step after the input is the operator's."""
    from sensor_msgs.msg import Joy

    steps_to_human = []
    probe.publish("spacenav/joy", Joy(axes=[0.0] * 6, buttons=[0, 0]))  # the publisher matched first
    for _ in range(trials):
        probe.wait_for("teleop/mode", lambda m: m.data == "autonomous", since_ns=time.time_ns(),
                       timeout=30)
        t_in = time.time_ns()
        joy = Joy(axes=[0.8, 0.0, 0.0, 0.0, 0.0, 0.0], buttons=[0, 0])
        joy.header.stamp.sec, joy.header.stamp.nanosec = divmod(t_in, 1_000_000_000)
        probe.publish("spacenav/joy", joy)
        first = probe.wait_for("action/executed", lambda m: m.header.frame_id == "human",
                               since_ns=t_in, timeout=30)
        steps_to_human.append(sum(1 for r in probe.messages("ee_pose", t_in)
                                  if M.stamp_to_ns(r.msg.header) <= M.stamp_to_ns(first.msg.header)))
        joy.axes = [0.0] * 6
        probe.publish("spacenav/joy", joy)  # released: the idle hand-back returns control
    return {"trials": trials, "steps_to_first_human_step": steps_to_human}


def graph_figures(seconds: float, chunk_size: int = 1, remote_delay_s: float | None = None,
                  execution: str = "async") -> dict:
    """Start the sim graph (sim_arm_node, policy_node, teleop_arbiter_node with device:=joy,
    recorder_node) from the wiring table and watch it for `seconds` of steady state.
    `remote_delay_s`: the policy is served (`PolicyServer`) behind a `DelayRelay` whose replies
    take that long, and policy_node runs it as ws://...; `execution`: policy_node's mode."""
    try:  # rclpy is optional: without it the section reports that instead of failing
        from apo_ros.nodes.local_launch import LocalGraph
        from apo_ros.nodes.probe import GraphProbe
    except ImportError as err:
        return {"error": f"rclpy is not installed ({err})"}

    tmp = tempfile.mkdtemp(prefix="apo-bench-graph-")
    stack = contextlib.ExitStack()
    try:
        policy = build_policy("small", default_statistics(0.03), device="cpu", chunk_size=chunk_size,
                              instructions=["put the lemon on the plate"])
        save_policy(policy, f"{tmp}/ckpt")
        spec = f"{tmp}/ckpt"
        if remote_delay_s is not None:
            server = PolicyServer(policy.eval(), ServeConfig(host="127.0.0.1", port=0, watch_s=0))
            stack.enter_context(server.start())
            relay = stack.enter_context(DelayRelay(server.url, remote_delay_s))
            spec = f"{relay.url}?timeout_s=2"
        nodes = resolve(SIM, {"checkpoint": spec, "bags_dir": f"{tmp}/bags", "teleop_device": "joy"},
                        extra_parameters={"policy_node": {"execution": execution}})
        with LocalGraph(nodes, f"{tmp}/run") as graph:
            graph.start()
            probe = GraphProbe(graph.domain_id, name="bench_probe")
            try:
                probe.wait_for("action/executed", timeout=120)
                time.sleep(1.0)  # past start-up
                pids = {name: p.pid for name, p in graph.procs.items()}
                cpu0, t0, wall0 = {n: _cpu_s(p) for n, p in pids.items()}, time.time_ns(), time.monotonic()
                time.sleep(seconds)
                wall = time.monotonic() - wall0
                cpu = {n: round((_cpu_s(p) - cpu0[n]) / wall, 3) for n, p in pids.items()}
                rss = {n: round(_rss_mb(p), 1) for n, p in pids.items()}
                takeover = _graph_takeover(probe)
                dead = graph.dead()
            finally:
                probe.close()
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)

    def window(topic: str) -> list:
        return [r for r in probe.messages(topic, t0) if r.rx_ns < t0 + int(seconds * 1e9)]

    def latency_ms(topic: str) -> dict:
        return _pct([(r.rx_ns - M.stamp_to_ns(r.msg.header)) / 1e6 for r in window(topic)] or [float("nan")])

    def applied_ms() -> dict:
        """Observation stamp -> the arm applying its action (the sim's echo of the twist)."""
        applied = [(M.stamp_to_ns(r.msg.header), r.rx_ns, np.concatenate(M.twist_stamped_to_arrays(r.msg)))
                   for r in probe.messages("sim/applied", t0)]
        out, used = [], set()
        for r in window("action/executed"):
            stamp, action = M.stamp_to_ns(r.msg.header), M.joint_state_to_action(r.msg)[0]
            for twist_stamp, rx, v in applied:
                if twist_stamp > stamp and twist_stamp not in used and np.allclose(v, action[:6] * 10.0):
                    used.add(twist_stamp)
                    out.append((rx - stamp) / 1e6)
                    break
        return _pct(out or [float("nan")])

    observations, executed = len(window("ee_pose")), len(window("action/executed"))
    policy_actions = [(M.stamp_to_ns(r.msg.header), chunks.split(*M.joint_state_arrays(r.msg)))
                      for r in window("action/executed") if r.msg.header.frame_id == "policy"]
    observed = {M.stamp_to_ns(r.msg.header) for r in probe.messages("ee_pose")}
    keys = [(stamp, info.chunk_index if info else -1) for stamp, info in policy_actions]
    latencies = [info.latency_ns / 1e6 for _s, info in policy_actions if info is not None]
    return {
        "chunk_size": chunk_size,
        "remote_delay_s": remote_delay_s,
        "execution": execution,
        "policy_actions_per_s": round(len(policy_actions) / seconds, 2),
        "policy_actions_repeated": len(keys) - len(set(keys)),
        "policy_actions_linked_to_an_observation": sum(s in observed for s, _i in policy_actions),
        "policy_actions_with_provenance": len(latencies),
        "chunk_latency_ms": _pct(latencies or [float("nan")]),
        "seconds": seconds,
        "obs_to_policy_command_ms": latency_ms("policy/command"),
        "obs_to_executed_action_ms": latency_ms("action/executed"),
        "obs_to_applied_by_arm_ms": applied_ms(),
        "observations_per_s": round(observations / seconds, 2),
        "executed_actions_per_s": round(executed / seconds, 2),
        "steps_with_policy_action": round(executed / observations, 3) if observations else 0.0,
        "takeover": takeover,
        "cpu_share_of_one_core": cpu,
        "rss_mb": rss,
        "nodes_died": dead,
    }


def run(quick: bool = False) -> dict:
    """The `runtime` section: the in-process figures and the ROS graph's."""
    overhead = runtime_bench.per_step_overhead(300 if quick else 2000)
    takeover = runtime_bench.takeover_latency(50 if quick else 500)
    drain = runtime_bench.spacemouse_drain(60)
    graph = graph_figures(5.0 if quick else 20.0)
    rates = runtime_bench.queue_rates(5.0 if quick else 20.0)
    step_changes = runtime_bench.merge_step_changes()
    remote = {execution: graph_figures(5.0 if quick else 20.0, chunk_size=8, remote_delay_s=0.3,
                                       execution=execution) for execution in ("sync", "async")}
    return {
        "action_queue": {"rates_no_ros": rates, "merge_step_changes": step_changes,
                         "ros_graph_remote_300ms_chunk8": remote},
        "per_step_overhead": overhead,
        "takeover": takeover,
        "spacemouse_drain": drain,
        "ros_graph": graph,
        "summary": {
            "control_overhead_ms_mean": overhead["control_ms"]["mean"],
            "control_plus_record_ms_mean": overhead["total_ms"]["mean"],
            "takeover_max_steps_after_input": takeover["steps_after_next_tick"]["max"],
            "graph_obs_to_command_ms_p50": graph.get("obs_to_executed_action_ms", {}).get("p50"),
            "graph_executed_actions_per_s": graph.get("executed_actions_per_s"),
            "queue_300ms_actions_per_s": {e: rates[e]["executed_actions_per_s"] for e in ("sync", "async")},
            "graph_remote_300ms_chunk8_policy_actions_per_s": {
                e: remote[e].get("policy_actions_per_s") for e in ("sync", "async")},
        },
    }
