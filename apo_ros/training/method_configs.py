"""Each training method's own settings: one dataclass per method, each checking its own rules.

`MethodConfig` is a draccus ChoiceRegistry (as LeRobot's policy configs): `register(Method(...,
config=AposConfig))` in `registry.py` files the class under the method's name, and `TrainConfig`
holds the chosen method's instance in `method_config`. Users never write that field: YAML keys,
flags and dicts stay flat (`method: apo` + `beta: 0.2`), and a key the chosen method does not
take is refused, naming the key and the method (apo_ros.config's "flat choice" fields).

Related methods share settings by inheritance (kto and apo are preference methods with a z0;
sirius is bc with class weights). A setting several methods take must have one type and one
meaning in all of them: the flag `--beta` is shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import draccus

Z0_MODES: tuple[str, ...] = ("exact", "neighbour_labels", "matched")


@dataclass
class MethodConfig(draccus.ChoiceRegistry):
    """A method without settings of its own; subclasses add theirs and check them in
    `__post_init__` (ValueError naming the field)."""

    def label_settings(self) -> dict:
        """`LabelConfig` fields this method sets (the rest keep LabelConfig's defaults)."""
        return {}

    def soft_targets(self) -> bool:
        """Whether the bc loss trains on softened token targets (label smoothing / bin_sigma)."""
        return False

    def z0_pairs(self) -> str | None:
        """How the reference scores z0's mismatched pairs (`z0_mode`), None: no z0."""
        return None

    def effective(self) -> dict:
        """What the settings left null resolve to (saved with the run)."""
        return {}


@dataclass
class BCConfig(MethodConfig):
    """Token NLL on the method's steps (sirius weights it per class)."""

    # share of the uniform distribution mixed into each token target
    label_smoothing: float = 0.0
    # Gaussian target over neighbouring bins, std in bins (small / state policies)
    bin_sigma: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.bin_sigma < 0:
            raise ValueError(f"bin_sigma must be >= 0, got {self.bin_sigma}")

    def soft_targets(self) -> bool:
        return self.label_smoothing > 0 or self.bin_sigma > 0


@dataclass
class DaggerConfig(BCConfig):
    """HG-DAgger: bc on the demos and the operator's corrections."""


@dataclass
class SiriusConfig(BCConfig):
    """bc on every step, weighted by its Sirius class."""

    # steps before an intervention that form Sirius' pre-intervention class
    sirius_window: int = 15

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sirius_window < 0:
            raise ValueError(f"sirius_window must be >= 0, got {self.sirius_window}")

    def label_settings(self) -> dict:
        return {"sirius_window": self.sirius_window}


@dataclass
class PreferenceConfig(MethodConfig):
    """Methods that compare the policy with its frozen reference."""

    # reward scale (paper, TRL and GRAPE: 0.1)
    beta: float = 0.1
    # the frozen reference's scores: cached (once per data set) or online (every step)
    reference: str = "cached"

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.reference not in ("cached", "online"):
            raise ValueError(f"reference must be 'cached' or 'online', got {self.reference!r}")


@dataclass
class TPOConfig(PreferenceConfig):
    """Trajectory DPO on the windows around each intervention (GRAPE)."""

    # max steps per window (GRAPE public code: 8)
    tpo_window: int = 8
    # window pairs per step; 0 = max(1, batch_size // (2 * tpo_window))
    tpo_pairs: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tpo_window < 1:
            raise ValueError(f"tpo_window must be >= 1, got {self.tpo_window}")
        if self.tpo_pairs < 0:
            raise ValueError(f"tpo_pairs must be >= 0, got {self.tpo_pairs}")


@dataclass
class KTOConfig(PreferenceConfig):
    """KTO (TRL semantics): desirable and undesirable steps against a reference point z0."""

    # z0 clamp when `z0_clamp` is null: TRL's [0, inf]
    default_z0_clamp: ClassVar[tuple[float, float]] = (0.0, math.inf)

    # static lambda_D (kto; apo with reweight off)
    desirable_weight: float = 1.0
    # static lambda_U
    undesirable_weight: float = 1.0
    # z0's mismatched pairs: exact (a second scoring: sample i's observation with its partner's
    # action tokens as the teacher-forced input, as KTO/TRL), neighbour_labels (the partner's
    # tokens scored on sample i's OWN teacher-forced pass, no second scoring, as the released APO
    # code) or matched (the samples' own log-ratios, a cheap approximation)
    z0_mode: str = "exact"
    # z0 clamp [min, max] (inf allowed, e.g. [0, inf]); null = the method's default: apo
    # [-5, 5] (the released APO code's kl_min / kl_max), kto [0, inf] (TRL)
    z0_clamp: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.z0_mode not in Z0_MODES:
            raise ValueError(f"z0_mode must be one of {list(Z0_MODES)}, got {self.z0_mode!r}")
        if min(self.desirable_weight, self.undesirable_weight) < 0:
            raise ValueError("desirable_weight and undesirable_weight must be >= 0")
        if self.z0_clamp is not None:
            self.z0_clamp = [float(v) for v in self.z0_clamp]
            if len(self.z0_clamp) != 2 or self.z0_clamp[0] > self.z0_clamp[1]:
                raise ValueError("z0_clamp must be [min, max] with min <= max (inf allowed), or null "
                                 "for the method's default")

    def z0_pairs(self) -> str | None:
        return self.z0_mode

    def effective(self) -> dict:
        return {"z0_clamp": list(self.effective_z0_clamp)}  # null: unbounded on that side

    @property
    def effective_z0_clamp(self) -> tuple[float | None, float | None]:
        """(min, max) of z0's clamp, None = unbounded on that side: `z0_clamp`, or the method's
        default when null."""
        lo, hi = (float(v) for v in (self.z0_clamp if self.z0_clamp is not None else self.default_z0_clamp))
        return (None if lo == -math.inf else lo), (None if hi == math.inf else hi)


@dataclass
class AposConfig(KTOConfig):
    """Action Preference Optimization: KTO with gripper masking and adaptive reweighting."""

    # the released APO code's kl_min / kl_max
    default_z0_clamp: ClassVar[tuple[float, float]] = (-5.0, 5.0)

    # leave the gripper token out of undesirable samples' reward
    mask_gripper: bool = True
    # adaptive lambda from the decoded-action error
    reweight: bool = True
    # sum (the paper's total, within micro-groups, averaged over them) or mean
    apo_reduction: str = "sum"
    # rows per micro-group of the adaptive weights and the sum (the paper's per-device batch;
    # 0 = the whole batch)
    apo_weight_group: int = 8
    # the adaptive weights divide each error by its group's error sum (the paper's formula:
    # lambda_D ~0.15, lambda_U ~0.65 in groups of 8) or mean (both ~0.45 in training here)
    apo_weight_norm: str = "sum"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.apo_reduction not in ("sum", "mean"):
            raise ValueError(f"apo_reduction must be 'sum' or 'mean', got {self.apo_reduction!r}")
        if self.apo_weight_group < 0:
            raise ValueError(f"apo_weight_group must be >= 0, got {self.apo_weight_group}")
        if self.apo_weight_norm not in ("sum", "mean"):
            raise ValueError(f"apo_weight_norm must be 'sum' or 'mean', got {self.apo_weight_norm!r}")
