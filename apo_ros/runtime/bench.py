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
"""

from __future__ import annotations

import shutil
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from apo_ros.actions.safety import SafetyFilter
from apo_ros.observation import Observation
from apo_ros.runtime.policy_runner import PolicyRunner, RunnerConfig
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
        from apo_ros.recording.writer import EpisodeWriter

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


def run(quick: bool = False) -> dict:
    steps = 300 if quick else 2000
    overhead = per_step_overhead(steps)
    takeover = takeover_latency(50 if quick else 500)
    drain = spacemouse_drain(60)
    return {
        "per_step_overhead": overhead,
        "takeover": takeover,
        "spacemouse_drain": drain,
        "summary": {
            "control_overhead_ms_mean": overhead["control_ms"]["mean"],
            "control_plus_record_ms_mean": overhead["total_ms"]["mean"],
            "takeover_max_steps_after_input": takeover["steps_after_next_tick"]["max"],
        },
    }
