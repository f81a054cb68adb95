"""Runs a policy on the live observation stream and turns its chunks into safe, stamped actions.

One `step(observation)` per control step:
1. a pending hot-swap is applied (between steps, never inside one);
2. when the current chunk is used up (or `replan_every` actions ran, or a re-plan was requested),
   the policy predicts a new chunk from this observation;
3. the next action of the chunk goes through the SafetyFilter with the arm's CURRENT state
   (end-effector position, gripper, observation age). A rejected action (NaN / Inf, a failed
   decode, a stale observation) becomes zero motion, and the rest of its chunk is dropped;
4. the action is stamped with the observation its chunk was computed from.

Nothing the policy emits reaches the arm without passing the filter.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from apo_ros.actions.safety import FilterResult, SafetyFilter, zero_action
from apo_ros.actions.space import ACTION_DIM
from apo_ros.observation import Observation


class ActionSource(Protocol):
    """What the runner needs from a policy (TokenPolicy satisfies it; so do experts, see
    `apo_ros.runtime.session.ExpertPolicy`)."""

    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]: ...

    def reset(self) -> None: ...


@dataclass
class RunnerConfig:
    rate_hz: float = 10.0  # control rate: the node's timer period is 1 / rate_hz
    replan_every: int = 0  # re-plan after this many actions of a chunk (0 = execute whole chunks)
    latency_window: int = 2048  # most recent inference times kept for p50 / p99
    check_age: bool = True  # pass the observation's age to the filter (needs now_ns in step())

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError(f"RunnerConfig.rate_hz must be > 0, got {self.rate_hz}")
        if self.replan_every < 0:
            raise ValueError(f"RunnerConfig.replan_every must be >= 0, got {self.replan_every}")


@dataclass
class RunnerStep:
    action: np.ndarray  # (7,) safe raw action to send
    proposed: np.ndarray  # (7,) what the policy proposed for this step (may hold NaN)
    ok: bool  # False when the proposal was rejected (action is then zero motion)
    obs_stamp_ns: int  # stamp of the observation the chunk was computed from
    planned: bool  # True when the policy ran at this step
    chunk_index: int  # position of this action in its chunk
    reasons: list[str] = field(default_factory=list)  # why the filter acted ("decode_failed" too)
    policy_id: str = ""  # which policy produced it (changes on hot-swap)
    inference_ns: int = 0  # time spent in the policy at this step (0 when it did not plan)
    tokens: np.ndarray | None = None  # the token ids the policy produced for `proposed`, if it names them
    token_space: str = ""  # what those ids mean (TokenPolicy.action_token_space)


class PolicyRunner:
    def __init__(self, policy: ActionSource, safety_filter: SafetyFilter,
                 config: RunnerConfig | None = None, policy_id: str = ""):
        self.config = config or RunnerConfig()
        self.safety = safety_filter
        self.policy = policy
        self.policy_id = policy_id
        self._lock = threading.Lock()
        self._pending: tuple[ActionSource, str] | None = None
        self._replan_requested = False
        self._chunk: np.ndarray | None = None
        self._chunk_ok = True
        self._chunk_pos = 0
        self._chunk_obs_stamp = 0
        self._chunk_error = ""  # why the current chunk failed ("" when it did not)
        self._chunk_reason = "decode_failed"  # why a not-ok chunk is held
        self._chunk_tokens: np.ndarray | None = None  # [T, ids per step] the policy produced
        self._chunk_token_space = ""
        self._latencies_ns: deque[int] = deque(maxlen=self.config.latency_window)
        self.steps = 0
        self.plans = 0
        self.swaps = 0
        self.decode_failures = 0

    # ---- control from other threads ----------------------------------------------------------
    def swap_policy(self, policy: ActionSource, policy_id: str = "") -> None:
        """Use `policy` from the next step on (thread-safe; the loop never stops)."""
        with self._lock:
            self._pending = (policy, policy_id)

    def request_replan(self) -> None:
        with self._lock:
            self._replan_requested = True

    def reset(self) -> None:
        """New episode: drop the chunk and clear the policy's state."""
        with self._lock:
            self._chunk = None
            self._replan_requested = False
        self.policy.reset()

    # ---- the loop ----------------------------------------------------------------------------
    def _take_pending(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, None
            replan, self._replan_requested = self._replan_requested, False
        if pending is not None:
            self.policy, self.policy_id = pending
            self.policy.reset()
            self.swaps += 1
            replan = True
        return replan

    def _need_plan(self) -> bool:
        if self._chunk is None or self._chunk_pos >= len(self._chunk):
            return True
        every = self.config.replan_every
        return every > 0 and self._chunk_pos >= every

    def _plan(self, observation: Observation) -> int:
        t0 = time.perf_counter_ns()
        try:
            chunk, ok, tokens, space = _select(self.policy, observation)
            chunk = np.asarray(chunk, dtype=np.float64)
            if chunk.ndim == 1:
                chunk = chunk[None, :]
            if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM or len(chunk) == 0:
                raise ValueError(f"the policy returned actions of shape {chunk.shape}, "
                                 f"expected (n, {ACTION_DIM})")
            self._chunk_error = ""
        except Exception as err:  # noqa: BLE001 - any policy code: stop the arm, not the loop
            # A policy that crashes on one observation stops the arm for this step, not the loop;
            # the cause travels with the step so the caller can log it.
            chunk, ok, tokens, space = np.full((1, ACTION_DIM), np.nan), False, None, ""
            self._chunk_error = f"{type(err).__name__}: {err}"
        if tokens is not None and len(tokens) != len(chunk):
            tokens = None  # ids that do not cover the chunk action by action are not recorded
        self._chunk_tokens, self._chunk_token_space = tokens, space
        # A remote policy says why it failed ("policy_unavailable") and which policy answered
        # (the server may hot-swap); a local one has neither and keeps the id it was given.
        self._chunk_reason = str(getattr(self.policy, "failure_reason", "") or "decode_failed")
        if getattr(self.policy, "reports_policy_id", False) and getattr(self.policy, "policy_id", ""):
            self.policy_id = str(self.policy.policy_id)
        elapsed = time.perf_counter_ns() - t0
        self._latencies_ns.append(elapsed)
        self._chunk, self._chunk_ok, self._chunk_pos = chunk, bool(ok), 0
        self._chunk_obs_stamp = int(observation.stamp_ns)
        self.plans += 1
        return elapsed

    def step(self, observation: Observation, now_ns: int | None = None) -> RunnerStep:
        replan = self._take_pending()
        planned = False
        inference_ns = 0
        if replan or self._need_plan():
            inference_ns = self._plan(observation)
            planned = True
        assert self._chunk is not None
        index = self._chunk_pos
        proposed = self._chunk[index].copy()
        self._chunk_pos += 1
        age_s = None
        if self.config.check_age and now_ns is not None:
            age_s = (now_ns - observation.stamp_ns) / 1e9
        ee = np.asarray(observation.ee_pose, dtype=np.float64)[:3]
        if self._chunk_ok:
            result = self.safety.filter(proposed, ee, observation.gripper, age_s=age_s)
        else:
            self.decode_failures += 1
            reasons = [self._chunk_reason] + ([f"policy_error: {self._chunk_error}"]
                                              if self._chunk_error else [])
            result = FilterResult(zero_action(_hold(observation.gripper)), False, reasons)
        if not result.ok:
            self._chunk = None  # never continue a chunk that produced a rejected action
        self.steps += 1
        tokens = None if self._chunk_tokens is None else self._chunk_tokens[index]
        return RunnerStep(result.action, proposed, result.ok, self._chunk_obs_stamp, planned, index,
                          list(result.reasons), self.policy_id, inference_ns, tokens,
                          self._chunk_token_space if tokens is not None else "")

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
                "decode_failures": self.decode_failures, "latency_ms": self.latency_ms(),
                "filter": self.safety.summary(), "policy_id": self.policy_id}


def provenance(policy: Any, policy_id: str) -> dict[str, str]:
    """What a bag records about the policy that acted: its content-hash id and the id of its
    action statistics ("" for a policy without statistics, e.g. the scripted expert). The
    in-process session and the ROS graph both write exactly this. A policy server's ids (a
    `RemotePolicy`: `reports_policy_id`, a `statistics_id` string) are the ones it last reported,
    so they follow a hot-swap on the server."""
    stats_id = getattr(policy, "statistics_id", None)
    if not isinstance(stats_id, str):
        stats = getattr(policy, "stats", None)
        stats_id = stats.statistics_id() if hasattr(stats, "statistics_id") else ""
    if getattr(policy, "reports_policy_id", False) and getattr(policy, "policy_id", ""):
        policy_id = policy.policy_id
    return {"policy_id": str(policy_id), "stats_id": str(stats_id)}


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
