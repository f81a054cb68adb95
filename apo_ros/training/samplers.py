"""Samplers: deterministic functions of (seed, step) plus a small JSON state, so a resumed run
draws the same batches as an uninterrupted one."""

from __future__ import annotations

import numpy as np

from apo_ros.training.cache import DataError


class _Cycler:
    """Cycles through a fixed index set in a fresh permutation per pass; the permutation of pass
    e is a function of (seed, stream, e), so the state is just (pass, position)."""

    def __init__(self, indices: np.ndarray, seed: int, stream: int):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed, self.stream = int(seed), int(stream)
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.stream, self.epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self.pos >= len(self._perm):
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation()
            got = self._perm[self.pos:self.pos + n]
            out.append(got)
            self.pos += len(got)
            n -= len(got)
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation()


class UniformSampler:
    """Batches drawn without replacement from one index set, reshuffled every pass: every row
    is drawn once per pass, so each group appears in the batches at its share of the data
    (sampling "natural"). `targets`: the rows trained on as likely targets (for the train NLL;
    default: all of them; the preference objectives leave their undesirable rows out)."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int = 0,
                 targets: np.ndarray | None = None):
        if len(indices) == 0:
            raise DataError("no samples to train on")
        self.batch_size = int(batch_size)
        self.cycler = _Cycler(indices, seed, 0)
        self.targets = None if targets is None else np.sort(np.asarray(targets, np.int64))

    def next_batch(self) -> np.ndarray:
        return self.cycler.take(self.batch_size)

    def target_rows(self) -> np.ndarray:
        """The sample rows this sampler trains on as targets (for the train NLL)."""
        return np.sort(self.cycler.indices) if self.targets is None else self.targets

    @property
    def epoch(self) -> int:
        return self.cycler.epoch

    def state_dict(self) -> dict:
        return {"uniform": self.cycler.state()}

    def load_state_dict(self, state: dict) -> None:
        self.cycler.load(state["uniform"])


def group_counts(ratios: dict[str, float], sizes: dict[str, int], batch_size: int) -> dict[str, int]:
    """Samples per group in one batch: ratios renormalized over non-empty groups, rounded by
    largest remainder so the counts add up to batch_size."""
    live = {g: float(r) for g, r in ratios.items() if sizes.get(g, 0) > 0 and r > 0}
    if not live:
        raise DataError(f"no samples in any sampled group (sizes {sizes}, ratios {ratios})")
    total = sum(live.values())
    exact = {g: batch_size * r / total for g, r in live.items()}
    counts = {g: int(np.floor(v)) for g, v in exact.items()}
    for g in sorted(exact, key=lambda g: (counts[g] - exact[g], g))[: batch_size - sum(counts.values())]:
        counts[g] += 1
    return {g: counts.get(g, 0) for g in ratios}


def capped_shares(ratios: dict[str, float], sizes: dict[str, int], max_repeat: float) -> dict[str, float]:
    """Batch shares as close to `ratios` as allowed when no group may be drawn more than
    `max_repeat` times as often as uniform sampling over the groups would draw it.

    Natural share u_g = n_g / sum n over the groups with a positive ratio and samples. A group
    whose ratio share exceeds max_repeat * u_g is pinned there and the rest of the batch is
    shared out over the other groups in proportion to their ratios, until no group is over
    (water-filling). max_repeat 1 gives the natural shares; a large one gives the ratios."""
    if max_repeat < 1:
        raise ValueError(f"max_repeat must be >= 1, got {max_repeat}")
    live = {g: float(r) for g, r in ratios.items() if sizes.get(g, 0) > 0 and r > 0}
    if not live:
        raise DataError(f"no samples in any sampled group (sizes {sizes}, ratios {ratios})")
    total = sum(sizes[g] for g in live)
    natural = {g: sizes[g] / total for g in live}
    pinned: dict[str, float] = {}
    while True:
        free = [g for g in live if g not in pinned]
        mass = 1.0 - sum(pinned.values())
        weight = sum(live[g] for g in free)
        shares = {g: mass * live[g] / weight for g in free}
        over = [g for g in free if shares[g] > max_repeat * natural[g] * (1 + 1e-12)]
        if not over:  # max_repeat >= 1 leaves at least one group free (see the docstring)
            break
        pinned.update({g: max_repeat * natural[g] for g in over})
    shares.update(pinned)
    return {g: shares.get(g, 0.0) for g in ratios}


def systematic_counts(shares: dict[str, float], batch_size: int, rng: np.random.Generator) -> dict[str, int]:
    """Integer counts per group adding up to batch_size whose expectation is exactly
    batch_size * share: each group gets floor(batch_size * share) and the remaining places go
    one each to groups drawn with probability equal to their fractional parts (systematic
    sampling). Small shares at small batches are then drawn at their rate on average instead of
    being rounded to 0 every batch."""
    groups = sorted(g for g, s in shares.items() if s > 0)
    exact = np.array([batch_size * shares[g] for g in groups])
    exact *= batch_size / exact.sum()
    counts = np.floor(exact + 1e-9).astype(np.int64)
    frac = np.clip(exact - counts, 0.0, None)
    left = int(batch_size - counts.sum())
    if left > 0:
        edges = np.cumsum(frac) * (left / frac.sum())
        points = rng.random() + np.arange(left)
        counts += np.diff(np.concatenate([[0], np.searchsorted(points, edges, side="left")]))
    return {g: int(c) for g, c in zip(groups, counts)}


class BalancedSampler:
    """Per batch a share of each group (sampling "released": 50% desirable robot/expert, 25%
    human, 25% undesirable, as the released APO code's batches; "capped": `capped_shares`). Each
    group is cycled on its own, so small groups (the human corrections) repeat more often than
    large ones; the released code instead ends an epoch when the human samples run out — in a
    step-budgeted trainer we just keep cycling and report the human-group pass count as the
    epoch. The batch is shuffled so batch neighbours (the mismatched pairs of z0) come from
    mixed groups.

    `ratios` are turned into FIXED counts per batch (largest remainder, as before: 32 rows give
    16 / 8 / 8); `shares` (exact fractions, e.g. capped ones) into counts drawn per batch by
    `systematic_counts`, whose mean over batches is exact. Give one of the two."""

    def __init__(self, groups: dict[str, np.ndarray], ratios: dict[str, float] | None, batch_size: int,
                 seed: int = 0, shares: dict[str, float] | None = None):
        if (ratios is None) == (shares is None):
            raise ValueError("BalancedSampler takes ratios (fixed counts) or shares (exact mean): one")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        sizes = {g: len(v) for g, v in groups.items()}
        self.shares = None
        if shares is not None:
            self.shares = {g: float(shares.get(g, 0.0)) if sizes.get(g, 0) else 0.0 for g in groups}
            if sum(self.shares.values()) <= 0:
                raise DataError(f"no samples in any sampled group (sizes {sizes}, shares {shares})")
            self.counts = {g: 1 if s > 0 else 0 for g, s in self.shares.items()}  # which groups run
        else:
            self.counts = group_counts(ratios, sizes, batch_size)
        self.cyclers = {g: _Cycler(groups[g], seed, i + 1) for i, g in enumerate(sorted(groups))
                        if self.counts.get(g, 0) > 0}
        self.step = 0

    def batch_counts(self, step: int) -> dict[str, int]:
        """Rows per group in the batch of (0-based) `step`."""
        if self.shares is None:
            return self.counts
        return systematic_counts(self.shares, self.batch_size, np.random.default_rng([self.seed, 98, step]))

    def next_batch(self) -> np.ndarray:
        counts = self.batch_counts(self.step)
        idx = np.concatenate([self.cyclers[g].take(counts.get(g, 0)) for g in sorted(self.cyclers)])
        rng = np.random.default_rng([self.seed, 99, self.step])
        self.step += 1
        return idx[rng.permutation(len(idx))]

    def target_rows(self) -> np.ndarray:
        """The rows trained on as likely targets: the desirable and human groups."""
        parts = [c.indices for g, c in self.cyclers.items() if g != "undesirable"]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    @property
    def epoch(self) -> int:
        key = "human" if "human" in self.cyclers else sorted(self.cyclers)[0]
        return self.cyclers[key].epoch

    def state_dict(self) -> dict:
        return {"step": self.step, "groups": {g: c.state() for g, c in self.cyclers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        for g, s in state["groups"].items():
            self.cyclers[g].load(s)


class WindowSampler(UniformSampler):
    """TPO: draws window pairs (rows of `windows`, int64 [M, 3] rejected_start, chosen_start,
    length) uniformly without replacement per pass."""

    def __init__(self, windows: np.ndarray, pairs: int, seed: int = 0):
        super().__init__(np.arange(len(windows)), pairs, seed)
        self.windows = windows

    def target_rows(self) -> np.ndarray:
        """The chosen (human) windows' rows."""
        rows = [np.arange(c, c + n) for _, c, n in self.windows]
        return np.concatenate(rows) if rows else np.zeros(0, np.int64)
