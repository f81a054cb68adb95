"""The last check before an action reaches the arm: shared by the simulator, the tests and the robot.

`SafetyFilter.filter(action, ee_position, gripper)` turns any proposed raw 7-D action
`[dx, dy, dz, droll, dpitch, dyaw, gripper]` (metres / radians per step, gripper 0..1) into one
that is safe to send:

1. Rejected (zero motion, gripper held at its current value, `ok=False`) when the action has the
   wrong shape or holds NaN / Inf, when the end-effector state is unknown, or when the input is
   stale (`age_s` over the limit).
2. Each delta clamped to its per-axis limit (`clamped:<axis>`).
3. The translation clipped per axis so that `ee_position + delta` stays inside the workspace box
   (`workspace:<axis>_min|max`); the arm slides along a wall instead of stopping. When the end
   effector is already outside the box on an axis, only motion back toward the box is allowed.
4. The gripper clipped to its bounds (`clamped:gripper`).

Every intervention is counted by reason (`counts`, `report()`), so a session can say how often the
filter acted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from apo_ros.actions.space import ACTION_DIM, ACTION_NAMES, GRIPPER_INDEX
from apo_ros.config import parse_config
from apo_ros.errors import ConfigError

AXES = ("x", "y", "z")
# The node-name key of config/safety.yaml; the same file is a ROS 2 parameter file.
NODE_NAME = "safety_filter"


@dataclass
class SafetyConfig:
    """Limits enforced on every action before it reaches the arm (raw units)."""

    # Max |delta| per control step for dx, dy, dz (metres) and droll, dpitch, dyaw (radians).
    max_delta: tuple[float, ...] = (0.05, 0.05, 0.05, 0.25, 0.25, 0.25)
    # Workspace box corner with the lowest x, y, z the end effector may reach (metres, base frame).
    workspace_min: tuple[float, ...] = (0.15, -0.5, 0.0)
    # Workspace box corner with the highest x, y, z (metres, base frame).
    workspace_max: tuple[float, ...] = (0.85, 0.5, 0.7)
    # Gripper command bounds (absolute, 0 = closed, 1 = open).
    gripper_min: float = 0.0
    gripper_max: float = 1.0
    # Inputs older than this (seconds) are rejected as stale when the caller passes age_s; <= 0 disables.
    max_input_age_s: float = 0.5
    # Gripper command used when a rejected action must hold the gripper but neither the current
    # gripper state nor an earlier command is known (1 = open).
    default_gripper: float = 1.0

    def __post_init__(self) -> None:
        self.max_delta = _floats(self.max_delta, 6, "max_delta")
        self.workspace_min = _floats(self.workspace_min, 3, "workspace_min")
        self.workspace_max = _floats(self.workspace_max, 3, "workspace_max")
        for name in ("gripper_min", "gripper_max", "max_input_age_s", "default_gripper"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            setattr(self, name, float(value))
        if any(v <= 0 for v in self.max_delta):
            raise ValueError(f"max_delta values must be > 0, got {list(self.max_delta)}")
        bad = [AXES[i] for i in range(3) if self.workspace_min[i] >= self.workspace_max[i]]
        if bad:
            raise ValueError(f"workspace_min must be below workspace_max on every axis; not on {bad} "
                             f"({list(self.workspace_min)} vs {list(self.workspace_max)})")
        if not 0.0 <= self.gripper_min <= self.gripper_max <= 1.0:
            raise ValueError(f"need 0 <= gripper_min <= gripper_max <= 1, got "
                             f"{self.gripper_min}, {self.gripper_max}")
        if not 0.0 <= self.default_gripper <= 1.0:  # clipped to [gripper_min, gripper_max] when used
            raise ValueError(f"default_gripper must be in [0, 1], got {self.default_gripper}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, params: dict, *, source: str = "safety config") -> SafetyConfig:
        """Build from a flat parameter dict; unknown keys and bad values raise ConfigError (a
        ValueError) naming `source` and the key."""
        return parse_config(cls, overrides=params, source=source)

    @classmethod
    def from_yaml(cls, path: str, node_name: str = NODE_NAME) -> SafetyConfig:
        """Read a ROS 2 parameter file: `{node_name: {ros__parameters: {...}}}` (a `/**` entry is
        used when there is no `node_name` entry). Missing parameters keep their defaults."""
        import yaml

        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no safety configuration file") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected '{node_name}: ros__parameters: ...' at the top level")
        key = node_name if node_name in data else "/**" if "/**" in data else None
        if key is None:
            raise ConfigError(f"{path}: no '{node_name}' entry (top-level keys: {sorted(map(str, data))})")
        node = data[key]
        if not isinstance(node, dict) or "ros__parameters" not in node:
            raise ConfigError(f"{path}: '{key}' must hold a 'ros__parameters' mapping")
        extra = sorted(set(node) - {"ros__parameters"})
        if extra:
            raise ConfigError(f"{path}: unexpected key(s) {extra} next to 'ros__parameters' under '{key}'")
        return cls.from_dict(node["ros__parameters"] or {}, source=f"{path} [{key}]")


def _floats(values, n: int, name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != n:
        raise ValueError(f"{name} must be a list of {n} numbers, got {values!r}")
    out = []
    for v in values:
        numeric = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        if not numeric or not math.isfinite(v):
            raise ValueError(f"{name} must be a list of {n} finite numbers, got {values!r}")
        out.append(float(v))
    return tuple(out)


def zero_action(gripper: float = 1.0) -> np.ndarray:
    """No motion, gripper command `gripper`."""
    action = np.zeros(ACTION_DIM)
    action[GRIPPER_INDEX] = gripper
    return action


@dataclass
class FilterResult:
    action: np.ndarray  # (7,) float64: the raw action that is safe to send
    ok: bool  # False when the proposal was rejected and replaced by zero motion
    reasons: list[str] = field(default_factory=list)  # why the filter acted; empty = passed unchanged

    @property
    def modified(self) -> bool:
        return bool(self.reasons)


class SafetyFilter:
    """Applies a SafetyConfig to proposed actions and counts every intervention."""

    def __init__(self, config: SafetyConfig | None = None):
        self.config = config or SafetyConfig()
        self._max_delta = np.asarray(self.config.max_delta)
        self._ws_min = np.asarray(self.config.workspace_min)
        self._ws_max = np.asarray(self.config.workspace_max)
        self._last_gripper: float | None = None  # last gripper command this filter let through
        self.reset_counts()

    def reset_counts(self) -> None:
        self.counts: Counter[str] = Counter()  # reason -> times it happened
        self.calls = 0  # actions filtered
        self.rejected = 0  # actions replaced by zero motion
        self.modified = 0  # actions changed in any way (rejected included)

    def _hold_gripper(self, gripper) -> float:
        """The gripper value a rejected action keeps: the current state when it is known."""
        g = _finite_float(gripper)
        if g is None:
            g = self._last_gripper if self._last_gripper is not None else self.config.default_gripper
        return float(min(max(g, self.config.gripper_min), self.config.gripper_max))

    def _reject(self, gripper, reasons: list[str]) -> FilterResult:
        hold = self._hold_gripper(gripper)
        self._last_gripper = hold
        return self._finish(FilterResult(zero_action(hold), False, reasons))

    def _finish(self, result: FilterResult) -> FilterResult:
        self.calls += 1
        if result.reasons:
            self.modified += 1
            self.counts.update(result.reasons)
        if not result.ok:
            self.rejected += 1
        return result

    def filter(self, action, ee_position, gripper: float, *, age_s: float | None = None) -> FilterResult:
        """Proposed raw action (7,), current end-effector position (3,) in the base frame and
        current gripper state -> FilterResult. `age_s`: age of the observation the action was
        computed from (stale inputs are rejected)."""
        cfg = self.config
        reasons: list[str] = []
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            return self._reject(gripper, ["shape"])
        if a.shape != (ACTION_DIM,):
            return self._reject(gripper, ["shape"])
        if np.isnan(a).any():
            reasons.append("nan")
        if np.isinf(a).any():
            reasons.append("inf")
        try:
            ee = np.asarray(ee_position, dtype=np.float64)
        except (TypeError, ValueError):
            ee = np.full(3, np.nan)
        if ee.shape != (3,) or not np.isfinite(ee).all():
            reasons.append("ee_position")
        if age_s is not None and cfg.max_input_age_s > 0:
            age = _finite_float(age_s)
            if age is None or age > cfg.max_input_age_s:
                reasons.append("stale")
        if reasons:
            return self._reject(gripper, reasons)

        out = a.copy()
        # Per-axis limits on the six deltas.
        limited = np.clip(out[:6], -self._max_delta, self._max_delta)
        for i in np.flatnonzero(limited != out[:6]):
            reasons.append(f"clamped:{ACTION_NAMES[i]}")
        out[:6] = limited
        # Workspace: ee + d stays in [min, max]; outside the box only motion toward it is allowed.
        low = np.minimum(0.0, self._ws_min - ee)
        high = np.maximum(0.0, self._ws_max - ee)
        for i in range(3):
            if out[i] < low[i]:
                out[i] = low[i]
                reasons.append(f"workspace:{AXES[i]}_min")
            elif out[i] > high[i]:
                out[i] = high[i]
                reasons.append(f"workspace:{AXES[i]}_max")
        g = float(np.clip(out[GRIPPER_INDEX], cfg.gripper_min, cfg.gripper_max))
        if g != out[GRIPPER_INDEX]:
            reasons.append("clamped:gripper")
            out[GRIPPER_INDEX] = g
        self._last_gripper = g
        return self._finish(FilterResult(out, True, reasons))

    def kind_counts(self) -> dict[str, int]:
        """Counts grouped by kind (the part before ':'): nan, inf, shape, ee_position, stale,
        clamped, workspace."""
        kinds: Counter[str] = Counter()
        for reason, n in self.counts.items():
            kinds[reason.split(":", 1)[0]] += n
        return dict(kinds)

    def summary(self) -> dict:
        """Machine-readable counters (for results files and ROS diagnostics)."""
        return {"calls": self.calls, "rejected": self.rejected, "modified": self.modified,
                "counts": dict(sorted(self.counts.items())), "kinds": self.kind_counts()}

    def report(self) -> str:
        """One line: how many actions the filter saw, rejected and changed, and why."""
        if not self.calls:
            return "safety filter: no actions filtered"
        detail = ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items()))
        text = (f"safety filter: {self.calls} actions, {self.rejected} rejected, "
                f"{self.modified} modified")
        return text + (f" ({detail})" if detail else "")


def _finite_float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
