"""Image augmentation of the policy's inputs (never of the cached reference's)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AugmentConfig:
    enabled: bool = True  # random shift + brightness on the policy's (not the cached reference's) inputs
    shift: int = 4  # max pixels of random translation (edge-padded crop, as DrQ)
    brightness: float = 0.1  # multiply each image by 1 + U(-b, b)


def augment_images(images: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """uint8 [B, K, H, W, 3] -> uint8 same shape: each image shifted by up to `shift` pixels
    (edge padding, random crop) and scaled in brightness."""
    if not config.enabled:
        return images
    b, k, h, w, c = images.shape
    flat = images.reshape(b * k, h, w, c)
    out = np.empty_like(flat)
    s = int(config.shift)
    if s > 0:
        padded = np.pad(flat, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
        dy = rng.integers(0, 2 * s + 1, size=b * k)
        dx = rng.integers(0, 2 * s + 1, size=b * k)
        for i in range(b * k):
            out[i] = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    else:
        out[:] = flat
    if config.brightness > 0:
        scale = 1.0 + rng.uniform(-config.brightness, config.brightness, size=(b * k, 1, 1, 1))
        out = np.clip(out.astype(np.float32) * scale.astype(np.float32), 0, 255).astype(np.uint8)
    return out.reshape(b, k, h, w, c)


