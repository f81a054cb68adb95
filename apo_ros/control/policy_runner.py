"""Runs a policy on the live observation stream and turns its chunks into safe, stamped actions.

Inference and control are decoupled by an `ActionQueue` (apo_ros.control.action_queue): every
`step(observation)` is one control tick, and takes the action the queue planned for that tick.
1. a pending hot-swap is applied (between ticks, never inside one): the queue is flushed;
2. finished inference results are merged into the queue (a chunk from the observation of tick k
   arriving at tick k + d loses its first d actions, and the rest is merged by the merge rule);
3. a new chunk is requested from this observation when the queue runs low (`execution`):
   "sync" asks only when the queue is empty and the arm waits (zero motion) until the chunk is
   there, then runs it from its first action; "async" asks when at most `refill_steps` (or
   `refill_s`) actions remain, so inference runs beside control and a slow policy delays the next
   chunk, never the current tick;
4. the action for this tick goes through the SafetyFilter with the arm's CURRENT state
   (end-effector position, gripper, observation age). A rejected action (NaN / Inf, a failed
   decode, a stale observation) becomes zero motion and the queue is flushed; a tick with nothing
   planned is zero motion too (`empty`, counted in `empty_ticks`);
5. the action carries its provenance: the observation its chunk was computed from, its index in
   the chunk, the chunk's inference latency and the merge rule.

Inference runs in `step()` itself (the in-process session, `sim eval`: deterministic, with
`delay_ticks` of simulated latency) or in a background thread (`background=True`: policy_node).
Nothing the policy emits reaches the arm without passing the filter.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apo_ros.actions.safety import FilterResult, SafetyFilter, zero_action
from apo_ros.actions.space import ACTION_DIM
from apo_ros.control.action_queue import MERGE_RULES, ActionQueue, Planned, QueueConfig
from apo_ros.control.policy_source import ActionSource, provenance
from apo_ros.observation import Observation

EXECUTIONS: tuple[str, ...] = ("sync", "async")


@dataclass
class RunnerConfig:
    rate_hz: float = 10.0  # control rate: ticks per second
    replan_every: int = 0  # after this many actions of a chunk (0 = whole chunks)
    latency_window: int = 2048  # most recent inference times kept for p50 / p99
    check_age: bool = True  # pass the observation's age to the filter (needs now_ns in step())
    execution: str = "async"  # "sync" | "async" (see the module docstring)
    # async: ask for the next chunk when at most this many actions remain queued; -1 = auto (the
    # recent inference latency in ticks, so the next chunk lands as the queue runs out)
    refill_steps: int = -1
    refill_s: float = 0.0  # the same threshold in seconds (the larger of the two applies)
    merge: str = "replace"  # replace | ensemble | crossfade (apo_ros.control.action_queue)
    horizon_s: float = 1.0  # actions planned from an observation older than this never run
    ensemble_decay: float = 0.01  # ensemble: ACT's weight exp(-m * i)
    crossfade_steps: int = 0  # crossfade: ticks to fade over (0 = the whole overlap)
    delay_ticks: int = 0  # simulated inference latency in ticks (in-step inference only)
    background: bool = False  # run inference in a background thread (else inside step())

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError(f"RunnerConfig.rate_hz must be > 0, got {self.rate_hz}")
        if self.replan_every < 0:
            raise ValueError(f"RunnerConfig.replan_every must be >= 0, got {self.replan_every}")
        if self.execution not in EXECUTIONS:
            raise ValueError(f"RunnerConfig.execution must be one of {EXECUTIONS}, "
                             f"got {self.execution!r}")
        if self.merge not in MERGE_RULES:
            raise ValueError(f"RunnerConfig.merge must be one of {MERGE_RULES}, got {self.merge!r}")
        if self.refill_steps < -1 or self.refill_s < 0 or self.delay_ticks < 0:
            raise ValueError("RunnerConfig.refill_steps must be >= -1, refill_s and delay_ticks >= 0")
        if self.background and self.delay_ticks:
            raise ValueError("RunnerConfig.delay_ticks simulates latency for in-step inference; "
                             "a background thread has real latency")

    @classmethod
    def from_parameters(cls, params: dict[str, Any], **overrides: Any) -> RunnerConfig:
        """From a node's parameters (the fields present in `params`, then `overrides`)."""
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in params.items() if k in names}
        values.update(overrides)
        return cls(**values)

    def queue_config(self) -> QueueConfig:
        return QueueConfig(self.merge, self.horizon_s, self.ensemble_decay, self.crossfade_steps)


@dataclass
class RunnerStep:
    action: np.ndarray  # (7,) safe raw action to send
    proposed: np.ndarray  # (7,) what the policy planned for this tick (NaN when nothing)
    ok: bool  # False when the proposal was rejected or nothing was planned (action: zero motion)
    obs_stamp_ns: int  # stamp of the observation the chunk was computed from
    planned: bool  # True when a chunk joined the queue at this tick
    chunk_index: int  # position of this action in its chunk
    reasons: list[str] = field(default_factory=list)  # why the filter acted ("decode_failed" too)
    policy_id: str = ""  # which policy produced it (changes on hot-swap)
    inference_ns: int = 0  # time spent in the policy inside this step (0 in the background)
    empty: bool = False  # nothing was planned for this tick (zero motion, not a policy action)
    latency_ns: int = 0  # inference latency of this action's chunk (observation -> chunk ready)
    merge: str = ""  # the rule that combined chunks for this action ("" = one chunk planned it)
    tick_stamp_ns: int = 0  # the observation of the tick this action is for
    tick: int = 0  # the runner's tick counter
    tokens: np.ndarray | None = None  # the token ids the policy produced for `proposed`, if it names them
    token_space: str = ""  # what those ids mean (TokenPolicy.action_token_space)


@dataclass
class _Result:
    chunk: np.ndarray
    ok: bool
    error: str
    reason: str
    obs_stamp_ns: int
    obs_tick: int
    ready_tick: int  # in-step inference: the tick it is delivered at (simulated latency)
    compute_ns: int
    latency_ns: int
    generation: int
    policy_id: str


class PolicyRunner:
    def __init__(self, policy: ActionSource, safety_filter: SafetyFilter | None,
                 config: RunnerConfig | None = None, policy_id: str = ""):
        # safety_filter None: actions pass unfiltered (only NaN / Inf become zero motion) - for
        # evaluating a policy in simulation, never for an arm
        self.config = config or RunnerConfig()
        self.safety = safety_filter
        self.policy = policy
        self.policy_id = policy_id
        self.queue = ActionQueue(self.config.queue_config())
        self._lock = threading.Lock()  # requests from other threads, results from the worker
        self._policy_lock = threading.Lock()  # held while the policy runs or resets
        self._pending: tuple[ActionSource, str] | None = None
        self._replan_requested = False
        self._results: list[_Result] = []
        self._in_flight = False
        self._job: tuple[Observation, int, int] | None = None
        self._worker: threading.Thread | None = None
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._generation = 0
        self._not_before_ns = 0  # chunks must come from observations at least this new
        self._tick = -1
        self._tick_stamp = 0
        self._tick_served = True
        self._observation: Observation | None = None
        self._now_ns: int | None = None
        self._chunk_actions = 0  # actions run from the newest chunk (sync replan_every)
        self._failure: tuple[str, str] | None = None  # (reason, error) of a failed chunk
        # token ids of the newest chunks, by their observation stamp: a queued action that one
        # chunk alone planned (no blend) is recorded with the ids that chunk produced for it
        self._chunk_tokens: dict[int, tuple[np.ndarray, str]] = {}
        self._latencies_ns: deque[int] = deque(maxlen=self.config.latency_window)
        self._wall_latency_ns: deque[int] = deque(maxlen=16)
        self._active = True
        self._resume_after_ns: int | None = None
        self.on_result: Any = None  # called (no arguments) from the worker when a chunk is ready
        self.steps = 0
        self.plans = 0
        self.swaps = 0
        self.decode_failures = 0
        self.empty_ticks = 0  # ticks that ended with nothing planned (zero motion)
        self.discarded = 0  # chunks dropped on arrival (flushed or swapped away meanwhile)

    # ---- control from other threads ----------------------------------------------------------
    def swap_policy(self, policy: ActionSource, policy_id: str = "") -> None:
        """Use `policy` from the next step on (thread-safe; the loop never stops)."""
        with self._lock:
            self._pending = (policy, policy_id)

    def request_replan(self) -> None:
        """Ask for a new chunk at the next step even if the queue is not low."""
        with self._lock:
            self._replan_requested = True

    def flush(self, not_before_ns: int = 0) -> None:
        """Forget every queued action and every chunk still being computed; the next chunk must
        come from an observation stamped at or after `not_before_ns` (hand-back after a
        take-over: the first policy action comes from an observation taken after it)."""
        with self._lock:
            self._forget_plans()
            self._not_before_ns = max(self._not_before_ns, int(not_before_ns))

    def _forget_plans(self) -> None:
        """Drop the queue and every chunk in flight (a chunk still being computed comes back with
        an old generation and is discarded). Called with the lock held."""
        self._generation += 1
        self._results.clear()
        if not self.config.background:
            self._in_flight = False  # in-step results were all pending ones; none left
        self.queue.flush()
        self._failure = None

    def reset(self) -> None:
        """New episode: drop the queue and clear the policy's state."""
        with self._lock:
            self._forget_plans()
            self._replan_requested = False
            self._not_before_ns = 0
            self._tick, self._tick_stamp, self._tick_served = -1, 0, True
        with self._policy_lock:  # not while the worker is inside the policy
            self.policy.reset()

    def close(self) -> None:
        """Stop the background worker (if any)."""
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)

    def set_active(self, active: bool, now_ns: int) -> None:
        """Whether the policy drives (the arbiter's mode is autonomous). Inactive, `tick()` does
        nothing; becoming active again (a hand-back) flushes the queue and the first chunk must
        come from an observation stamped at or after `now_ns`. Thread-safe."""
        with self._lock:
            if active and not self._active:
                self._resume_after_ns = int(now_ns)
            self._active = bool(active)

    def tick(self, observation: Observation | None, now_ns: int) -> RunnerStep | None:
        """An event-driven caller's loop (policy_node): a new observation is a new tick
        (`step`), None retries the current tick (`retry`: a chunk may have landed). Returns the
        step to publish, or None (inactive, or nothing planned)."""
        with self._lock:
            resume, self._resume_after_ns = self._resume_after_ns, None
            active = self._active
        if resume is not None:
            self.flush(not_before_ns=resume)
        if not active:
            self._tick_served = True  # nothing to serve while the operator drives
            return None
        step = self.step(observation, now_ns) if observation is not None else self.retry(now_ns)
        return None if step is None or step.empty else step

    # ---- the loop ----------------------------------------------------------------------------
    def _take_pending(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, None
            replan, self._replan_requested = self._replan_requested, False
        if pending is not None:
            with self._lock:
                self._generation += 1
                self._results.clear()
            if not self.config.background:
                self._in_flight = False  # in-step results were all pending ones; none left
                self.queue.flush()
                self._failure = None
            # the new policy is reset before anyone uses it; a chunk the old one is still
            # computing comes back with the old generation and is discarded (no waiting here)
            pending[0].reset()
            self.policy, self.policy_id = pending
            self.swaps += 1
            replan = True
        return replan

    def _advance(self, stamp_ns: int) -> int:
        """Tick number of a new observation: +1 per observation, more when the stamps say
        observations were missed (so late chunks drop the right number of actions)."""
        if not self._tick_served:
            self.empty_ticks += 1
        if self._tick < 0:
            self._tick = 0
        else:
            period_ns = 1e9 / self.config.rate_hz
            gap = (int(stamp_ns) - self._tick_stamp) / period_ns
            self._tick += max(1, int(round(gap))) if gap > 1.5 else 1
        self._tick_stamp = int(stamp_ns)
        self._tick_served = False
        return self._tick

    def _run_policy(self, observation: Observation) -> tuple[np.ndarray, bool, str, str, int, str]:
        t0 = time.perf_counter_ns()
        with self._policy_lock:
            policy = self.policy
            try:
                chunk, ok, tokens, space = _select(policy, observation)
                chunk = np.asarray(chunk, dtype=np.float64)
                if chunk.ndim == 1:
                    chunk = chunk[None, :]
                if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM or len(chunk) == 0:
                    raise ValueError(f"the policy returned actions of shape {chunk.shape}, "
                                     f"expected (n, {ACTION_DIM})")
                error = ""
                if tokens is not None and len(tokens) != len(chunk):
                    tokens = None  # ids that do not cover the chunk action by action are not recorded
            except Exception as err:  # noqa: BLE001 - any policy code: stop the arm, not the loop
                # A policy that crashes on one observation stops the arm, not the loop; the cause
                # travels with the step so the caller can log it.
                chunk, ok, tokens, space = np.full((1, ACTION_DIM), np.nan), False, None, ""
                error = f"{type(err).__name__}: {err}"
            # A remote policy says why it failed ("policy_unavailable") and which policy answered
            # (the server may hot-swap); a local one has neither.
            reason = str(getattr(policy, "failure_reason", "") or "decode_failed")
            pid = ""
            if getattr(policy, "reports_policy_id", False) and getattr(policy, "policy_id", ""):
                pid = str(policy.policy_id)
        if tokens is not None:
            with self._lock:
                self._chunk_tokens[int(observation.stamp_ns)] = (tokens, space)
                while len(self._chunk_tokens) > 8:
                    self._chunk_tokens.pop(next(iter(self._chunk_tokens)))
        return chunk, bool(ok), error, reason, time.perf_counter_ns() - t0, pid

    def _request(self, observation: Observation, tick: int) -> int:
        """Start inference on `observation`; returns the time spent here (in-step inference)."""
        self.plans += 1
        if self.config.background:
            with self._lock:
                self._job = (observation, tick, self._generation)
                self._in_flight = True
                if self._worker is None:
                    self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
                    self._worker.start()
                self._wake.notify_all()
            return 0
        chunk, ok, error, reason, compute_ns, pid = self._run_policy(observation)
        self._latencies_ns.append(compute_ns)
        delay = self.config.delay_ticks
        latency_ns = int(delay * 1e9 / self.config.rate_hz) if delay else compute_ns
        with self._lock:
            self._results.append(_Result(chunk, ok, error, reason, int(observation.stamp_ns), tick,
                                         tick + delay, compute_ns, latency_ns, self._generation, pid))
            self._in_flight = True
        return compute_ns

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._job is None and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                assert self._job is not None
                observation, tick, generation = self._job
                self._job = None
            chunk, ok, error, reason, compute_ns, pid = self._run_policy(observation)
            self._latencies_ns.append(compute_ns)
            # observation -> chunk ready, on the caller's clock when it gave one (ROS time)
            latency_ns = compute_ns
            if self._now_ns is not None and observation.stamp_ns > 0:
                latency_ns = max(compute_ns, time.time_ns() - int(observation.stamp_ns)) \
                    if abs(time.time_ns() - self._now_ns) < 10**9 else compute_ns
            self._wall_latency_ns.append(latency_ns)
            with self._lock:
                self._results.append(_Result(chunk, ok, error, reason, int(observation.stamp_ns),
                                             tick, tick, compute_ns, latency_ns, generation, pid))
                self._in_flight = False
            callback = self.on_result
            if callback is not None:
                callback()

    def _deliver(self, tick: int) -> bool:
        """Merge the results that are due at this tick; True when a chunk joined the queue."""
        with self._lock:
            due = [r for r in self._results if r.ready_tick <= tick]
            self._results = [r for r in self._results if r.ready_tick > tick]
            generation, not_before = self._generation, self._not_before_ns
            if not self.config.background and due:
                self._in_flight = bool(self._results)
        merged = False
        for r in due:
            if r.generation != generation or r.obs_stamp_ns < not_before:
                self.discarded += 1
                continue
            if r.policy_id:
                self.policy_id = r.policy_id
            if not r.ok:
                self.queue.flush()
                self._failure = (r.reason, r.error)
                continue
            self._failure = None
            if self.config.execution == "sync":
                # the arm waited for this chunk: it runs from its first action on
                self.queue.flush()
                self.queue.merge(r.chunk, tick, r.obs_stamp_ns, tick, r.latency_ns)
            else:
                self.queue.merge(r.chunk, r.obs_tick, r.obs_stamp_ns, tick, r.latency_ns)
            self._chunk_actions = 0
            merged = True
        return merged

    def refill_threshold(self) -> int:
        """Async: a new chunk is asked for when at most this many actions remain queued."""
        cfg = self.config
        steps = cfg.refill_steps
        if steps < 0:  # auto: the inference latency in ticks
            if cfg.background:
                lat = max(self._wall_latency_ns, default=0)
                steps = int(math.ceil(lat * cfg.rate_hz / 1e9)) if lat else 0
            else:
                steps = cfg.delay_ticks
        return max(steps, int(math.ceil(cfg.refill_s * cfg.rate_hz - 1e-9)))

    def _should_request(self, observation: Observation, tick: int, replan: bool) -> bool:
        with self._lock:
            if self._in_flight or observation.stamp_ns < self._not_before_ns:
                return False
        remaining = self.queue.remaining(tick)
        every = self.config.replan_every
        if replan or remaining == 0 or (every > 0 and self._chunk_actions >= every):
            return True
        return self.config.execution == "async" and remaining <= self.refill_threshold()

    def step(self, observation: Observation, now_ns: int | None = None, *,
             again: bool = False) -> RunnerStep:
        """One control tick. `again=True` decides the current tick once more (after `flush()`,
        e.g. at a hand-back) instead of starting a new one."""
        replan = self._take_pending()
        if again and self._tick >= 0:
            tick, self._tick_served = self._tick, False
        else:
            tick = self._advance(observation.stamp_ns)
        self._observation, self._now_ns = observation, now_ns
        planned = self._deliver(tick)
        inference_ns = 0
        if self._should_request(observation, tick, replan):
            inference_ns = self._request(observation, tick)
            planned = self._deliver(tick) or planned
        self.steps += 1
        return self._serve(observation, tick, now_ns, planned, inference_ns)

    def retry(self, now_ns: int | None = None) -> RunnerStep | None:
        """Background inference: a chunk that finished after this tick began may still cover it.
        Returns the tick's step when it is now served, None when there is still nothing (or the
        tick was served already)."""
        observation = self._observation
        if observation is None or self._tick_served:
            return None
        tick = self._tick
        if not self._deliver(tick) and self._failure is None:
            return None
        step = self._serve(observation, tick, now_ns, True, 0)
        return None if step.empty else step

    def _serve(self, observation: Observation, tick: int, now_ns: int | None, planned: bool,
               inference_ns: int) -> RunnerStep:
        hold = zero_action(_hold(observation.gripper))
        nan = np.full(ACTION_DIM, np.nan)
        if self._failure is not None:
            reason, error = self._failure
            self._failure = None
            self._tick_served = True
            self.decode_failures += 1
            reasons = [reason] + ([f"policy_error: {error}"] if error else [])
            return RunnerStep(hold, nan, False, observation.stamp_ns, planned, 0, reasons,
                              self.policy_id, inference_ns, tick_stamp_ns=observation.stamp_ns,
                              tick=tick)
        clock = now_ns if now_ns is not None else int(observation.stamp_ns)
        entry: Planned | None = self.queue.take(tick, clock)
        if entry is None:
            return RunnerStep(hold, nan, False, 0, planned, 0, ["queue_empty"], self.policy_id,
                              inference_ns, empty=True, tick_stamp_ns=observation.stamp_ns, tick=tick)
        self._tick_served = True
        self._chunk_actions += 1
        age_s = None
        if self.config.check_age and now_ns is not None:
            age_s = (now_ns - observation.stamp_ns) / 1e9
        ee = np.asarray(observation.ee_pose, dtype=np.float64)[:3]
        proposed = entry.action.copy()
        if self.safety is not None:
            result = self.safety.filter(proposed, ee, observation.gripper, age_s=age_s)
        elif np.all(np.isfinite(proposed)):
            result = FilterResult(proposed.copy(), True, [])
        else:
            result = FilterResult(hold, False, ["nan"])
        if not result.ok:
            self.queue.flush()  # never continue a plan that produced a rejected action
        tokens, space = None, ""
        if not entry.merge:  # a blend of chunks is no output the policy produced
            with self._lock:
                ids, space = self._chunk_tokens.get(int(entry.obs_stamp_ns), (None, ""))
            if ids is not None and 0 <= entry.chunk_index < len(ids):
                tokens = ids[entry.chunk_index]
            else:
                space = ""
        return RunnerStep(result.action, proposed, result.ok, entry.obs_stamp_ns, planned,
                          entry.chunk_index, list(result.reasons), self.policy_id, inference_ns,
                          latency_ns=entry.latency_ns, merge=entry.merge,
                          tick_stamp_ns=int(observation.stamp_ns), tick=tick, tokens=tokens,
                          token_space=space)

    # ---- figures -----------------------------------------------------------------------------
    def latency_ms(self) -> dict[str, float]:
        if not self._latencies_ns:
            return {"p50": float("nan"), "p99": float("nan"), "n": 0}
        arr = np.asarray(self._latencies_ns, dtype=np.float64) / 1e6
        return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
                "n": int(arr.size)}

    def provenance(self) -> dict[str, str]:
        return provenance(self.policy, self.policy_id)

    def stats(self) -> dict[str, Any]:
        return {"steps": self.steps, "plans": self.plans, "swaps": self.swaps,
                "decode_failures": self.decode_failures, "empty_ticks": self.empty_ticks,
                "discarded_chunks": self.discarded, "queue": self.queue.stats(),
                "latency_ms": self.latency_ms(),
                "filter": self.safety.summary() if self.safety is not None else {},
                "policy_id": self.policy_id}


def _select(policy: Any, observation: Observation) -> tuple[Any, bool, np.ndarray | None, str]:
    """(chunk, ok, token ids [T, per step] or None, token space): a TokenPolicy says which ids it
    produced (`select_action_with_tokens`); any other action source only gives actions."""
    space = policy.action_token_space() if hasattr(policy, "action_token_space") else None
    if space and hasattr(policy, "select_action_with_tokens"):
        chunk, ok, tokens = policy.select_action_with_tokens(observation)
        return chunk, ok, (None if tokens is None else np.asarray(tokens, dtype=np.int64).reshape(
            -1, np.asarray(tokens).shape[-1])), str(space)
    chunk, ok = policy.select_action(observation)
    return chunk, ok, None, ""


def _hold(gripper: float) -> float:
    g = float(gripper)
    return g if np.isfinite(g) else 1.0
