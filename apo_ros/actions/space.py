"""The action space shared by the policy, the arm, the bags and the trainer.

One action is a 7-D end-effector delta in the arm's base frame:
`[dx, dy, dz, droll, dpitch, dyaw, gripper]` — metres and radians per control step, gripper
absolute in [0, 1] (1 = open, as OpenVLA). A chunk is a (T, 7) array of consecutive actions.
"""

from __future__ import annotations

import numpy as np

ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
ACTION_DIM = len(ACTION_NAMES)
GRIPPER_INDEX = 6
# Which dimensions are normalized with q01/q99 (True) and which pass through (the gripper).
NORMALIZE_MASK: tuple[bool, ...] = (True, True, True, True, True, True, False)
# Sources of an executed action, as written in bags and used by the labeler.
SOURCES: tuple[str, ...] = ("policy", "human", "expert")


def as_action(values, *, name: str = "action") -> np.ndarray:
    """Return `values` as a float64 array whose last axis is the 7-D action; raise ValueError
    naming the problem otherwise (wrong width, not numeric)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != ACTION_DIM:
        raise ValueError(f"{name} must have {ACTION_DIM} values on its last axis "
                         f"{list(ACTION_NAMES)}, got shape {arr.shape}")
    return arr


def as_chunk(values, *, name: str = "chunk") -> np.ndarray:
    """Return a (T, 7) chunk; a single (7,) action becomes a chunk of length 1."""
    arr = as_action(values, name=name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (T, {ACTION_DIM}), got shape {arr.shape}")
    return arr


def is_noop(action: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """The released APO code's no-op test: sum |a[:6]| < threshold (on normalized actions)."""
    return np.abs(np.asarray(action)[..., :GRIPPER_INDEX]).sum(axis=-1) < threshold
