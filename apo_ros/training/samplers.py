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
    """Batches drawn without replacement from one index set, reshuffled every pass."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int = 0):
        if len(indices) == 0:
            raise DataError("no samples to train on")
        self.batch_size = int(batch_size)
        self.cycler = _Cycler(indices, seed, 0)

    def next_batch(self) -> np.ndarray:
        return self.cycler.take(self.batch_size)

    def target_rows(self) -> np.ndarray:
        """The sample rows this sampler trains on as targets (for the train NLL)."""
        return np.sort(self.cycler.indices)

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


class BalancedSampler:
    """Per batch a fixed share of each group (default 50% desirable robot/expert, 25% human, 25%
    undesirable, as the APO paper's batches). Each group is cycled on its own, so small groups (the human
    corrections) repeat more often than large ones; the released code instead ends an epoch when
    the human samples run out — in a step-budgeted trainer we just keep cycling and report the
    human-group pass count as the epoch. The batch is shuffled so batch neighbours (the
    mismatched pairs of z0) come from mixed groups."""

    def __init__(self, groups: dict[str, np.ndarray], ratios: dict[str, float], batch_size: int,
                 seed: int = 0):
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.counts = group_counts(ratios, {g: len(v) for g, v in groups.items()}, batch_size)
        self.cyclers = {g: _Cycler(groups[g], seed, i + 1) for i, g in enumerate(sorted(groups))
                        if self.counts.get(g, 0) > 0}
        self.step = 0

    def next_batch(self) -> np.ndarray:
        idx = np.concatenate([self.cyclers[g].take(self.counts[g]) for g in sorted(self.cyclers)])
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
