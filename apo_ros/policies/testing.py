"""Small fixtures for tests and demos of the policies (also handy for other areas' tests)."""

from __future__ import annotations

import numpy as np

from apo_ros.actions.space import ACTION_DIM
from apo_ros.actions.statistics import ActionStatistics

DEFAULT_DELTA_BOUND = 0.05  # the identity-like default statistics: deltas in [-0.05, 0.05]


def default_statistics(bound: float = DEFAULT_DELTA_BOUND) -> ActionStatistics:
    """q01 = -bound / q99 = +bound for the 6 deltas, gripper passed through (absolute 0..1)."""
    return ActionStatistics(q01=[-bound] * 6 + [0.0], q99=[bound] * 6 + [1.0], mask=[True] * 6 + [False])


def random_batch(batch: int, cameras: int = 2, size: int = 64, seed: int = 0, chunk: int = 1):
    """(images uint8 [B, K, H, W, 3], proprio [B, 8], raw actions [B, T, 7]) with smooth chunks."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, cameras, size, size, 3), dtype=np.uint8)
    proprio = rng.normal(size=(batch, 8)).astype(np.float32)
    start = rng.uniform(-0.04, 0.04, (batch, 1, 6))
    slope = rng.uniform(-0.004, 0.004, (batch, 1, 6))
    deltas = start + slope * np.arange(chunk)[None, :, None]
    gripper = rng.integers(0, 2, (batch, 1, 1)).repeat(chunk, 1).astype(np.float64)
    actions = np.concatenate([deltas, gripper], -1)
    assert actions.shape == (batch, chunk, ACTION_DIM)
    return images, proprio, actions


def square_task(n: int, seed: int, instructions=("open it", "close it")):
    """A tiny fixed imitation problem that needs localization: a yellow square at a random place
    in the front image; the expert's dx, dy point at it; the instruction sets the gripper.
    Returns (images, proprio, instructions, raw actions [n, 7])."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 2, 64, 64, 3), 40, np.uint8)
    xy = rng.uniform(-1, 1, (n, 2))
    for i, (x, y) in enumerate(xy):
        cx, cy = int((x + 1) / 2 * 55) + 4, int((y + 1) / 2 * 55) + 4
        images[i, 0, cy - 4:cy + 4, cx - 4:cx + 4] = (230, 200, 30)
    which = rng.integers(0, len(instructions), n)
    actions = np.zeros((n, ACTION_DIM))
    actions[:, 0] = xy[:, 0] * 0.04
    actions[:, 1] = xy[:, 1] * 0.04
    actions[:, 6] = which
    proprio = np.zeros((n, 8), np.float32)
    proprio[:, 6] = 1.0
    return images, proprio, [instructions[k] for k in which], actions
