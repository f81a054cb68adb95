"""The study's settings (`StudyConfig`), the methods it compares and the fields that shape its
cached results.

The compared methods come from the training registry: every registered method except `bc` (the
base and the fresh-expert controls are trained with bc), then the study's own controls. A method
registered in `apo_ros.training.registry` is compared without touching this package.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from apo_ros.errors import ConfigError
from apo_ros.sim.task_specs import TASK_SPECS
from apo_ros.training.registry import METHODS as REGISTERED_METHODS

# The method the base policy and the fresh-expert controls are trained with.
BASE_METHOD = "bc"
# "fresh": bc on as many new expert episodes as there are deployments (is there headroom?);
# "fresh_matched": bc on new expert episodes holding as many steps as the operator's corrections
# (are corrections worth more than the same amount of expert data?).
CONTROLS = ("fresh", "fresh_matched")


def trainable_methods() -> tuple[str, ...]:
    """Every registered training method (what a variant can be a variant of)."""
    return tuple(REGISTERED_METHODS)


def learning_methods() -> tuple[str, ...]:
    """The registered methods that learn from the deployments: all but the base's own."""
    return tuple(m for m in REGISTERED_METHODS if m != BASE_METHOD)


def study_methods() -> tuple[str, ...]:
    """The methods a study can compare (besides the variants): the learners, then the controls."""
    return (*learning_methods(), *CONTROLS)


# apo_natural: APO drawing its batches at the data's natural shares instead of the released
# 0.5 / 0.25 / 0.25 mix (the sampling setting, shown both ways in every table).
# dagger_retrain: DAgger as its authors define it - aggregate the data, train a new policy on all
# of it - i.e. the base's own recipe (from scratch, base_steps at base_lr) on the demos + the
# corrections; fresh_matched_retrain: the same recipe on the demos + the matched fresh expert
# steps (its control). A fine-tune from the base does not absorb data it can absorb from scratch
# (docs/experiments/demo_study.md).
VARIANTS: dict[str, dict] = {
    "apo_natural": {"method": "apo", "sampling": "natural"},
    "dagger_retrain": {"method": "dagger", "init": "scratch"},
    "fresh_matched_retrain": {"method": "bc", "init": "scratch", "data": "fresh_matched"},
}
# Variant keys the study reads itself (not TrainConfig fields): where a run starts ("base": the
# deployed base, fine-tuned over the sweep; "scratch": a new policy trained with the base's
# recipe, one setting, no sweep) and what it trains on ("deployments": the demos + round 0; a
# control's name: the demos + that control's expert data).
STUDY_VARIANT_KEYS = {"init": ("base", "scratch"), "data": ("deployments", *CONTROLS)}
# Fields whose change makes cached job results wrong (the job keys do not hold them): a study
# resumes only with the same values. The others (tasks, seeds, methods, lrs, rounds, workers...)
# only add or select jobs.
RESULT_FIELDS = ("policy_kind", "policy", "demo_task", "demo_episodes", "demo_noise", "operator_noise",
                 "operator", "train_overrides", "base_steps",
                 "base_lr", "batch_size", "interaction_episodes", "validation_episodes",
                 "test_episodes", "round_episodes", "round_test_episodes", "max_steps", "method_overrides",
                 "variants")
VALIDATION_SEED0 = 300_000
TEST_SEED0 = 100_000


@dataclass
class StudyConfig:
    # Simulator tasks compared (apo-ros sim tasks lists them).
    tasks: list[str] = field(default_factory=lambda: ["lemon_on_plate", "square_on_stick"])
    # Everything is written here (bags, checkpoints, job results, the report).
    out: str = "study_out"
    # Policy kind of the base: "state" (MLP over proprio + object poses, no rendering) or "small"
    # (the CNN image policy, both cameras rendered: about ten times the cost per episode).
    policy_kind: str = "state"
    # Build options of the base policy (train --policy.* options): one action per prediction,
    # 64 bins per dimension (about 0.5 mm for a translation), a 128-wide MLP, actions decoded as
    # the expected value of each arm dimension's bins (argmax: a base at ~0.25 instead of ~0.6;
    # docs/experiments/demo_study.md).
    policy: dict = field(default_factory=lambda: {"chunk_size": 1, "hidden": 128, "n_bins": 64,
                                                  "decode": "mean"})
    # Seeds of the whole pipeline (demos, base, deployment, methods).
    pipeline_seeds: int = 3
    # Expert demonstrations per pipeline seed, and their action noise. Noise-free: with argmax
    # decoding over narrow bins, noisy demos make a state policy freeze (docs/experiments/demo_study.md).
    # 30 demos: a base that more data of the deployment distribution still improves (100 demos
    # gave a data-saturated base that no method could move; docs/experiments/demo_study.md).
    demo_episodes: int = 30
    demo_noise: float = 0.0
    # The task whose demos train the base (None: the deployment task). A narrower task (e.g.
    # lemon_on_plate_easy) gives a base that has not seen the deployment distribution.
    demo_task: str | None = None
    # Action noise of the simulated operator's corrections (same reason as demo_noise).
    operator_noise: float = 0.0
    # Extra OperatorConfig fields of the simulated operator (apo-ros sim: the operator's rules).
    operator: dict = field(default_factory=dict)
    # The base: bc steps and learning rate.
    base_steps: int = 8000
    base_lr: float = 1e-3
    # Samples per optimizer step (every method).
    batch_size: int = 64
    # Base deployments with the simulated operator (round 0), per pipeline seed. 200: corrections
    # worth about as many steps as the demos (20 deployments held ~170 operator steps per seed,
    # too few to move anything; docs/experiments/demo_study.md).
    interaction_episodes: int = 200
    # Methods compared (each trained from the base on the same data).
    methods: list[str] = field(default_factory=lambda: [*study_methods(), *VARIANTS])
    # The tuning sweep, the same for every method: learning rates x step counts.
    sweep_lrs: list[float] = field(default_factory=lambda: [3e-5, 3e-4, 1e-3])
    sweep_steps: list[int] = field(default_factory=lambda: [1000, 4000])
    # "constant": one run per lr at a constant rate, checkpointed at every step count (cheap);
    # "cosine": one run per setting, the rate decayed to zero over its steps, as the base is
    # trained ("train until the new data is learned").
    sweep_schedule: str = "cosine"
    # Validation episodes per sweep checkpoint (seeds from 300000) and test episodes per policy
    # (seeds from 100000), the same initial states for every policy and pipeline seed.
    validation_episodes: int = 50
    test_episodes: int = 100
    # Lifelong rounds after round 0 (lifelong_methods), deployments per round, test episodes per
    # round's policy.
    rounds: int = 3
    round_episodes: int = 50
    round_test_episodes: int = 100
    # Parallel worker processes, one torch thread each.
    workers: int = 2
    # Episodes evaluated side by side in one process (batched policy forward passes).
    eval_batch: int = 50
    # Episode length cap (None = the task's own).
    max_steps: int | None = None
    # Bootstrap draws for the intervals.
    bootstrap_draws: int = 4000
    # Extra TrainConfig fields for every method (e.g. the batch sampling, stated in the tables),
    # then per method (e.g. {"apo": {"beta": 0.2}}), for every run of it.
    train_overrides: dict = field(default_factory=dict)
    method_overrides: dict = field(default_factory=dict)
    # Methods whose lifelong rounds are run (each round: deploy, add the deployment, retrain).
    lifelong_methods: list[str] = field(default_factory=lambda: ["dagger_retrain"])
    # Named variants of a method, compared as methods of their own and tuned the same way: name ->
    # {"method": a registered training method, TrainConfig field: value, ...}; list the name in `methods`.
    # The default one, apo_natural, is APO drawing its batches at the data's natural shares.
    variants: dict = field(default_factory=lambda: dict(VARIANTS))

    def __post_init__(self) -> None:
        unknown = [t for t in [*self.tasks, *([self.demo_task] if self.demo_task else [])]
                   if t not in TASK_SPECS]
        if unknown or not self.tasks:
            raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(TASK_SPECS)}")
        methods, trainable = study_methods(), trainable_methods()
        for name, v in self.variants.items():
            if name in methods or not isinstance(v, dict) or v.get("method") not in trainable:
                raise ValueError(f"variant {name!r} must be a new name with a 'method' in {list(trainable)}, "
                                 f"got {v!r}")
            for key, allowed in STUDY_VARIANT_KEYS.items():
                if v.get(key, allowed[0]) not in allowed:
                    raise ValueError(f"variant {name!r}: {key} must be one of {list(allowed)}, "
                                     f"got {v[key]!r}")
            if v.get("init") == "scratch" and REGISTERED_METHODS[v["method"]].needs_reference:
                raise ValueError(f"variant {name!r}: {v['method']} is defined against the deployed "
                                 "policy (its frozen reference), so it starts from the base; "
                                 "init 'scratch' is for methods without a reference")
        bad = [m for m in self.methods if m not in methods and m not in self.variants]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; choose from {list(methods)} or the variants "
                             f"{list(self.variants)}")
        bad = [m for m in self.lifelong_methods if m not in self.methods or self.is_control(m)]
        if bad:
            raise ValueError(f"lifelong_methods {bad} must be compared methods learning from the "
                             f"deployments (not the controls {list(CONTROLS)}): {self.methods}")
        checks = [(self.pipeline_seeds >= 1, "pipeline_seeds must be >= 1"),
                  (self.workers >= 1, "workers must be >= 1"),
                  (self.rounds >= 0, "rounds must be >= 0"),
                  (self.demo_episodes >= 1 and self.interaction_episodes >= 1,
                   "demo_episodes and interaction_episodes must be >= 1"),
                  (bool(self.sweep_lrs) and all(lr > 0 for lr in self.sweep_lrs),
                   "sweep_lrs must be positive"),
                  (bool(self.sweep_steps) and all(s >= 1 for s in self.sweep_steps),
                   "sweep_steps must be >= 1"),
                  (self.validation_episodes >= 1 and self.test_episodes >= 1,
                   "validation_episodes and test_episodes must be >= 1"),
                  (self.policy_kind in ("state", "small"), "policy_kind must be 'state' or 'small'"),
                  (self.sweep_schedule in ("constant", "cosine"),
                   "sweep_schedule must be 'constant' or 'cosine'")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def render(self) -> bool:
        return self.policy_kind != "state"

    def trainer(self, name: str) -> tuple[str, dict]:
        """A compared method's name -> (the trainer's method, its TrainConfig overrides)."""
        common = dict(self.train_overrides)
        if name in self.variants:
            v = {k: x for k, x in self.variants[name].items() if k not in STUDY_VARIANT_KEYS}
            method = v.pop("method")
            return method, {**common, **self.method_overrides.get(method, {}), **v}
        method = BASE_METHOD if name in CONTROLS else name
        return method, {**common, **self.method_overrides.get(name, {})}


    def init_of(self, name: str) -> str:
        """Where a compared method's runs start: "base" (fine-tuned over the sweep) or "scratch"."""
        return self.variants.get(name, {}).get("init", "base")

    def data_of(self, name: str) -> str:
        """What a compared method trains on besides the demos: "deployments" or a control's data."""
        if name in CONTROLS:
            return name
        return self.variants.get(name, {}).get("data", "deployments")

    def is_control(self, name: str) -> bool:
        """A control learns from fresh expert data, not from the deployments."""
        return self.data_of(name) in CONTROLS

    def settings(self, name: str) -> list[tuple[float, int]]:
        """The (lr, steps) a compared method is tried at: the sweep, or the base's own recipe for
        a run from scratch."""
        if self.init_of(name) == "scratch":
            return [(self.base_lr, self.base_steps)]
        return [(lr, s) for lr in self.sweep_lrs for s in sorted(self.sweep_steps)]


def check_resumable(out: str, config: StudyConfig) -> None:
    """Record the result-shaping fields in OUT/study_config.json, or refuse to resume a study
    made with other values (its cached jobs would be silently reused)."""
    mine = {k: v for k, v in asdict(config).items() if k in RESULT_FIELDS}
    path = os.path.join(out, "study_config.json")
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        def same(k: str) -> bool:
            if k == "variants":  # a new variant only adds jobs; a changed one would reuse them
                return all(before[k][n] == mine[k][n] for n in set(before[k]) & set(mine[k]))
            return json.dumps(before[k], sort_keys=True) == json.dumps(mine[k], sort_keys=True)

        differ = [k for k in RESULT_FIELDS if k in before and not same(k)]
        if differ:
            detail = "; ".join(f"{k}: {before[k]!r} there, {mine[k]!r} now" for k in differ)
            raise ConfigError(f"{out} holds a study made with other settings ({detail}): its cached "
                              "results would be reused. Use another --out, or the same settings")
        mine["variants"] = {**before.get("variants", {}), **mine["variants"]}
    os.makedirs(out, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(mine, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
