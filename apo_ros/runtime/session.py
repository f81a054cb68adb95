"""The in-process session: simulator + policy runner + teleop arbiter + recorder in lock-step.

The embedded default: the same core objects the ROS nodes wrap, wired without middleware, one bag
per episode. Per control step:

    observation ─> PolicyRunner (policy + SafetyFilter) ─> command ─┐
         │                                                          ├─> TeleopArbiter ─> SafetyFilter ─> sim
         └─> simulated operator ─> OperatorDevice (axes, buttons) ──┘          │
                                                                    EpisodeRecorder (one bag per episode)

The simulated operator sits behind the same `TeleopDevice` interface as a SpaceMouse: its human
action becomes axes (action / max_delta) and buttons (take-over, hand-back, gripper close/open),
so take-over, hand-back and gripper handling run through the arbiter exactly as on the robot.
Time is simulation time (the observation stamps), so a session is deterministic for a seed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from apo_ros.actions.space import GRIPPER_INDEX
from apo_ros.control.policy_runner import PolicyRunner, RunnerConfig
from apo_ros.control.policy_source import ActionSource
from apo_ros.observation import CAMERAS
from apo_ros.recording.chunks import ChunkInfo
from apo_ros.runtime.config import load_safety_filter
from apo_ros.runtime.recorder import EpisodeRecorder, RecorderConfig
from apo_ros.serving.source import open_policy, provenance
from apo_ros.sim.env import make_env
from apo_ros.sim.experts import ExpertPolicy
from apo_ros.sim.operator import OperatorConfig, SimulatedOperator
from apo_ros.teleop.arbiter import ArbiterConfig, PolicyCommand, TeleopArbiter
from apo_ros.teleop.device import N_AXES, DeviceState, TeleopDevice

# OperatorDevice button layout (the arbiter in the session is configured to match).
BUTTON_CLOSE, BUTTON_OPEN, BUTTON_TAKEOVER, BUTTON_HANDBACK = 0, 1, 2, 3


class OperatorDevice(TeleopDevice):
    """The simulated operator as a SpaceMouse: `feed(human_action or None)` once per step, then
    `read()`. Axes = action[:6] / max_delta (clipped to [-1, 1]); the take-over button is pressed
    on the step the operator starts intervening, the hand-back button on the step it stops; while
    intervening, the gripper button matching the operator's gripper command is held."""

    name = "simulated-operator"

    def __init__(self, max_delta: tuple[float, ...]):
        self.max_delta = np.asarray(max_delta, dtype=np.float64)
        self.engaged = False
        self._t = 0.0
        self._state = DeviceState(t=0.0, buttons=(0, 0, 0, 0))

    def reset(self) -> None:
        self.engaged = False
        self._state = DeviceState(t=self._t, buttons=(0, 0, 0, 0))

    def feed(self, human: np.ndarray | None) -> None:
        self._t += 1.0
        buttons = [0, 0, 0, 0]
        if human is None:
            if self.engaged:
                buttons[BUTTON_HANDBACK] = 1
            self.engaged = False
            axes = (0.0,) * N_AXES
        else:
            h = np.asarray(human, dtype=np.float64).reshape(-1)
            if not self.engaged:
                buttons[BUTTON_TAKEOVER] = 1
            self.engaged = True
            axes = tuple(float(a) for a in np.clip(h[:N_AXES] / self.max_delta, -1.0, 1.0))
            buttons[BUTTON_CLOSE if h[GRIPPER_INDEX] < 0.5 else BUTTON_OPEN] = 1
        self._state = DeviceState(t=self._t, axes=axes, buttons=tuple(buttons), connected=True)

    def read(self) -> DeviceState:
        return self._state


def session_arbiter_config(max_delta: tuple[float, ...]) -> ArbiterConfig:
    """The arbiter as the session uses it: the operator decides with buttons (no idle hand-back,
    no take-over on a small deflection), and inputs are always fresh (lock-step)."""
    return ArbiterConfig(max_delta=tuple(max_delta), takeover_on_motion=False,
                         takeover_button=BUTTON_TAKEOVER, handback_button=BUTTON_HANDBACK,
                         idle_handback_s=0.0, gripper_close_button=BUTTON_CLOSE,
                         gripper_open_button=BUTTON_OPEN, gripper_takes_over=False)


@dataclass
class EpisodeSummary:
    index: int
    seed: int
    path: str
    outcome: str  # success | failure | abort
    steps: int
    human_steps: int
    interventions: int
    # why a failure ended early: object_fell / object_left_workspace (the simulator), or
    # operator_gave_up; "time_limit" when max_steps ran out; "" on success
    end_reason: str = ""
    intervention_outcomes: list[str] = field(default_factory=list)  # recovered / timed_out / ...


@dataclass
class SessionSummary:
    task: str
    policy_id: str
    operator: str
    bags_dir: str
    episodes: list[EpisodeSummary] = field(default_factory=list)
    latency_ms: dict = field(default_factory=dict)  # policy inference p50 / p99
    filter: dict = field(default_factory=dict)  # safety filter counters (policy actions)
    timing_ms: dict = field(default_factory=dict)  # mean per step: policy, sim, record, overhead
    runner: dict = field(default_factory=dict)  # action queue: chunks, late / expired actions, empty ticks
    wall_s: float = 0.0

    @property
    def successes(self) -> int:
        return sum(e.outcome == "success" for e in self.episodes)

    @property
    def interventions(self) -> int:
        return sum(e.interventions for e in self.episodes)

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.episodes)

    @property
    def human_steps(self) -> int:
        return sum(e.human_steps for e in self.episodes)

    def to_dict(self) -> dict:
        d = asdict(self)
        n = len(self.episodes)
        d.update(successes=self.successes, success_rate=self.successes / n if n else 0.0,
                 interventions=self.interventions, steps=self.steps, human_steps=self.human_steps,
                 intervention_ratio=self.human_steps / self.steps if self.steps else 0.0)
        return d


def _resolve_policy(policy: Any, task: str, env: Any, seed: int, device: str | None,
                    expert_noise: float) -> tuple[ActionSource, str, bool]:
    """-> (the source the runner drives, policy_id, is_expert)."""
    if isinstance(policy, str) and policy == "expert":
        return ExpertPolicy(env, noise=expert_noise, seed=seed), "expert", True
    if isinstance(policy, str):  # a checkpoint directory or a policy server ws://HOST:PORT
        loaded = open_policy(policy, device=device)
        return loaded, provenance(loaded)["policy_id"], False
    if not hasattr(policy, "select_action"):
        raise TypeError(f"policy must be 'expert', a checkpoint path or a policy object, got {policy!r}")
    pid = getattr(policy, "policy_id", None) or type(policy).__name__
    return policy, str(pid), False


def _make_operator(operator: Any, task: str, seed: int, noise: float = 0.0) -> Any:
    if operator in (None, "none"):
        return None
    if operator == "scripted":
        return SimulatedOperator(task, OperatorConfig(human_noise=noise), seed=seed)
    if hasattr(operator, "step") and hasattr(operator, "reset"):
        return operator  # an operator object (tests, custom operators)
    raise ValueError(f"operator must be 'scripted' or 'none', got {operator!r}")


class _Progress:
    """One live line: episode, step, mode, interventions so far (rich, on stderr)."""

    def __init__(self, enabled: bool, total_episodes: int):
        self.enabled = enabled
        self.total = total_episodes
        self._live: Any = None
        self._last = 0.0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live("", console=Console(stderr=True), refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def update(self, text: str, force: bool = False) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if force or now - self._last > 0.1:
            self._live.update(text)
            self._last = now

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)


def run_session(task: str, policy: Any = "expert", operator: Any = "scripted", episodes: int = 1,
                bags_dir: str = "bags", seed: int = 0, *, max_steps: int | None = None,
                image_size: int = 64, cameras: tuple[str, ...] = CAMERAS, control_hz: float = 10.0,
                image_format: str = "raw", safety_config: str = "", device: str | None = None,
                expert_noise: float = 0.0, replan_every: int = 0, progress: bool = False,
                render: bool = True, operator_noise: float = 0.0, execution: str = "async",
                 delay_ticks: int = 0, merge: str = "replace", refill_steps: int = -1,
                 horizon_s: float = 1.0) -> SessionSummary:
    """Run `episodes` episodes of `task` and record one bag each in `bags_dir`.

    policy: "expert" (scripted expert; actions recorded with source "expert"), a checkpoint
        directory, a policy server URL ws://HOST:PORT, or a policy object (TokenPolicy or anything
        with select_action/reset).
    operator: "scripted" (the simulated operator intervenes when the policy goes wrong; its
        corrections carry `operator_noise`) or "none".
    Episode k uses seed `seed + k`.
    execution / delay_ticks / merge / refill_steps / horizon_s: the action queue between the
        policy and the arm (RunnerConfig): `delay_ticks` makes every inference take that many
        control ticks of simulated time, so "sync" (the arm waits for each chunk) and "async"
        (the next chunk is computed while the queue runs) can be compared under latency.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make_env(task, image_size=image_size, cameras=tuple(cameras), control_hz=control_hz,
                   max_steps=max_steps, render=render)
    safety = load_safety_filter(safety_config)  # the runner's filter: counts policy actions
    final_filter = load_safety_filter(safety_config)  # the last check on whatever is executed
    pol, pid, is_expert = _resolve_policy(policy, task, env, seed, device, expert_noise)
    runner = PolicyRunner(pol, safety, RunnerConfig(
        rate_hz=control_hz, replan_every=replan_every, execution=execution, delay_ticks=delay_ticks,
        merge=merge, refill_steps=refill_steps, horizon_s=horizon_s), policy_id=pid)
    op = _make_operator(operator, task, seed, operator_noise)
    op_name = operator if isinstance(operator, str) else type(operator).__name__
    max_delta = tuple(safety.config.max_delta)
    device_adapter = OperatorDevice(max_delta)
    recorder = EpisodeRecorder(RecorderConfig(bags_dir=bags_dir, task=task, cameras=tuple(cameras),
                                              image_format=image_format, operator=str(op_name)))
    summary = SessionSummary(task=task, policy_id=pid, operator=str(op_name), bags_dir=bags_dir)
    t_policy = t_sim = t_record = t_total = 0.0
    n_steps = 0
    wall0 = time.perf_counter()
    try:
        with _Progress(progress, episodes) as bar:
            for k in range(episodes):
                ep_seed = seed + k
                obs = env.reset(ep_seed)
                runner.reset()
                if op is not None:
                    op.reset(env)
                device_adapter.reset()
                arbiter = TeleopArbiter(session_arbiter_config(max_delta), initial_gripper=obs.gripper)
                ids = runner.provenance()  # a policy server's ids follow its hot-swaps
                recorder.start(obs.stamp_ns, instruction=env.instruction, policy_id=ids["policy_id"],
                               metadata={"seed": str(ep_seed), "control_hz": str(control_hz),
                                         "stats_id": ids["stats_id"]})
                outcome, end_reason, step = "failure", "", 0
                while True:
                    t0 = time.perf_counter()
                    recorder.record_observation(obs)
                    t1 = time.perf_counter()
                    rs = runner.step(obs, now_ns=obs.stamp_ns)
                    t2 = time.perf_counter()
                    policy_s = rs.inference_ns / 1e9
                    human = op.step(env, rs.action) if op is not None else None
                    if op is not None and getattr(op, "gave_up", None):
                        end_reason = str(op.gave_up)  # the person gave up: end as a failure
                        break
                    t3 = time.perf_counter()
                    if human is None and device_adapter.engaged:
                        # Hand-back: the queue (planned while the person was driving) is flushed
                        # and the policy plans from this observation before it acts; with
                        # simulated latency the arm holds until that chunk is there.
                        runner.flush(not_before_ns=obs.stamp_ns)
                        rs = runner.step(obs, now_ns=obs.stamp_ns, again=True)
                        policy_s += rs.inference_ns / 1e9
                    device_adapter.feed(human)
                    # nothing planned for this tick: no policy command (zero motion, not recorded)
                    command = None if rs.empty else PolicyCommand(rs.action, rs.obs_stamp_ns)
                    out = arbiter.update(obs.stamp_ns, device=device_adapter.read(),
                                         policy=command, obs_stamp_ns=obs.stamp_ns)
                    arbiter.expire_policy()  # each command decides one tick, never a later one
                    executed = final_filter.filter(out.action, obs.ee_pose[:3], obs.gripper).action
                    source = "expert" if (is_expert and out.source == "policy") else out.source
                    t4 = time.perf_counter()
                    for event in out.events:
                        if event.kind in ("intervention_start", "intervention_end"):
                            recorder.record_event(event.stamp_ns, event.kind)
                    proposed = rs.proposed if np.all(np.isfinite(rs.proposed)) else None
                    chunk = None
                    if out.source == "policy" and not is_expert:
                        chunk = ChunkInfo(rs.chunk_index, rs.latency_ns, rs.merge, obs.stamp_ns)
                    recorder.record_action(obs.stamp_ns, executed, source, out.obs_stamp_ns,
                                           proposed=None if is_expert else proposed,
                                           tokens=rs.tokens, token_space=rs.token_space, chunk=chunk)
                    t5 = time.perf_counter()
                    obs, _r, terminated, truncated, info = env.step(executed)
                    t6 = time.perf_counter()
                    step += 1
                    n_steps += 1
                    t_policy += policy_s
                    t_sim += t6 - t5
                    t_record += (t1 - t0) + (t5 - t4)
                    # overhead: runner minus inference, arbiter, device adapter, final filter
                    t_total += (t2 - t1 - policy_s) + (t4 - t3)
                    bar.update(f"episode {k + 1}/{episodes}  step {step}  mode {out.mode.value:<12} "
                               f"interventions {summary.interventions + recorder.interventions}  "
                               f"successes {summary.successes}")
                    if terminated:
                        outcome = "success" if info.get("success") else "failure"
                        end_reason = "" if outcome == "success" else str(info.get("failure") or "")
                        break
                    if truncated:
                        end_reason = "time_limit"
                        break
                outcomes: list[str] = []
                if op is not None and hasattr(op, "end_episode"):
                    op.end_episode(outcome == "success")
                    outcomes = list(op.intervention_outcomes())
                record = recorder.finish(outcome, obs.stamp_ns, metadata={
                    "end_reason": end_reason, "intervention_outcomes": ",".join(outcomes)})
                summary.episodes.append(EpisodeSummary(k, ep_seed, record.path, outcome, record.steps,
                                                       record.human_steps, record.interventions,
                                                       end_reason, outcomes))
                bar.update(f"episode {k + 1}/{episodes} {outcome}"
                           f"{' (' + end_reason + ')' if end_reason else ''} after {step} steps, "
                           f"{record.interventions} interventions; successes "
                           f"{summary.successes}/{k + 1}", force=True)
    finally:
        recorder.close()
        env.close()
    summary.wall_s = time.perf_counter() - wall0
    summary.latency_ms = runner.latency_ms()
    summary.filter = safety.summary()
    summary.runner = {"empty_ticks": runner.empty_ticks, "discarded_chunks": runner.discarded,
                      **runner.queue.stats()}
    if n_steps:
        summary.timing_ms = {"policy": 1e3 * t_policy / n_steps, "sim": 1e3 * t_sim / n_steps,
                             "record": 1e3 * t_record / n_steps,
                             "runner_arbiter_overhead": 1e3 * t_total / n_steps}
    return summary
