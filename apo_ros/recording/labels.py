"""Intervention labels, derived on read (never written into a bag, so K can change later).

APO: at the first human step of every intervention, the K policy steps just
before it are *undesirable*; every other step (expert demos, other policy steps, all human steps)
is *desirable*. Counting back stops at the previous intervention (or expert step): the policy
steps before an earlier intervention belong to that one. With `noop_filter`, no-op policy steps
(sum |a[:6]| < threshold) are skipped when counting K, as the released code does (it drops them
from the data set entirely; `noop` marks them so a trainer can do the same).

Units of the no-op test: the released code tests its data set's actions, controller inputs in
[-1, 1] with 0 = no motion. Here, with the policy's statistics, each arm dimension is divided by
max(|q01|, |q99|): the same scale as the policy's normalization, but zero stays zero (the
q01..q99 -> -1..1 map shifts zero wherever the range is not symmetric, and a still arm would
then never be a no-op). Without statistics the raw actions are tested.

Sirius classes: demo (expert steps), intervention (human), pre_intervention (the `sirius_window`
policy steps before each intervention), rollout (all other policy steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apo_ros.actions.space import is_noop
from apo_ros.recording.episode import Episode

SIRIUS_CLASSES: tuple[str, ...] = ("demo", "rollout", "intervention", "pre_intervention")
DEMO, ROLLOUT, INTERVENTION, PRE_INTERVENTION = range(4)

_SOURCE_CODES = {"policy": 0, "human": 1, "expert": 2}


@dataclass
class EpisodeLabels:
    """Per-step labels of one episode (arrays of length = number of steps)."""

    undesirable: np.ndarray  # bool: one of the K policy steps before an intervention
    desirable: np.ndarray  # bool: ~undesirable
    sirius_class: np.ndarray  # int8 index into SIRIUS_CLASSES
    noop: np.ndarray  # bool: policy/human/expert step whose action is a no-op (only with noop_filter)
    is_human: np.ndarray  # bool: executed action came from the operator
    intervention_spans: list[tuple[int, int]]  # [start, end) step ranges of consecutive human steps
    k: int = 10

    @property
    def num_undesirable(self) -> int:
        return int(self.undesirable.sum())

    def sirius_names(self) -> list[str]:
        return [SIRIUS_CLASSES[i] for i in self.sirius_class]


def source_codes(sources) -> np.ndarray:
    """["policy", "human", "expert"] -> int8 codes 0 / 1 / 2 (ValueError naming an unknown one)."""
    try:
        return np.fromiter((_SOURCE_CODES[s] for s in sources), dtype=np.int8)
    except KeyError as err:
        raise ValueError(f"unknown action source {err.args[0]!r} (expected {list(_SOURCE_CODES)})") from None


def intervention_spans(is_human: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) ranges of consecutive True values."""
    h = np.concatenate([[False], np.asarray(is_human, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(h))
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2])]


def _mark_before(codes: np.ndarray, spans, count: int, eligible: np.ndarray) -> np.ndarray:
    """For each span start, mark up to `count` eligible policy steps going backwards, stopping at
    the first non-policy step (previous intervention or expert step)."""
    marked = np.zeros(codes.shape[0], dtype=bool)
    if count <= 0:
        return marked
    for start, _ in spans:
        left = count
        j = start - 1
        while j >= 0 and left > 0 and codes[j] == 0:
            if eligible[j]:
                marked[j] = True
                left -= 1
            j -= 1
    return marked


def noop_units(actions: np.ndarray, stats=None) -> np.ndarray:
    """Actions in the no-op test's units: each arm dimension the statistics normalize divided by
    max(|q01|, |q99|) (zero stays zero); raw where there are no statistics or the dimension is
    not normalized."""
    a = np.asarray(actions, dtype=np.float64)
    if stats is None:
        return a
    half_range = np.maximum(np.abs(np.asarray(stats.q01, np.float64)),
                            np.abs(np.asarray(stats.q99, np.float64)))
    use = np.asarray(stats.mask, bool) & (half_range > 1e-12)
    return np.where(use, a / np.where(use, half_range, 1.0), a)


def label_sources(sources, actions=None, *, k: int = 10, noop_filter: bool = False,
                  noop_threshold: float = 0.05, sirius_window: int = 15, stats=None) -> EpisodeLabels:
    """Labels from the per-step sources (and actions, needed for the no-op filter).

    actions: (N, 7) raw executed actions. stats: an ActionStatistics giving the no-op test's
    scale (`noop_units`: each arm dimension over max(|q01|, |q99|)); without it, raw actions.
    """
    if k < 0 or sirius_window < 0:
        raise ValueError(f"k and sirius_window must be >= 0, got {k}, {sirius_window}")
    codes = source_codes(sources)
    n = codes.shape[0]
    is_human = codes == 1
    spans = intervention_spans(is_human)
    noop = np.zeros(n, dtype=bool)
    if noop_filter:
        if actions is None:
            raise ValueError("the no-op filter needs the actions")
        units = noop_units(np.asarray(actions, dtype=np.float64).reshape(n, -1), stats)
        noop = is_noop(units, noop_threshold)
    undesirable = _mark_before(codes, spans, k, ~noop)
    pre = _mark_before(codes, spans, sirius_window, np.ones(n, dtype=bool))
    sirius = np.full(n, ROLLOUT, dtype=np.int8)
    sirius[codes == 2] = DEMO
    sirius[is_human] = INTERVENTION
    sirius[pre] = PRE_INTERVENTION
    return EpisodeLabels(undesirable=undesirable, desirable=~undesirable, sirius_class=sirius, noop=noop,
                         is_human=is_human, intervention_spans=spans, k=k)


def label_episode(episode: Episode, *, k: int = 10, noop_filter: bool = False, noop_threshold: float = 0.05,
                  sirius_window: int = 15, stats=None) -> EpisodeLabels:
    """Labels of one episode's steps (see the module docstring)."""
    actions = episode.actions() if noop_filter else None
    return label_sources(episode.sources, actions, k=k, noop_filter=noop_filter,
                         noop_threshold=noop_threshold, sirius_window=sirius_window, stats=stats)
