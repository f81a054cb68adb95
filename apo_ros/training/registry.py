"""One entry per training method: its data check, its sampler, its step loss, its config class
(its own settings), whether it needs the frozen reference, and its default learning rate.

Adding a method = an objective (`objectives.py`, pure tensors) + a step loss (`losses.py`) that
feeds it from a `Batches` + a config class for its settings (`method_configs.py`) + one
`register(Method(...))` here. The trainer, `TrainConfig`'s checks, the CLI's flags and choices,
the study's method list and the docs' tables read this registry (`method_names`, `get_method`);
nothing else lists method names.

A step loss (in `losses.py`) is `loss(b: Batches, rows, step) -> StepOutput`, where `rows` is
what the method's sampler drew for this process (sample rows, or TPO window pairs). Samplers are
built for the GLOBAL batch (`batch_size x processes`); the trainer hands each process its slice.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from apo_ros.training.cache import DataError
from apo_ros.training.method_configs import (
    AposConfig,
    BCConfig,
    DaggerConfig,
    KTOConfig,
    MethodConfig,
    SiriusConfig,
    TPOConfig,
)
from apo_ros.training.samplers import (
    BalancedSampler,
    UniformSampler,
    WindowSampler,
    capped_shares,
    group_counts,
)

if TYPE_CHECKING:
    from apo_ros.training.samples import SampleSet

SAMPLINGS: tuple[str, ...] = ("natural", "released", "capped")


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line for --help and the docs
    # the step loss (b: Batches, rows, step) -> StepOutput, or its "module:function", imported on
    # first use so `apo-ros --help` does not import torch
    loss_path: str | Callable
    sampler: Callable[[SampleSet, object, int, int], object]  # (samples, config, global batch, seed)
    needs_reference: bool
    default_lr: float
    check: DataCheck  # raises DataError when the data cannot train it
    default_sampling: str = "natural"  # the `sampling` used when the config leaves it null
    samplings: tuple[str, ...] = SAMPLINGS  # the ones that make sense
    config: type[MethodConfig] = MethodConfig  # the method's own settings (default: none)

    def loss(self, b, rows, step: int):
        if callable(self.loss_path):
            return self.loss_path(b, rows, step)
        module, name = self.loss_path.split(":")
        return getattr(importlib.import_module(module), name)(b, rows, step)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method (its name must be new) and file its config class under its name."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    if not (isinstance(method.config, type) and issubclass(method.config, MethodConfig)):
        raise TypeError(f"{method.name}: config must be a MethodConfig subclass, got {method.config!r}")
    if method.default_sampling not in method.samplings or not set(method.samplings) <= set(SAMPLINGS):
        raise ValueError(f"{method.name}: samplings {method.samplings} must be among {SAMPLINGS} and "
                         f"hold the default {method.default_sampling!r}")
    if method.config is MethodConfig:  # no settings: a class of its own (draccus decodes the
        # declared base type directly once the base itself has a name)
        method = dataclasses.replace(method, config=dataclasses.make_dataclass(
            f"{method.name.title().replace('_', '')}Config", [], bases=(MethodConfig,)))
    MethodConfig.register_subclass(method.name, method.config)
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy one)."""
    METHODS.pop(name, None)
    MethodConfig.get_known_choices().pop(name, None)


def method_names() -> list[str]:
    """The registered methods, in registration order."""
    return list(METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (known: {method_names()})")
    return METHODS[name]


# ---------------------------------------------------------------------------------------------
# Data checks (composable; a new method picks its own from these)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataCheck:
    """`check(samples, config)` raises DataError, naming `config.method`, when the data cannot
    train the method; `needs` says what it asks of the data, for the docs' table."""

    needs: str
    check: Callable[[SampleSet, object], None]

    def __call__(self, samples: SampleSet, config) -> None:
        self.check(samples, config)


def needs_demos() -> DataCheck:
    def check(samples: SampleSet, config) -> None:
        name = config.method
        if not samples.is_demo.any():
            raise DataError(f"{name} trains on expert demos: give demo bags with --demos")
    return DataCheck("demos", check)


def needs_interaction() -> DataCheck:
    def check(samples: SampleSet, config) -> None:
        name = config.method
        if not samples.has_interaction_data():
            raise DataError(f"{name} needs interaction data (bags recorded while the policy ran, with "
                            "human corrections): give them with --data")
    return DataCheck("interaction bags", check)


def needs_interventions() -> DataCheck:
    def check(samples: SampleSet, config) -> None:
        name = config.method
        needs_interaction()(samples, config)
        if samples.intervention_starts().size == 0:
            raise DataError(f"{name} learns from interventions, but the --data bags have none "
                            "(no human-controlled steps)")
    return DataCheck("interaction bags with interventions", check)


def needs_human_steps() -> DataCheck:
    def check(samples: SampleSet, config) -> None:
        name = config.method
        needs_interaction()(samples, config)
        if not samples.human_mask().any():
            raise DataError(f"{name} adds the operator's corrections to the demos, but the --data bags "
                            "have no human-controlled steps")
    return DataCheck("interaction bags with human-controlled steps", check)


def needs_undesirable() -> DataCheck:
    def check(samples: SampleSet, config) -> None:
        name = config.method
        if not samples.undesirable.any():
            raise DataError(f"{name}: no undesirable samples (no policy steps before any intervention)")
    return DataCheck("undesirable steps", check)


def needs_tpo_windows() -> DataCheck:
    def check(samples: SampleSet, config) -> None:
        name = config.method
        if len(samples.tpo_windows(config.method_config.tpo_window)) == 0:
            raise DataError(f"{name}: no intervention has policy steps right before it to pair with")
    return DataCheck("policy steps right before an intervention", check)


def all_checks(*checks: DataCheck) -> DataCheck:
    def check(samples: SampleSet, config) -> None:
        for c in checks:
            c(samples, config)
    return DataCheck(", ".join(c.needs for c in checks), check)


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------
def sampling_of(config) -> str:
    """The sampling a run uses: `config.sampling`, or its method's default when that is null."""
    return config.sampling or get_method(config.method).default_sampling


def group_shares(samples: SampleSet, pool: np.ndarray, config) -> tuple[dict, dict]:
    """(groups, description) of the rows in `pool` (bool [N]) for a run's sampling.

    groups: desirable robot/expert steps (demos included), human corrections, undesirable steps,
    each the rows of `pool` in that group. description: what the run's batches hold, for the
    saved config and the study's tables: per group its rows, its share of the pool ("data"), its
    expected share of every batch ("batch") and how much more often than uniform sampling each
    of its rows is drawn ("repeat" = batch / data)."""
    mode = sampling_of(config)
    groups = {g: rows[pool[rows]] for g, rows in samples.groups().items()}
    sizes = {g: len(rows) for g, rows in groups.items()}
    total = max(1, sum(sizes.values()))
    ratios = {"desirable": config.ratio_desirable, "human": config.ratio_human,
              "undesirable": config.ratio_undesirable}
    if mode == "natural":
        batch = {g: n / total for g, n in sizes.items()}
    elif mode == "released":
        counts = group_counts(ratios, sizes, 10_000)  # the ratios renormalized over live groups
        batch = {g: c / 10_000 for g, c in counts.items()}
    else:
        batch = capped_shares(ratios, sizes, config.max_repeat)
    description: dict = {"sampling": mode}
    if mode != "natural":
        description["ratios"] = ratios
    if mode == "capped":
        description["max_repeat"] = config.max_repeat
    description["groups"] = {
        g: {"rows": sizes[g], "data": round(sizes[g] / total, 4), "batch": round(batch[g], 4),
            "repeat": round(batch[g] / (sizes[g] / total), 2) if sizes[g] else None}
        for g in groups}
    return groups, description


def pooled(rows: Callable[[SampleSet], np.ndarray], *, targets_exclude_undesirable: bool = False):
    """A sampler over the method's pool `rows(samples)` (minus held-out / unused episodes and
    dropped steps) as the run's `sampling` says: natural = uniform over the pool (without
    replacement per pass); released = the ratio_* shares of its groups per batch (fixed counts,
    the released APO code's 50 / 25 / 25); capped = those shares with no group drawn more than
    max_repeat times its natural rate (see samplers.capped_shares). The sampler carries
    `description` (see group_shares)."""
    def build(samples: SampleSet, config, batch: int, seed: int):
        pool = rows(samples) & ~samples.dropped & samples.trainable_rows()
        groups, description = group_shares(samples, pool, config)
        mode = description["sampling"]
        if mode == "natural":
            targets = np.nonzero(pool & ~samples.undesirable)[0] if targets_exclude_undesirable else None
            sampler = UniformSampler(np.nonzero(pool)[0], batch, seed, targets=targets)
        elif mode == "released":
            sampler = BalancedSampler(groups, description["ratios"], batch, seed)
        else:
            shares = {g: d["batch"] for g, d in description["groups"].items()}
            sampler = BalancedSampler(groups, None, batch, seed, shares=shares)
        sampler.description = description
        return sampler
    return build


def _tpo_pairs(samples: SampleSet, config, batch: int, seed: int):
    """Draws window pairs: `tpo_pairs` per process (0 = batch_size // (2 tpo_window))."""
    own = config.method_config
    windows = samples.tpo_windows(own.tpo_window)
    per_process = own.tpo_pairs or max(1, config.batch_size // (2 * own.tpo_window))
    processes = batch // config.batch_size  # `batch` is the global batch
    sampler = WindowSampler(windows, per_process * processes, seed)
    sampler.description = {"sampling": "natural", "windows": int(len(windows)),
                           "note": "window pairs drawn uniformly; each pair is one correction window "
                                   "and the policy window before it"}
    return sampler


# ---------------------------------------------------------------------------------------------
# The methods. Learning rates: the paper / public code use SFT 5e-4, APO 5e-5, TPO 2e-5; DAgger
# and Sirius fine-tune the deployed policy like APO does, so they share its rate by default.
# ---------------------------------------------------------------------------------------------
LOSSES = "apo_ros.training.losses"


def every_step(samples: SampleSet) -> np.ndarray:
    return np.ones(len(samples), bool)


register(Method("bc", "behaviour cloning of the demos", f"{LOSSES}:bc_step", pooled(lambda s: s.is_demo),
                needs_reference=False, default_lr=5e-4, check=needs_demos(), config=BCConfig))
register(Method("dagger", "HG-DAgger: demos + the operator's corrections", f"{LOSSES}:bc_step",
                pooled(lambda s: s.is_demo | s.human_mask()), needs_reference=False, default_lr=5e-5,
                check=needs_human_steps(), config=DaggerConfig))
register(Method("sirius", "every step, weighted by its Sirius class", f"{LOSSES}:sirius_step",
                pooled(every_step), needs_reference=False, default_lr=5e-5,
                check=needs_interaction(), config=SiriusConfig))
register(Method("kto", "KTO (TRL semantics) on desirable / human / undesirable steps",
                f"{LOSSES}:kto_step", pooled(every_step, targets_exclude_undesirable=True),
                needs_reference=True, default_lr=5e-5,
                check=all_checks(needs_interventions(), needs_undesirable()),
                default_sampling="released", config=KTOConfig))
register(Method("tpo", "trajectory DPO on the windows around each intervention (GRAPE)", f"{LOSSES}:tpo_step",
                _tpo_pairs, needs_reference=True, default_lr=2e-5,
                check=all_checks(needs_interventions(), needs_tpo_windows()), samplings=("natural",),
                config=TPOConfig))
register(Method("apo", "Action Preference Optimization: gripper masking + adaptive reweighting",
                f"{LOSSES}:apo_step", pooled(every_step, targets_exclude_undesirable=True),
                needs_reference=True, default_lr=5e-5,
                check=all_checks(needs_interventions(), needs_undesirable()),
                default_sampling="released", config=AposConfig))


def check_method_data(method: str, samples: SampleSet, config) -> None:
    """Raise DataError with a clear message when the data cannot train `method`."""
    get_method(method).check(samples, config)
