"""Synthetic episodes for tests, benchmarks and examples: drive the EpisodeWriter directly with
made-up observations and actions (no simulator needed)."""

from __future__ import annotations

import numpy as np

from apo_ros.observation import CAMERAS, Observation
from apo_ros.recording.writer import EpisodeWriter

JOINT_NAMES = tuple(f"joint_{i}" for i in range(1, 8)) + ("finger_left", "finger_right")
STEP_NS = 66_666_667  # 15 Hz control
START_NS = 1_700_000_000_000_000_000  # a plausible wall-clock epoch


def synthetic_image(rng: np.random.Generator, height: int, width: int, index: int = 0) -> np.ndarray:
    """A smooth gradient that moves with `index`, plus mild noise: compresses like a camera frame
    rather than like pure noise."""
    y = np.arange(height, dtype=np.int32)[:, None]
    x = np.arange(width, dtype=np.int32)[None, :]
    base = np.stack([(x + index) % 256 + 0 * y, (y + 2 * index) % 256 + 0 * x, ((x + y) // 2) % 256], axis=-1)
    noise = rng.integers(0, 8, size=base.shape, dtype=np.int32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def synthetic_observation(rng: np.random.Generator, stamp_ns: int, *, size: int = 64,
                          cameras: tuple[str, ...] = CAMERAS, instruction: str = "lift the red cube",
                          index: int = 0, noise_images: bool = False) -> Observation:
    images = {c: (rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) if noise_images
                  else synthetic_image(rng, size, size, index + 17 * k)) for k, c in enumerate(cameras)}
    return Observation(
        images=images,
        joint_positions=rng.normal(size=len(JOINT_NAMES)),
        ee_pose=np.concatenate([rng.normal(size=3), _unit_quaternion(rng)]),
        gripper=float(rng.uniform()),
        instruction=instruction,
        stamp_ns=int(stamp_ns),
        joint_names=JOINT_NAMES,
        object_poses=np.stack([np.concatenate([rng.normal(size=3), _unit_quaternion(rng)])
                               for _ in range(2)]).astype(np.float32),
    )


def _unit_quaternion(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return q / np.linalg.norm(q)


def write_synthetic_episode(path: str, sources, *, seed: int = 0, size: int = 64, outcome: str = "success",
                            metadata: dict | None = None, image_format: str = "raw",
                            cameras: tuple[str, ...] = CAMERAS, with_proposed: bool = True,
                            actions: np.ndarray | None = None, start_ns: int = START_NS,
                            close: bool = True, draw_frames=None, **writer_kwargs):
    """Write an episode whose step i is executed by sources[i]; intervention events are written at
    the human runs' edges. `draw_frames(i, observation)`, when given, replaces step i's camera
    images before they are written. Returns the writer (closed unless close=False) and the
    actions."""
    rng = np.random.default_rng(seed)
    sources = list(sources)
    if actions is None:
        actions = rng.uniform(-0.02, 0.02, size=(len(sources), 7))
        actions[:, 6] = rng.uniform(size=len(sources))
    meta = {"task": "lift", "instruction": "lift the red cube", "policy_id": "synthetic-policy",
            "operator": "tester", "stats_id": "0123456789ab"}
    meta.update(metadata or {})
    writer = EpisodeWriter(path, metadata=meta, cameras=cameras, image_format=image_format, **writer_kwargs)
    writer.write_event(start_ns, "start")
    previous = None
    for i, source in enumerate(sources):
        stamp = start_ns + (i + 1) * STEP_NS
        if source == "human" and previous != "human":
            writer.write_event(stamp, "intervention_start")
        if source != "human" and previous == "human":
            writer.write_event(stamp, "intervention_end")
        obs = synthetic_observation(rng, stamp, size=size, cameras=cameras, index=i,
                                    instruction=meta["instruction"])
        if draw_frames is not None:
            draw_frames(i, obs)
        writer.write_observation(obs)
        proposed = actions[i] + 0.001 if with_proposed and source != "expert" else None
        if source == "human":
            writer.write_human_command(stamp + 1_000_000, actions[i], stamp)
        writer.write_action(stamp + 2_000_000, actions[i], source, stamp, proposed=proposed)
        previous = source
    if close:
        writer.close(outcome)
    return writer, actions
