"""`apo-ros bench runtime`: what the runtime costs per control step, and how fast a take-over bites.

1. Per-step overhead of PolicyRunner + TeleopArbiter (+ final SafetyFilter) + EpisodeRecorder with
   the model and the simulator taken out: the policy returns a precomputed chunk instantly and
   observations are synthetic (64x64, two cameras). Baseline: the bare EpisodeWriter writing the
   same observation + action (what recording costs anyway), so the ratio shows what the runtime
   adds on top of the bag.
2. Take-over latency: the operator deflects the device at a random moment between two control
   steps; we count control steps until the executed command's source is "human" (target: the next
   step, i.e. 0 steps after the input is read) and time the read -> executed-command path. The
   SpaceMouse path is measured too, over a fake HID backend with a backlog of stale reports, with
   and without the drain-to-latest read.
3. The ROS 2 graph: in `apo_ros.nodes.bench`, beside the nodes (the section's `run` is there).
4. The action queue: executed policy actions per second at 10 Hz with a policy whose inference
   takes 300 ms (a chunk-8 checkpoint behind the bench's own delaying wrapper), synchronous
   (inference in the control path) against asynchronous (background inference, latency-aware
   merging); the largest step change in commanded velocity at chunk boundaries per merge rule;
   and the same rate in the ROS graph with a remote policy whose replies take 300 ms.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from apo_ros.actions.safety import SafetyFilter
from apo_ros.control.policy_runner import PolicyRunner, RunnerConfig
from apo_ros.observation import Observation
from apo_ros.policies import build_policy
from apo_ros.policies.testing import default_statistics
from apo_ros.recording.writer import EpisodeWriter
from apo_ros.runtime.recorder import EpisodeRecorder, RecorderConfig
from apo_ros.runtime.session import OperatorDevice, session_arbiter_config
from apo_ros.teleop.arbiter import ArbiterConfig, PolicyCommand, TeleopArbiter
from apo_ros.teleop.device import DeviceState
from apo_ros.teleop.spacemouse import SpaceMouse, SpaceMouseConfig

STEP_NS = 100_000_000  # 10 Hz


class _InstantPolicy:
    """No model: a fixed chunk, so only the runner's own work is timed."""

    def __init__(self, chunk_size: int = 4):
        self.chunk = np.tile(np.array([0.002, -0.001, 0.0, 0.0, 0.0, 0.01, 1.0]), (chunk_size, 1))

    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]:
        return self.chunk, True

    def reset(self) -> None:
        pass


def _observations(n: int, size: int = 64) -> list[Observation]:
    rng = np.random.default_rng(0)
    base = [{c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in ("front", "wrist")}
            for _ in range(8)]
    return [Observation(images=base[i % 8], joint_positions=np.zeros(8),
                        ee_pose=np.array([0.4, 0.0, 0.2, 0, 0, 0, 1.0]), gripper=1.0,
                        instruction="put the lemon on the plate", stamp_ns=(i + 1) * STEP_NS)
            for i in range(n)]


def _pct(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(arr, 50)), 4), "p99": round(float(np.percentile(arr, 99)), 4),
            "mean": round(float(arr.mean()), 4)}


def per_step_overhead(steps: int) -> dict:
    obs = _observations(steps)
    tmp = tempfile.mkdtemp(prefix="apo-bench-runtime-")
    try:
        safety, final = SafetyFilter(), SafetyFilter()
        runner = PolicyRunner(_InstantPolicy(), safety, RunnerConfig())
        max_delta = tuple(safety.config.max_delta)
        arbiter = TeleopArbiter(session_arbiter_config(max_delta))
        device = OperatorDevice(max_delta)
        recorder = EpisodeRecorder(RecorderConfig(bags_dir=tmp, task="bench"))
        recorder.start(0)
        control_ms, record_ms, total_ms = [], [], []
        for i, o in enumerate(obs):
            t0 = time.perf_counter_ns()
            rs = runner.step(o, now_ns=o.stamp_ns)
            device.feed(None if (i // 20) % 2 == 0 else rs.action)  # alternate policy / human spans
            out = arbiter.update(o.stamp_ns, policy=PolicyCommand(rs.action, rs.obs_stamp_ns),
                                 device=device.read(), obs_stamp_ns=o.stamp_ns)
            executed = final.filter(out.action, o.ee_pose[:3], o.gripper).action
            t1 = time.perf_counter_ns()
            recorder.record_observation(o)
            for e in out.events:
                recorder.record_event(e.stamp_ns, e.kind)
            recorder.record_action(o.stamp_ns, executed, out.source, out.obs_stamp_ns, proposed=rs.proposed)
            t2 = time.perf_counter_ns()
            control_ms.append((t1 - t0) / 1e6)
            record_ms.append((t2 - t1) / 1e6)
            total_ms.append((t2 - t0) / 1e6)
        recorder.success()

        # Baseline: the bare writer writing the same data (the cost of having a bag at all).
        bare_ms = []
        action = np.array([0.002, -0.001, 0.0, 0.0, 0.0, 0.01, 1.0])
        with EpisodeWriter(f"{tmp}/bare", metadata={"task": "bench"}) as writer:
            for o in obs:
                t0 = time.perf_counter_ns()
                writer.write_observation(o)
                writer.write_action(o.stamp_ns, action, "policy", o.stamp_ns, proposed=action)
                bare_ms.append((time.perf_counter_ns() - t0) / 1e6)
            writer.close("success")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total, bare = _pct(total_ms), _pct(bare_ms)
    return {
        "steps": steps,
        "control_ms": _pct(control_ms),  # runner + arbiter + device adapter + final filter
        "record_ms": _pct(record_ms),  # recorder: 2 x 64x64 images, joints, pose, actions, events
        "total_ms": total,
        "baseline_bare_writer_ms": bare,
        "added_over_bare_writer_ms": round(total["mean"] - bare["mean"], 4),
        "ratio_total_to_bare_writer": round(total["mean"] / bare["mean"], 3),
    }


def takeover_latency(trials: int, seed: int = 0) -> dict:
    """Deflection at a random time between steps -> steps until the executed source is human."""
    rng = np.random.default_rng(seed)
    cfg = ArbiterConfig(max_delta=(0.01,) * 3 + (0.05,) * 3)
    lag_steps, path_us = [], []
    cmd = PolicyCommand(np.array([0.001, 0, 0, 0, 0, 0, 1.0]), 0)
    for _ in range(trials):
        arbiter = TeleopArbiter(cfg)
        input_at = int(rng.integers(5 * STEP_NS, 6 * STEP_NS))  # somewhere inside step 5
        for k in range(12):
            now = k * STEP_NS
            deflected = now >= input_at
            state = DeviceState(t=now / 1e9 if deflected else 0.0,
                                axes=(0.8, 0, 0, 0, 0, 0) if deflected else (0.0,) * 6)
            t0 = time.perf_counter_ns()
            out = arbiter.update(now, policy=cmd, device=state)
            t1 = time.perf_counter_ns()
            if out.source == "human":
                first_step_after_input = -(-input_at // STEP_NS)  # ceil: the next control step
                lag_steps.append(k - first_step_after_input)
                path_us.append((t1 - t0) / 1e3)
                break
        else:
            lag_steps.append(99)
    return {"trials": trials, "steps_after_next_tick": {"max": int(max(lag_steps)),
                                                         "mean": float(np.mean(lag_steps))},
            "decide_us": _pct(path_us)}


class _BacklogHid:
    """pyspacemouse-like device: a backlog of reports, each read consumes one (shared state)."""

    def __init__(self, backlog: int):
        self.state = SimpleNamespace(t=0.0, x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0,
                                     buttons=[0, 0])
        self.reports = [0.0] * backlog + [0.9]  # old "at rest" reports, then the deflection
        self.connected = True

    def read(self):
        if self.reports:
            self.state.x = self.reports.pop(0)
            self.state.t += 1.0
        return self.state

    def close(self) -> None:
        pass


def spacemouse_drain(backlog: int) -> dict:
    module = SimpleNamespace(get_connected_devices=lambda: ["fake"],
                             AxisConvention=SimpleNamespace(ROS="ros"))
    hid = _BacklogHid(backlog)
    module.open = lambda **kw: hid
    sm = SpaceMouse(SpaceMouseConfig(deadzone=0.0), _module=module)
    t0 = time.perf_counter_ns()
    state = sm.read()
    drain_us = (time.perf_counter_ns() - t0) / 1e3
    # Without draining, one report per 10 Hz control step: the deflection shows after `backlog` steps.
    return {"backlog_reports": backlog, "drained_read_sees_deflection": state.axes[0] > 0.5,
            "drain_read_us": round(drain_us, 1), "steps_lag_without_drain": backlog}


class _Delayed:
    """The bench's delaying wrapper: the wrapped policy's answer, `delay_s` after the call."""

    def __init__(self, policy, delay_s: float):
        self.policy, self.delay_s = policy, delay_s

    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]:
        t0 = time.perf_counter()
        out = self.policy.select_action(observation)
        time.sleep(max(0.0, self.delay_s - (time.perf_counter() - t0)))
        return out

    def reset(self) -> None:
        self.policy.reset()


def _chunk_policy(chunk_size: int = 8):

    policy = build_policy("small", default_statistics(0.03), device="cpu", chunk_size=chunk_size,
                          instructions=["put the lemon on the plate"])
    policy.eval()
    return policy


def queue_rates(seconds: float, delay_s: float = 0.3, chunk_size: int = 8,
                rate_hz: float = 10.0) -> dict:
    """Executed policy actions per second on a real 10 Hz clock (no ROS), sync against async.
    Sync runs inference inside the control tick, so ticks that pass meanwhile get nothing; async
    runs it in the background and merges each chunk dropping the actions whose tick has passed."""
    policy = _Delayed(_chunk_policy(chunk_size), delay_s)
    obs = _observations(8)
    out = {}
    for execution in ("sync", "async"):
        runner = PolicyRunner(policy, SafetyFilter(), RunnerConfig(
            rate_hz=rate_hz, execution=execution, background=execution == "async"))
        period = 1.0 / rate_hz
        executed, keys, ticks = 0, set(), 0
        t0 = time.monotonic()
        try:
            k = 0
            while time.monotonic() - t0 < seconds:
                now = time.monotonic()
                k = max(k, int((now - t0) / period))  # a tick that passed while we were busy is lost
                while time.monotonic() < t0 + k * period:
                    time.sleep(0.001)
                stamp = time.time_ns()
                o = obs[k % len(obs)]
                step = runner.step(Observation(images=o.images, joint_positions=o.joint_positions,
                                               ee_pose=o.ee_pose, gripper=o.gripper,
                                               instruction=o.instruction, stamp_ns=stamp),
                                   now_ns=stamp)
                ticks += 1
                if not step.empty:
                    executed += 1
                    keys.add((step.obs_stamp_ns, step.chunk_index))
                k += 1
            wall = time.monotonic() - t0
        finally:
            runner.close()
        out[execution] = {"executed_actions_per_s": round(executed / wall, 2),
                          "ticks_run_per_s": round(ticks / wall, 2),
                          "repeated_actions": executed - len(keys),
                          "empty_ticks": runner.empty_ticks, "late_actions_dropped": runner.queue.late,
                          "inference_ms": runner.latency_ms()}
    return {"rate_hz": rate_hz, "inference_delay_s": delay_s, "chunk_size": chunk_size,
            "seconds": seconds, **out}


class _DisagreeingChunks:
    """A smooth motion (sinusoidal velocity) planned in chunks that each carry their own error,
    as two chunks of a real policy disagree about the same future tick."""

    def __init__(self, chunk_size: int = 8, error: float = 0.002, seed: int = 0):
        self.T, self.error, self.rng = chunk_size, error, np.random.default_rng(seed)

    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]:
        k = round(observation.stamp_ns / STEP_NS)
        t = k + np.arange(self.T)
        chunk = np.zeros((self.T, 7))
        chunk[:, 0] = 0.004 * np.sin(2 * np.pi * t / 40) + self.rng.normal(0, self.error)
        chunk[:, 6] = 1.0
        return chunk, True

    def reset(self) -> None:
        pass


def merge_step_changes(ticks: int = 400, delay_ticks: int = 3, chunk_size: int = 8,
                       refill_steps: int = 5) -> dict:
    """Largest change in commanded velocity between consecutive ticks where a new chunk took
    over, per merge rule (async, `delay_ticks` of simulated latency, the next chunk asked for
    with `refill_steps` actions left, so chunks overlap by refill_steps - delay_ticks ticks), and
    within chunks."""
    out = {}
    for merge in ("replace", "ensemble", "crossfade"):
        runner = PolicyRunner(_DisagreeingChunks(chunk_size), SafetyFilter(), RunnerConfig(
            execution="async", delay_ticks=delay_ticks, merge=merge, refill_steps=refill_steps))
        prev, prev_stamp, at_boundary, inside = None, None, [], []
        for o in _observations(ticks):
            step = runner.step(o, now_ns=o.stamp_ns)
            if step.empty:
                continue
            velocity = step.action[0] * 10.0  # m/s at 10 Hz
            if prev is not None:
                change = abs(velocity - prev)
                (at_boundary if step.obs_stamp_ns != prev_stamp else inside).append(change)
            prev, prev_stamp = velocity, step.obs_stamp_ns
        out[merge] = {"max_step_change_m_s": round(max(at_boundary + inside), 5),
                      "max_step_change_at_boundaries_m_s": round(max(at_boundary), 5),
                      "mean_step_change_at_boundaries_m_s": round(float(np.mean(at_boundary)), 5),
                      "max_step_change_inside_chunks_m_s": round(max(inside), 5),
                      "boundaries": len(at_boundary)}
    return {"delay_ticks": delay_ticks, "chunk_size": chunk_size, "refill_steps": refill_steps,
            "chunk_error_m_s": 0.02, **out}
