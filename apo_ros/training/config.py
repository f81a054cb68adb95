"""The training configuration: one dataclass, read from YAML, a dict and command-line flags.

`apo-ros train` exposes every field as a flag (`--steps 2000`, `--policy.image_size 64`), a YAML
file (`--config`) holds the same keys, and every mistake is one line naming the source and the
field (`train.yaml: steps: expected int, got 'ten'`), through the shared `apo_ros.config` helper.

`TrainConfig` holds what every method uses; the chosen method's own settings (beta, z0_clamp,
label_smoothing ...) are its config class from the method registry (`method_configs.py`), held in
`method_config`. They are written flat all the same: `method: apo` and `beta: 0.2` side by side in
YAML, `--beta 0.2`, `TrainConfig(method="apo", beta=0.2)`; a setting the chosen method does not
take is refused, naming it and the method. Checks across the shared fields live in
`TrainConfig.__post_init__`, each method's in its config class; the method-specific defaults of
shared fields (learning rate, sampling) come from the registry.

`policy` holds the build options of a fresh policy as given (`--policy.hidden 256`): the kind is
`--init`, not a config field, so `policy_options(kind)` builds that kind's class (one per kind,
named by its `PolicyKind`) once the kind is known, refusing an option the kind does not take.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from apo_ros.config import (
    choose,
    config_to_dict,
    decode_choice_options,
    flat_choice,
    later_choice,
    parse_config,
)
from apo_ros.errors import ConfigError
from apo_ros.policies.factory import POLICY_KINDS
from apo_ros.policies.options import PolicyOptions
from apo_ros.training.method_configs import MethodConfig
from apo_ros.training.registry import METHODS, SAMPLINGS, get_method, method_names, sampling_of

DEFAULT_METHOD = "apo"

def _flat_method_options(cls):
    """Let `TrainConfig(method="apo", beta=0.2)` take the method's own settings flat, as YAML
    files, dicts and flags do (the study builds its runs that way): they are parsed into the
    method's config class, a setting the method does not take refused by name."""
    generated = cls.__init__
    shared = {f.name for f in dataclasses.fields(cls)}

    @functools.wraps(generated)
    def __init__(self, **settings) -> None:
        own = {k: settings.pop(k) for k in list(settings) if k not in shared}
        if own:
            method = settings.get("method", DEFAULT_METHOD)
            given = settings.get("method_config")
            own = {**(config_to_dict(given) if isinstance(given, MethodConfig) else {}), **own}
            parsed = parse_config(cls, overrides={"method": method, **own}, source="TrainConfig")
            settings["method_config"] = parsed.method_config
        generated(self, **settings)

    cls.__init__ = __init__
    return cls


@_flat_method_options
@dataclass
class TrainConfig:
    """Everything a training run depends on. YAML files (`--config`) hold these keys and the
    chosen method's own settings; every key is also a flag of `apo-ros train`."""

    # the training method
    method: str = DEFAULT_METHOD
    # optimizer steps in total (a resumed run continues up to this)
    steps: int = 1000
    # samples per step and process (tpo: step samples, see tpo_pairs)
    batch_size: int = 32
    # peak learning rate; null = the method's default (`apo-ros train --help` lists them)
    lr: float | None = None
    # AdamW decoupled weight decay (the paper uses plain Adam: 0)
    weight_decay: float = 0.0
    # linear warmup from 0 to lr over this many steps (paper: 10)
    warmup_steps: int = 10
    # after warmup: cosine (to min_lr_ratio * lr) or constant
    schedule: str = "cosine"
    # floor of the cosine schedule, as a fraction of lr
    min_lr_ratio: float = 0.0
    # max global gradient L2 norm (0 = no clipping, the norm is still logged)
    grad_clip: float = 1.0
    # batch size of the one-off reference pass and of validation passes
    reference_batch_size: int = 64
    # how batches are drawn from the method's steps: natural (uniform over them: each group at
    # its share of the data), released (the ratio_* shares per batch, the released APO code's
    # 0.5 / 0.25 / 0.25: corrections ~5x their share), capped (the ratio_* shares, but no group
    # drawn more than max_repeat times its natural rate); null = the method's default (`apo-ros
    # train --help` lists them; some methods take only some samplings)
    sampling: str | None = None
    # capped sampling: the most a group's rows are drawn, relative to natural sampling (>= 1;
    # 1 = natural)
    max_repeat: float = 2.0
    # released / capped sampling: share of desirable robot/expert steps (demos included)
    ratio_desirable: float = 0.5
    # released / capped sampling: share of human correction steps
    ratio_human: float = 0.25
    # released / capped sampling: share of undesirable (pre-intervention) steps
    ratio_undesirable: float = 0.25
    # policy steps before an intervention labeled undesirable (the undesirable group every
    # sampling draws from; kto and apo learn from them)
    k: int = 10
    # drop no-op policy steps (arm motion below noop_threshold) from the data and skip them when
    # counting the k undesirable steps, as the released code
    drop_noop: bool = False
    # no-op threshold (released code: 0.05) on sum over the arm dims of |a| / max(|q01|, |q99|):
    # the policy's action scale, with zero kept at zero
    noop_threshold: float = 0.05
    # demo episodes used: all; matched (as many as the interaction data has intervened episodes:
    # the paper's real-world mix of 20 intervened trajectories + 20 demos); equal (as many as
    # interaction episodes, intervened or not); or a number
    demo_mix: str = "all"
    # share of demo bags and of interaction bags held out for validation (0 = none)
    val_fraction: float = 0.0
    # steps between validation passes (token NLL on held-out episodes)
    val_every: int = 50
    # validation rows per set (a fixed random subset when there are more)
    val_max_samples: int = 2048
    # what early stopping and best selection watch: demos, data (held-out corrections) or auto
    val_metric: str = "auto"
    # stop after this many validation passes without improvement (0 = never)
    patience: int = 0
    # with validation: the final policy is the best validation pass's weights
    select_best: bool = True
    # random shift + brightness of the policy's images
    augment: bool = True
    # max shift in pixels
    aug_shift: int = 4
    # brightness factor range 1 +- this
    aug_brightness: float = 0.1
    # seeds model init, sampling, augmentation
    seed: int = 0
    # cpu, cuda, cuda:1 ... (null = cuda when available, else cpu)
    device: str | None = None
    # bfloat16 autocast on CUDA (ignored on CPU)
    bf16: bool = True
    # torch CPU threads (0 = torch default)
    threads: int = 0
    # steps between metric rows (CSV / TensorBoard / progress bar)
    log_every: int = 10
    # steps between checkpoints (0 = only at the end)
    save_every: int = 500
    # periodic checkpoints kept (oldest deleted)
    keep_checkpoints: int = 2
    # stop with a checkpoint after this many steps of this invocation (0 = run to steps)
    max_steps_this_run: int = 0
    # decoded-bag cache ("" = ~/.cache/apo_ros/samples, null = off)
    cache_dir: str | None = ""
    # rich progress bar
    progress: bool = True
    # TensorBoard events when tensorboard is installed
    tensorboard: bool = True
    # build options when --init is a policy kind (`--policy.hidden 256`, YAML `policy: {hidden:
    # 256}`): each kind takes its own (its PolicyOptions class); an option left out takes the
    # kind's default
    policy: dict = later_choice(PolicyOptions)
    # the method's own settings (its registered config class), written flat beside these keys;
    # null = the method's defaults
    method_config: MethodConfig = flat_choice("method")

    def __post_init__(self) -> None:
        self.policy = decode_choice_options(PolicyOptions, self.policy, "policy")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {method_names()}, got {self.method!r}")
        method = get_method(self.method)
        if self.method_config is None:
            self.method_config = method.config()
        if type(self.method_config) is not method.config:
            raise ValueError(f"method_config: {type(self.method_config).__name__} does not configure "
                             f"{self.method} (its settings are a {method.config.__name__})")
        self.demo_mix = str(self.demo_mix)
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 2 or not method.needs_reference,
             "batch_size must be >= 2 for preference objectives"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.schedule in ("cosine", "constant"), "schedule must be 'cosine' or 'constant'"),
            (self.sampling is None or self.sampling in SAMPLINGS,
             f"sampling must be one of {list(SAMPLINGS)} or null (the method's default)"),
            (self.sampling is None or self.sampling in method.samplings,
             f"{self.method} takes sampling {list(method.samplings)}"),
            (self.max_repeat >= 1, "max_repeat must be >= 1 (1 = natural sampling)"),
            (min(self.ratio_desirable, self.ratio_human, self.ratio_undesirable) >= 0
             and self.ratio_desirable + self.ratio_human + self.ratio_undesirable > 0,
             "ratio_desirable, ratio_human, ratio_undesirable must be >= 0, not all 0"),
            (self.k >= 0, "k must be >= 0"),
            (self.noop_threshold >= 0, "noop_threshold must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (self.lr is None or self.lr > 0, "lr must be > 0"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.val_every >= 1, "val_every must be >= 1"),
            (self.val_max_samples >= 1, "val_max_samples must be >= 1"),
            (self.val_metric in ("auto", "demos", "data"), "val_metric must be 'auto', 'demos' or 'data'"),
            (self.patience >= 0, "patience must be >= 0"),
            (self.patience == 0 or self.val_fraction > 0,
             "patience (early stopping) needs validation episodes: set val_fraction > 0"),
            (self.demo_mix in ("all", "matched", "equal") or self.demo_mix.isdigit(),
             "demo_mix must be 'all', 'matched', 'equal' or a number of demo episodes"),
            (self.reference_batch_size >= 1, "reference_batch_size must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def policy_options(self, kind: str) -> PolicyOptions:
        """`policy` as the options of `kind` (ConfigError naming an option the kind does not take)."""
        if kind not in POLICY_KINDS:
            raise ConfigError(f"unknown policy kind {kind!r} (known: {', '.join(POLICY_KINDS)})")
        return choose(PolicyOptions, kind, self.policy, source="policy", what="policy")

    @property
    def peak_lr(self) -> float:
        return float(self.lr) if self.lr is not None else get_method(self.method).default_lr

    @property
    def effective_sampling(self) -> str:
        """`sampling`, or the method's default when null."""
        return sampling_of(self)

    def effective(self) -> dict:
        """The settings a null field leaves to the method, as this run uses them (for the saved
        config and the study's tables)."""
        return {"lr": self.peak_lr, "sampling": self.effective_sampling, **self.method_config.effective()}

    def to_dict(self) -> dict:
        """Plain YAML / JSON types, the method's settings flat beside the shared ones."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping, *, source: str = "config") -> TrainConfig:
        """From a mapping of options (ConfigError naming `source` and the field on a mistake)."""
        return parse_config(cls, overrides=dict(d), source=source)

    @classmethod
    def from_yaml(cls, path: str, **overrides) -> TrainConfig:
        """From a YAML file, `overrides` (not None) winning."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return parse_config(cls, yaml_path=path, overrides=given or None, source="overrides")


def learning_rate(config: TrainConfig, step: int) -> float:
    """lr at (0-based) step: linear warmup over warmup_steps, then cosine / constant."""
    peak = config.peak_lr
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return peak
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.min_lr_ratio
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
