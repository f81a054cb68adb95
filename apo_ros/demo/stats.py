"""Success-rate statistics for the method comparison: hierarchical bootstrap over pipeline seeds
and evaluation episodes.

Every policy of a comparison is evaluated on the same seeded initial states, and the whole
pipeline (demos, base, deployment, methods) is repeated for several seeds. A success matrix is
therefore [pipeline seed, episode] with the episode axis shared by every policy. The interval of
a rate resamples pipeline seeds with replacement and, within each drawn seed, episodes with
replacement, so the spread between pipeline seeds (a lucky or unlucky base) is in it, not only
the binomial noise of the episodes. A paired difference uses the same draws for both policies,
so the shared difficulty of an initial state cancels.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DRAWS = 4000


def _draws(shape: tuple[int, int], draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_seeds, n_episodes = shape
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seeds, size=(draws, n_seeds))
    episode_idx = rng.integers(0, n_episodes, size=(draws, n_seeds, n_episodes))
    return seed_idx, episode_idx


def _as_matrix(x) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"expected a [pipeline seeds, episodes] matrix, got shape {np.shape(x)}")
    return m


def bootstrap_mean(values, *, draws: int = DEFAULT_DRAWS, seed: int = 0, level: float = 0.95) -> dict:
    """values [S, E] (successes 0/1, or any per-episode number) -> {"mean", "ci95": [lo, hi],
    "per_seed": [mean of each seed]} with a percentile interval from the two-level bootstrap."""
    m = _as_matrix(values)
    seed_idx, episode_idx = _draws(m.shape, draws, seed)
    boot = m[seed_idx[:, :, None], episode_idx].mean(axis=(1, 2))
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return {"mean": float(m.mean()), "ci95": [float(lo), float(hi)],
            "per_seed": [float(v) for v in m.mean(axis=1)]}


def bootstrap_difference(a, b, *, draws: int = DEFAULT_DRAWS, seed: int = 0, level: float = 0.95) -> dict:
    """Paired difference mean(a) - mean(b) of two [S, E] matrices on the same seeds and episodes
    -> {"diff", "ci95", "p_above_zero" (share of draws > 0), "per_seed"}."""
    ma, mb = _as_matrix(a), _as_matrix(b)
    if ma.shape != mb.shape:
        raise ValueError(f"paired matrices must have one shape, got {ma.shape} and {mb.shape}")
    d = ma - mb
    seed_idx, episode_idx = _draws(d.shape, draws, seed)
    boot = d[seed_idx[:, :, None], episode_idx].mean(axis=(1, 2))
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)],
            "p_above_zero": float((boot > 0).mean()),
            "per_seed": [float(v) for v in d.mean(axis=1)]}


def bootstrap_ratio(numerators, denominators, *, draws: int = DEFAULT_DRAWS, seed: int = 0,
                    level: float = 0.95) -> dict:
    """A ratio of sums (e.g. human steps / all steps) from [S, E] matrices, resampled as above."""
    num, den = _as_matrix(numerators), _as_matrix(denominators)
    seed_idx, episode_idx = _draws(num.shape, draws, seed)
    n = num[seed_idx[:, :, None], episode_idx].sum(axis=(1, 2))
    d = den[seed_idx[:, :, None], episode_idx].sum(axis=(1, 2))
    boot = n / np.maximum(d, 1e-12)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return {"mean": float(num.sum() / max(den.sum(), 1e-12)), "ci95": [float(lo), float(hi)],
            "per_seed": [float(x / max(y, 1e-12)) for x, y in zip(num.sum(1), den.sum(1))]}
