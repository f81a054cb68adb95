"""Action normalization statistics in OpenVLA's `dataset_statistics.json` layout.

The file is keyed by dataset name: `{name: {"action": {"mean", "std", "max", "min", "q01",
"q99", "mask"}, "proprio": {...}, "num_transitions", "num_trajectories"}}`. Dimensions whose mask
is True map [q01, q99] linearly to [-1, 1] (clipped); the others (the gripper) pass through.
OpenVLA checkpoints ship exactly this file, so their statistics load with `load_statistics`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields

import numpy as np

from apo_ros.actions.space import NORMALIZE_MASK
from apo_ros.config import parse_config
from apo_ros.errors import ConfigError

STATISTICS_FILENAME = "dataset_statistics.json"


@dataclass
class _ActionEntry:
    """The "action" object of one dataset in dataset_statistics.json, as written."""

    q01: list[float]
    q99: list[float]
    mask: list[bool] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    min: list[float] | None = None
    max: list[float] | None = None


@dataclass
class _DatasetEntry:
    """One dataset in dataset_statistics.json (other keys, e.g. "proprio", are kept aside)."""

    action: _ActionEntry
    num_transitions: int = 0
    num_trajectories: int = 0


@dataclass
class ActionStatistics:
    """Per-dimension statistics of the actions of one dataset."""

    q01: np.ndarray  # (D,) 1st percentile: maps to -1
    q99: np.ndarray  # (D,) 99th percentile: maps to +1
    mask: np.ndarray  # (D,) bool: True = normalize this dimension, False = pass through
    mean: np.ndarray | None = None  # (D,) informational
    std: np.ndarray | None = None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    num_transitions: int = 0
    num_trajectories: int = 0
    extra: dict = field(default_factory=dict)  # other top-level keys (e.g. "proprio"), kept as-is

    def __post_init__(self) -> None:
        self.q01 = np.asarray(self.q01, dtype=np.float64)
        self.q99 = np.asarray(self.q99, dtype=np.float64)
        self.mask = np.asarray(self.mask, dtype=bool)
        for name in ("mean", "std", "min", "max"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=np.float64))
        if not (self.q01.shape == self.q99.shape == self.mask.shape) or self.q01.ndim != 1:
            raise ValueError(
                f"statistics q01/q99/mask must be 1-D of one length, got {self.q01.shape}, "
                f"{self.q99.shape}, {self.mask.shape}")

    @property
    def dim(self) -> int:
        return int(self.q01.shape[0])

    @classmethod
    def from_actions(cls, actions, mask=NORMALIZE_MASK, *, num_trajectories: int = 0) -> ActionStatistics:
        """Compute statistics from an (N, D) array of raw actions (N >= 1)."""
        a = np.asarray(actions, dtype=np.float64).reshape(-1, len(mask))
        if a.shape[0] == 0:
            raise ValueError("cannot compute action statistics from zero actions")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or Inf; refusing to compute statistics")
        return cls(
            q01=np.quantile(a, 0.01, axis=0),
            q99=np.quantile(a, 0.99, axis=0),
            mask=np.asarray(mask, dtype=bool),
            mean=a.mean(0), std=a.std(0), min=a.min(0), max=a.max(0),
            num_transitions=int(a.shape[0]), num_trajectories=int(num_trajectories),
        )

    def _span(self) -> np.ndarray:
        # A constant dimension (q99 == q01) would divide by zero; it normalizes to 0 instead.
        return np.where(self.q99 - self.q01 > 1e-8, self.q99 - self.q01, 1.0)

    def normalize(self, actions) -> np.ndarray:
        """Raw -> normalized: masked dims to [-1, 1] (clipped), others unchanged."""
        a = np.asarray(actions, dtype=np.float64)
        scaled = np.clip(2.0 * (a - self.q01) / self._span() - 1.0, -1.0, 1.0)
        scaled = np.where(self.q99 - self.q01 > 1e-8, scaled, 0.0)
        return np.where(self.mask, scaled, a)

    def unnormalize(self, actions) -> np.ndarray:
        """Normalized -> raw (OpenVLA's rule: 0.5 * (x + 1) * (q99 - q01) + q01 on masked dims)."""
        a = np.asarray(actions, dtype=np.float64)
        raw = 0.5 * (a + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.mask, raw, a)

    def to_dict(self) -> dict:
        action = {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}
        for name in ("mean", "std", "min", "max"):
            value = getattr(self, name)
            if value is not None:
                action[name] = value.tolist()
        out = dict(self.extra)
        out.update({"action": action, "num_transitions": self.num_transitions,
                    "num_trajectories": self.num_trajectories})
        return out

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "statistics") -> ActionStatistics:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected an object with an 'action' entry, got {type(d).__name__}")
        if "action" not in d:
            raise ConfigError(f"{source}: no 'action' entry (keys: {sorted(d)})")
        action = d["action"]
        if not isinstance(action, dict):
            raise ConfigError(f"{source}: 'action' must be an object with q01/q99/mask lists")
        missing = [k for k in ("q01", "q99") if k not in action]
        if missing:
            raise ConfigError(f"{source}: action statistics lack {missing}")
        extra = {k: v for k, v in d.items() if k not in ("action", "num_transitions", "num_trajectories")}
        counts = {k: d[k] for k in ("num_transitions", "num_trajectories") if d.get(k) is not None}
        known = {f.name for f in fields(_ActionEntry)}
        try:
            entry = parse_config(_DatasetEntry, source=source, overrides={
                "action": {k: v for k, v in action.items() if k in known}, **counts})
            a = entry.action
            # OpenVLA files always carry the mask; without one, the last dim (gripper) passes through.
            mask = a.mask if a.mask is not None else [True] * (len(a.q01) - 1) + [False]
            stats = cls(q01=a.q01, q99=a.q99, mask=mask, mean=a.mean, std=a.std, min=a.min, max=a.max,
                        num_transitions=entry.num_transitions, num_trajectories=entry.num_trajectories,
                        extra=extra)
        except (TypeError, ValueError) as err:
            detail = str(err).removeprefix(f"{source}: ")
            raise ConfigError(f"{source}: malformed action statistics ({detail})") from None
        if not (np.isfinite(stats.q01).all() and np.isfinite(stats.q99).all()):
            raise ConfigError(f"{source}: q01/q99 contain NaN or Inf")
        return stats

    def statistics_id(self) -> str:
        """A short content hash: bags record which statistics their actions were normalized with."""
        payload = json.dumps({"q01": self.q01.round(9).tolist(), "q99": self.q99.round(9).tolist(),
                              "mask": self.mask.tolist()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def save_statistics(path: str, stats: dict[str, ActionStatistics] | ActionStatistics,
                    name: str = "apo_ros") -> str:
    """Write `dataset_statistics.json` (path is the file or its directory). Returns the file."""
    if os.path.isdir(path):
        path = os.path.join(path, STATISTICS_FILENAME)
    if isinstance(stats, ActionStatistics):
        stats = {name: stats}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({k: v.to_dict() for k, v in stats.items()}, f, indent=2)
    os.replace(tmp, path)
    return path


def load_statistics(path: str, name: str | None = None) -> ActionStatistics:
    """Read one dataset's statistics from an OpenVLA-layout JSON file (path: file or directory).
    With several datasets in the file, `name` picks one (OpenVLA's `unnorm_key`)."""
    if os.path.isdir(path):
        path = os.path.join(path, STATISTICS_FILENAME)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no action statistics file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected an object keyed by dataset name")
    if "action" in data:  # a bare (unkeyed) entry
        return ActionStatistics.from_dict(data, source=path)
    if name is None:
        if len(data) != 1:
            raise ConfigError(f"{path}: holds datasets {sorted(data)}; choose one by name")
        name = next(iter(data))
    if name not in data:
        raise ConfigError(f"{path}: no dataset {name!r} (has {sorted(data)})")
    return ActionStatistics.from_dict(data[name], source=f"{path}[{name}]")

