"""The action queue between inference and control: which action runs at which control tick.

A chunk computed from the observation of tick k plans its action i for tick k + i. Inference takes
time, so the chunk arrives at a later tick k + d: its first d actions are already in the past and
are dropped (never shifted: an action runs at the tick it was planned for, or not at all), and the
rest is merged with what the queue still holds for those ticks by one of the rules

- ``replace``: the newer chunk wins (its plan saw a newer observation);
- ``ensemble``: ACT's temporal ensembling - every prediction for a tick is kept and the executed
  action is their weighted mean, weight exp(-m * i) for the i-th oldest (m = ``ensemble_decay``);
- ``crossfade``: over the overlap (or ``crossfade_steps`` ticks) the action moves linearly from
  the old plan to the new one, then follows the new chunk.
Both blends leave the gripper to the newest plan: it is an absolute open / close command, and a
blend of the two is a half-closed hand.

Safety: an action whose chunk was computed from an observation older than ``horizon_s`` is never
executed (counted ``expired``); a tick with nothing planned is zero motion for the caller (counted
``empty``); `flush()` forgets every plan (hot-swap, hand-back after a take-over).

No threads and no clock here: the caller names the tick (PolicyRunner counts them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from apo_ros.actions.space import GRIPPER_INDEX

MERGE_RULES: tuple[str, ...] = ("replace", "ensemble", "crossfade")

NS = 1_000_000_000


@dataclass
class QueueConfig:
    merge: str = "replace"  # how a new chunk joins the actions still queued (MERGE_RULES)
    horizon_s: float = 1.0  # actions planned from an observation older than this never execute
    ensemble_decay: float = 0.01  # ACT's m: weight exp(-m * i), i = 0 for the oldest prediction
    crossfade_steps: int = 0  # cross-fade length in ticks (0 = the whole overlap)

    def __post_init__(self) -> None:
        if self.merge not in MERGE_RULES:
            raise ValueError(f"merge must be one of {MERGE_RULES}, got {self.merge!r}")
        if not self.horizon_s > 0:
            raise ValueError(f"horizon_s must be > 0, got {self.horizon_s}")
        if self.ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {self.ensemble_decay}")
        if self.crossfade_steps < 0:
            raise ValueError(f"crossfade_steps must be >= 0, got {self.crossfade_steps}")


@dataclass
class Planned:
    """The action planned for one tick, and where it came from (the newest chunk that planned
    this tick: the observation it was computed from, its index there, its inference latency)."""

    tick: int
    action: np.ndarray  # (7,) after merging
    obs_stamp_ns: int
    chunk_index: int
    latency_ns: int
    merge: str  # "" when only one chunk planned this tick, else the rule that combined them
    predictions: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (action, obs stamp)


@dataclass
class MergeResult:
    late: int  # actions dropped because their tick had passed when the chunk arrived
    queued: int  # actions of the chunk now in the queue
    overlap: int  # of which replaced / blended an older plan


class ActionQueue:
    def __init__(self, config: QueueConfig | None = None):
        self.config = config or QueueConfig()
        self._plan: dict[int, Planned] = {}
        self.chunks = 0  # chunks merged
        self.late = 0  # actions dropped as already past on arrival
        self.expired = 0  # actions not executed because their chunk's observation was too old
        self.skipped = 0  # planned actions whose tick was never served (a missed observation)
        self.flushed = 0  # actions forgotten by flush()

    def __len__(self) -> int:
        return len(self._plan)

    def remaining(self, tick: int) -> int:
        """Planned actions for this tick and later."""
        return sum(t >= tick for t in self._plan)

    def last_tick(self) -> int | None:
        return max(self._plan) if self._plan else None

    def merge(self, chunk: np.ndarray, obs_tick: int, obs_stamp_ns: int, now_tick: int,
              latency_ns: int = 0) -> MergeResult:
        """Add a chunk computed from the observation of `obs_tick`, arriving at `now_tick`."""
        chunk = np.asarray(chunk, dtype=np.float64)
        late = max(0, now_tick - obs_tick)
        late = min(late, len(chunk))
        self.late += late
        self.chunks += 1
        cfg = self.config
        overlap_ticks = [obs_tick + i for i in range(late, len(chunk)) if obs_tick + i in self._plan]
        fade = cfg.crossfade_steps or len(overlap_ticks)
        new_plan: dict[int, Planned] = {}
        for i in range(late, len(chunk)):
            tick = obs_tick + i
            action = chunk[i].copy()
            old = self._plan.get(tick)
            entry = Planned(tick, action, int(obs_stamp_ns), i, int(latency_ns), "",
                            [(action.copy(), int(obs_stamp_ns))])
            if old is not None and cfg.merge != "replace":
                j = overlap_ticks.index(tick)
                if cfg.merge == "ensemble":
                    entry.predictions = old.predictions + entry.predictions
                    entry.action = self._ensemble(entry.predictions)
                elif j < fade:  # crossfade: linear from the old plan to the new over `fade` ticks
                    alpha = (j + 1) / (fade + 1)
                    entry.action = (1.0 - alpha) * old.action + alpha * action
                # the gripper is an absolute open / close command: a blend of "open" and "close"
                # is a half-closed hand that drops the object, so the newest plan decides it
                entry.action[GRIPPER_INDEX] = action[GRIPPER_INDEX]
                entry.merge = cfg.merge
            elif old is not None:
                entry.merge = "replace"
            new_plan[tick] = entry
        if new_plan:
            # What the new chunk does not cover (an old plan reaching further) is dropped: a
            # newer plan replaces the old one from its first tick on.
            first = obs_tick + late
            self._plan = {t: p for t, p in self._plan.items() if now_tick <= t < first}
            self._plan.update(new_plan)
        return MergeResult(late, len(new_plan), len(overlap_ticks))

    def _ensemble(self, predictions: list[tuple[np.ndarray, int]]) -> np.ndarray:
        w = np.exp(-self.config.ensemble_decay * np.arange(len(predictions)))
        values = np.stack([p for p, _ in predictions])
        out = (w[:, None] * values).sum(axis=0) / w.sum()
        out[GRIPPER_INDEX] = values[-1, GRIPPER_INDEX]  # the newest plan decides the gripper
        return out

    def take(self, tick: int, now_ns: int | None = None) -> Planned | None:
        """The action planned for `tick` (removed), or None: nothing planned, or planned from an
        observation older than the horizon at `now_ns`. Plans for earlier ticks are dropped."""
        for t in [t for t in self._plan if t < tick]:
            del self._plan[t]
            self.skipped += 1
        entry = self._plan.pop(tick, None)
        if entry is None or now_ns is None:
            return entry
        horizon_ns = int(self.config.horizon_s * NS)
        if entry.merge == "ensemble":  # drop the stale predictions, keep the fresh ones
            fresh = [(a, s) for a, s in entry.predictions if now_ns - s <= horizon_ns]
            if len(fresh) < len(entry.predictions) and fresh:
                entry.predictions = fresh
                entry.action = self._ensemble(fresh)
        if now_ns - entry.obs_stamp_ns > horizon_ns:
            self.expired += 1
            return None
        return entry

    def flush(self) -> int:
        """Forget every planned action; returns how many."""
        n = len(self._plan)
        self._plan.clear()
        self.flushed += n
        return n

    def stats(self) -> dict[str, int]:
        return {"chunks": self.chunks, "late": self.late, "expired": self.expired,
                "skipped": self.skipped, "flushed": self.flushed, "queued": len(self._plan)}
