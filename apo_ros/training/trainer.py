"""The trainer: bags + a starting policy -> a new checkpoint, with one of six objectives.

    train_policy(TrainConfig(method="apo", steps=2000), demos=["bags/demos"],
                 data=["bags/round1"], init="runs/base/policy", out="runs/apo1")  -> "runs/apo1/policy"

Output directory:

    <out>/policy/                 the final checkpoint (apo_ros policy format; what the policy node loads)
    <out>/checkpoints/step-N/     periodic checkpoints: policy/ + trainer_state/ (resume)
    <out>/metrics.csv             one row per log interval
    <out>/tb/                     TensorBoard events (when tensorboard is installed)
    <out>/train_config.json       the resolved configuration
    <out>/reference_cache.safetensors  frozen-reference log-probs (kto, apo, tpo with reference=cached)

Reference log-probs (kto / apo / tpo): with `reference: cached` (default) the frozen reference
scores every sample once before training, on UN-AUGMENTED inputs; the policy then sees augmented
inputs each step. The reward r = log pi(aug obs) - log ref(clean obs) then carries an augmentation
bias, but z0 is computed from the same kind of pair (policy on augmented, reference on clean), so
the bias cancels to first order in r - z0; `reference: online` runs the reference every step on
the same augmented inputs (what the released APO code does; slower). For the exact z0 estimate
in cached mode, each sample's mismatched partner is FIXED: a random single-cycle permutation of
the data set chosen from the seed (sample i's observation scored on partner(i)'s action), so the
reference's mismatched log-probs can be cached too; online mode uses the batch neighbour i+1 as
KTO does. Both estimate the same quantity: log-ratios on unrelated observation/action pairs.

Determinism and resume: all randomness is a function of (seed, step) — the sampler permutations,
batch shuffles and augmentation draws — plus torch's generator, saved with each checkpoint. The
learning rate is a pure function of the step. So resuming from step N reproduces the parameters
of an uninterrupted run (tested), as long as the data and the device are the same.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from apo_ros.training import objectives as O
from apo_ros.training.data import (
    AugmentConfig,
    BalancedSampler,
    DataError,
    LabelConfig,
    SampleSet,
    UniformSampler,
    augment_images,
    cache_key,
    encode_targets,
    load_samples,
)
from apo_ros.training.state import load_state, read_state, save_state

METHODS: tuple[str, ...] = ("bc", "dagger", "sirius", "kto", "tpo", "apo")
NEEDS_INTERACTION = ("dagger", "sirius", "kto", "tpo", "apo")
NEEDS_INTERVENTIONS = ("kto", "tpo", "apo")
NEEDS_REFERENCE = ("kto", "tpo", "apo")
# Paper / public code learning rates (REFERENCE 1-2): SFT 5e-4, APO 5e-5, TPO 2e-5. DAgger and
# Sirius fine-tune the deployed policy like APO does, so they share its rate by default.
DEFAULT_LR = {"bc": 5e-4, "dagger": 5e-5, "sirius": 5e-5, "kto": 5e-5, "apo": 5e-5, "tpo": 2e-5}
CSV_COLUMNS = ("step", "epoch", "lr", "loss", "grad_norm", "samples_per_s", "z0", "z0_unclamped",
               "reward_desirable", "reward_undesirable", "reward_margin", "weight_desirable",
               "weight_undesirable", "pair_accuracy", "train_nll", "val_nll_demos", "val_nll_data",
               "elapsed_s")
VALIDATION_SETS = ("demos", "data")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume, ...); the message says why."""


@dataclass
class TrainConfig:
    """Everything a training run depends on. YAML files (`--config`) hold these keys."""

    method: str = "apo"  # bc | dagger | sirius | kto | tpo | apo
    steps: int = 1000  # optimizer steps in total (a resumed run continues up to this)
    batch_size: int = 32  # samples per step (tpo: step samples, see tpo_pairs)
    lr: float | None = None  # peak learning rate; None = method default (DEFAULT_LR)
    weight_decay: float = 0.0  # AdamW decoupled weight decay (the paper uses plain Adam: 0)
    warmup_steps: int = 10  # linear warmup from 0 to lr (paper: 10)
    schedule: str = "cosine"  # after warmup: "cosine" (to min_lr_ratio * lr) or "constant"
    min_lr_ratio: float = 0.0  # floor of the cosine schedule, as a fraction of lr
    grad_clip: float = 1.0  # max global gradient L2 norm (0 = no clipping, norm still logged)
    # --- preference objectives (kto, apo, tpo) ---
    beta: float = 0.1  # reward scale (paper, TRL and GRAPE: 0.1)
    desirable_weight: float = 1.0  # static lambda_D (kto; apo with reweight off)
    undesirable_weight: float = 1.0  # static lambda_U
    z0_mode: str = "exact"  # "exact": mismatched pairs, second forward; "matched": released code's
    #                          approximation from each sample's own tokens (no extra forward)
    z0_min: float | None = 0.0  # z0 clamp, lower (KTO/TRL: 0; released APO code: -5)
    z0_max: float | None = None  # z0 clamp, upper (released APO code: 5); kto always clamps >= 0 only
    mask_gripper: bool = True  # apo: leave the gripper token out of undesirable samples' reward
    reweight: bool = True  # apo: adaptive lambda from the decoded-action error
    apo_reduction: str = "sum"  # apo: "sum" (paper: total = sum_i lambda_i L_i) or "mean"
    apo_weight_group: int = 8  # apo: rows per micro-group of the adaptive weights and the sum (the
    #                            paper's per-device batch; 0 = the whole batch), see adaptive_weights
    reference: str = "cached"  # "cached": reference log-probs once per data set; "online": every step
    reference_batch_size: int = 64  # batch size of the one-off reference pass
    # --- balanced sampler (kto, apo) ---
    ratio_desirable: float = 0.5  # share of desirable robot/expert steps (demos included) per batch
    ratio_human: float = 0.25  # share of human correction steps per batch
    ratio_undesirable: float = 0.25  # share of undesirable (pre-intervention) steps per batch
    # --- labels (REFERENCE 1-2) ---
    k: int = 10  # policy steps before an intervention labeled undesirable
    noop_filter: bool = False  # drop no-op policy steps (sum |a[:6]| < 0.05 normalized) as released code
    sirius_window: int = 15  # Sirius pre-intervention window
    # --- tpo ---
    tpo_window: int = 8  # max steps per window (GRAPE public code: 8)
    tpo_pairs: int = 0  # window pairs per step; 0 = max(1, batch_size // (2 * tpo_window))
    # --- behaviour-cloning targets (bc, dagger, sirius) ---
    label_smoothing: float = 0.0  # share of the uniform distribution mixed into each token target
    bin_sigma: float = 0.0  # Gaussian target over neighbouring bins, std in bins (small / state policies)
    # --- data mix, validation and early stopping ---
    demo_mix: str = "all"  # demo episodes used: "all", "equal" (as many as interaction episodes, the
    #                        paper's fine-tuning mix) or a number
    val_fraction: float = 0.0  # share of demo bags and of interaction bags held out for validation
    val_every: int = 50  # steps between validation passes (token NLL on held-out episodes)
    val_max_samples: int = 2048  # validation rows per set (a fixed random subset when there are more)
    val_metric: str = "auto"  # what early stopping / best selection watch: "demos" (held-out demos),
    #                           "data" (held-out operator corrections), "auto" (data when held out)
    patience: int = 0  # stop after this many validation passes without improvement (0 = never)
    select_best: bool = True  # with validation: the final policy is the best validation pass's weights

    augment: bool = True  # random shift + brightness
    aug_shift: int = 4  # max shift in pixels
    aug_brightness: float = 0.1  # brightness factor range 1 +- this
    # --- run ---
    seed: int = 0  # seeds model init, sampling, augmentation
    device: str | None = None  # None = cuda when available else cpu
    bf16: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch CPU threads (0 = torch default)
    log_every: int = 10  # steps between metric rows (CSV / TensorBoard / progress bar)
    save_every: int = 500  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # periodic checkpoints kept (oldest deleted)
    max_steps_this_run: int = 0  # stop with a checkpoint after this many steps (0 = run to `steps`)
    cache_dir: str | None = ""  # decoded-bag cache ("" = ~/.cache/apo_ros/samples, None = off)
    progress: bool = True  # rich progress bar
    tensorboard: bool = True  # write TensorBoard events when tensorboard is installed
    policy: dict = field(default_factory=dict)  # build options when init is a kind (e.g. image_size)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 2 or self.method in ("bc", "dagger", "sirius"),
             "batch_size must be >= 2 for preference objectives"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.schedule in ("cosine", "constant"), "schedule must be 'cosine' or 'constant'"),
            (self.z0_mode in ("exact", "matched"), "z0_mode must be 'exact' or 'matched'"),
            (self.reference in ("cached", "online"), "reference must be 'cached' or 'online'"),
            (self.apo_reduction in ("sum", "mean"), "apo_reduction must be 'sum' or 'mean'"),
            (self.tpo_window >= 1, "tpo_window must be >= 1"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (self.lr is None or self.lr > 0, "lr must be > 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.bin_sigma >= 0, "bin_sigma must be >= 0"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.val_every >= 1, "val_every must be >= 1"),
            (self.val_max_samples >= 1, "val_max_samples must be >= 1"),
            (self.val_metric in ("auto", "demos", "data"), "val_metric must be 'auto', 'demos' or 'data'"),
            (self.patience >= 0, "patience must be >= 0"),
            (self.patience == 0 or self.val_fraction > 0,
             "patience (early stopping) needs validation episodes: set val_fraction > 0"),
            (self.apo_weight_group >= 0, "apo_weight_group must be >= 0"),
            (str(self.demo_mix) in ("all", "equal") or str(self.demo_mix).isdigit(),
             "demo_mix must be 'all', 'equal' or a number of demo episodes"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def peak_lr(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.method]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown training options {unknown} (known: {sorted(known)})")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str, **overrides) -> TrainConfig:
        import yaml

        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except OSError as err:
            raise ValueError(f"{path}: cannot read ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of training options")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data, source=path)


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


# ---------------------------------------------------------------------------------------------
# Distributed (torchrun / accelerate launch): plain gradient all-reduce, no DDP wrapper, because
# the objectives call policy methods (token_logps, ...) rather than the module's forward.
# ---------------------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: str | None) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    try:  # accelerate launch (or torchrun) on GPUs: accelerate sets up the process group
        from accelerate import PartialState

        state = PartialState()
        if state.num_processes == world:
            return _Dist(state.process_index, state.num_processes, state.device)
    except ImportError:
        pass
    # accelerate absent, or a launcher it does not recognize (torchrun on CPUs): plain torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    dev = None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    return _Dist(rank, dist.get_world_size(), dev)


def _all_reduce_mean(tensor: torch.Tensor, dist_info: _Dist) -> torch.Tensor:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor)
        tensor /= dist_info.world
    return tensor


def _barrier(dist_info: _Dist) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------------------------------------
# Policy and reference
# ---------------------------------------------------------------------------------------------
POLICY_KIND_NAMES = ("small", "state", "vla_bins", "vla_fast")


def _statistics_from_samples(samples: SampleSet):
    from apo_ros.actions.statistics import ActionStatistics

    train = samples.trainable_rows()
    rows = samples.is_demo & train if (samples.is_demo & train).any() else train
    stats = ActionStatistics.from_actions(samples.actions[rows],
                                          num_trajectories=len(np.unique(samples.episode[rows])))
    proprio = samples.proprio[rows].astype(np.float64)
    stats.extra["proprio"] = {"mean": proprio.mean(0).tolist(), "std": proprio.std(0).tolist()}
    if samples.object_state.shape[1]:
        objects = samples.object_state[rows].astype(np.float64)
        stats.extra["object_state"] = {"mean": objects.mean(0).tolist(), "std": objects.std(0).tolist()}
    return stats


def _init_policy(init: str, config: TrainConfig, samples: SampleSet, device: str | None):
    """(policy, facts about where it came from). A kind name builds a fresh policy with
    statistics from the demo actions; anything else is a checkpoint directory."""
    from apo_ros.policies import build_policy, load_policy

    torch.manual_seed(config.seed)  # fresh weights / fresh LoRA adapters are a function of the seed
    if init in POLICY_KIND_NAMES and not os.path.isdir(init):
        stats = _statistics_from_samples(samples)
        options = dict(config.policy)
        if device is not None:
            options.setdefault("device", device)
        policy = build_policy(init, stats, instructions=list(samples.instructions), **options)
        return policy, {"init": init, "init_kind": init, "init_options": options,
                        "init_policy_id": None}
    if not os.path.isdir(init):
        raise DataError(f"--init {init}: neither a checkpoint directory nor a policy kind "
                        f"({', '.join(POLICY_KIND_NAMES)})")
    policy = load_policy(init, device=device)
    return policy, {"init": os.path.abspath(init), "init_kind": policy.kind,
                    "init_policy_id": policy.policy_id}


def _logps_and_argmax(policy, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor, want_argmax: bool,
                      encoding=None):
    """Teacher-forced per-token log-probs [B, L] and, when asked, the argmax token at each
    position from the SAME pass (as the released code; no extra autoregressive decode) when the
    policy exposes its logits, else from greedy decoding. `encoding`: the policy's
    `encode_observation(inputs)`, when the caller scores other tokens on it too."""
    if encoding is None:
        encoding = inputs
        logits_fn, logps_fn = getattr(policy, "token_logits", None), policy.token_logps
    else:
        logits_fn, logps_fn = policy.token_logits_encoded, policy.token_logps_encoded
    if want_argmax and hasattr(policy, "token_logits"):
        logits = logits_fn(encoding, tokens, mask).float()
        if logits.shape[-1] > int(tokens.max()):
            logp = torch.log_softmax(logits, -1)
            picked = logp.gather(-1, tokens.clamp(min=0)[..., None]).squeeze(-1)
            picked = torch.where(mask, picked, torch.zeros_like(picked))
            scores = logits.detach()
            allowed = getattr(policy, "allowed_ids", None)  # VLAs: action ids only (+ stop), as
            if isinstance(allowed, torch.Tensor):  # their constrained greedy decoding
                allowed = allowed.clone()
                stop = getattr(policy, "stop_id", None)
                if stop is not None:
                    allowed[stop] = True
                width = min(scores.shape[-1], allowed.shape[0])
                scores = scores[..., :width].masked_fill(~allowed[:width].to(scores.device), float("-inf"))
            return picked, scores.argmax(-1), mask
    logps = logps_fn(encoding, tokens, mask)
    if not want_argmax:
        return logps, None, None
    with torch.no_grad():
        pred, pred_mask = policy.predict_tokens(inputs)
    return logps, pred, pred_mask


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
class _Run:
    def __init__(self, config: TrainConfig, samples: SampleSet, policy, reference, out: str,
                 dist_info: _Dist, init_facts: dict, log=print):
        self.config, self.samples, self.policy, self.reference = config, samples, policy, reference
        self.out, self.dist, self.init_facts, self.log = out, dist_info, init_facts, log
        self.device = policy.device
        self.method = config.method
        self.chunk = int(policy.chunk_size)
        self.aug = AugmentConfig(config.augment, config.aug_shift, config.aug_brightness)
        self.autocast = config.bf16 and self.device.type == "cuda"
        smoothing = config.label_smoothing > 0 or config.bin_sigma > 0
        if smoothing and config.method in ("bc", "dagger", "sirius"):
            if not hasattr(policy, "token_logits"):
                raise TrainingError(f"label_smoothing / bin_sigma need a policy with token_logits "
                                    f"({policy.kind} has none)")
            if config.bin_sigma > 0 and policy.valid_target_ids.numel() != getattr(policy, "n_bins", -1):
                raise TrainingError(f"bin_sigma smooths over neighbouring bins of a policy whose tokens are "
                                    f"the bins (small, state); {policy.kind} tokens are not")
        self._encode_all()
        self._build_sampler()
        self._choose_validation_rows()
        self.ref_logps: torch.Tensor | None = None
        self.ref_kl: torch.Tensor | None = None
        self.partner: np.ndarray | None = None

    # ---- data --------------------------------------------------------------------------------
    def _encode_all(self) -> None:
        """Target tokens of every sample, once (they never change)."""
        self.tokens, self.token_mask = encode_targets(self.policy, self.samples)

    def _build_sampler(self) -> None:
        c, s = self.config, self.samples
        seed = c.seed + 1000003 * self.dist.rank
        self.sirius_w = None
        if self.method in ("bc", "dagger", "sirius"):
            pool = s.pool(self.method)
            if self.method == "sirius":
                from apo_ros.training.objectives import SIRIUS_CLASSES

                w = np.zeros(len(s), np.float32)
                w[pool] = O.sirius_weights([SIRIUS_CLASSES[i] for i in s.sirius[pool]])
                self.sirius_w = torch.from_numpy(w)
            self.sampler = UniformSampler(pool, c.batch_size, seed)
            self.pool_size = len(pool)
        elif self.method == "tpo":
            self.windows = s.tpo_windows(c.tpo_window)
            pairs = c.tpo_pairs or max(1, c.batch_size // (2 * c.tpo_window))
            self.sampler = UniformSampler(np.arange(len(self.windows)), pairs, seed)
            self.pool_size = len(self.windows)
        else:
            groups = s.groups()
            ratios = {"desirable": c.ratio_desirable, "human": c.ratio_human,
                      "undesirable": c.ratio_undesirable}
            self.sampler = BalancedSampler(groups, ratios, c.batch_size, seed)
            self.pool_size = int(sum(len(v) for v in groups.values()))

    # ---- validation ---------------------------------------------------------------------------
    def _choose_validation_rows(self) -> None:
        """Fixed rows for the token NLL: held-out demos, held-out operator corrections, and as many
        training rows (the method's desirable targets) for the train/held-out gap."""
        c, s = self.config, self.samples
        rng = np.random.default_rng([c.seed, 17])

        def cap(rows: np.ndarray) -> np.ndarray:
            if len(rows) > c.val_max_samples:
                rows = np.sort(rng.choice(rows, size=c.val_max_samples, replace=False))
            return rows

        self.val_rows = {kind: cap(s.validation_rows(kind)) for kind in VALIDATION_SETS}
        if self.method in ("bc", "dagger", "sirius"):
            train = s.pool(self.method)
        else:
            train = np.nonzero(s.desirable & ~s.dropped & s.trainable_rows())[0]
        self.train_rows = cap(train) if any(len(r) for r in self.val_rows.values()) else np.zeros(0, np.int64)
        metric = c.val_metric
        if metric == "auto":
            metric = "data" if len(self.val_rows["data"]) else "demos"
        self.val_metric = metric
        if c.val_fraction > 0 and not len(self.val_rows[metric]):
            need = ("2 or more --demos bags" if metric == "demos"
                    else "2 or more --data bags with human corrections")
            raise DataError(f"val_fraction {c.val_fraction}: no held-out {metric} to validate on "
                            f"(give {need})")

    @torch.no_grad()
    def token_nll(self, rows: np.ndarray) -> float:
        """Mean negative log-likelihood per real target token (nats/token) of the policy on `rows`:
        un-augmented inputs, eval mode (the policies have no dropout / BatchNorm, so this only
        matters for others)."""
        if len(rows) == 0:
            return float("nan")
        was_training = self.policy.training
        self.policy.eval()
        total, count = 0.0, 0.0
        try:
            bs = max(1, self.config.reference_batch_size)
            for lo in range(0, len(rows), bs):
                idx = rows[lo:lo + bs]
                inputs = self.inputs(idx, None)
                tok, mask = self.targets(idx)
                with self._autocast():
                    logps = self.policy.token_logps(inputs, tok, mask).float()
                total -= float(logps.sum())
                count += float(mask.sum())
        finally:
            self.policy.train(was_training)
        return total / max(count, 1.0)

    def validate(self) -> dict[str, float]:
        """{"val_nll_demos", "val_nll_data", "train_nll"} for the sets that have rows."""
        out = {f"val_nll_{kind}": self.token_nll(rows) for kind, rows in self.val_rows.items() if len(rows)}
        if out:
            out["train_nll"] = self.token_nll(self.train_rows)
        return out

    def inputs(self, idx: np.ndarray, augment_step: int | None) -> dict:
        images = None
        if self.policy.cameras:  # a state policy reads no image: none is gathered or augmented
            images = self.samples.images(idx, self.policy.cameras)
            if augment_step is not None and self.aug.enabled:
                rng = np.random.default_rng([self.config.seed, 7, self.dist.rank, augment_step])
                images = augment_images(images, rng, self.aug)
        object_state = self.samples.object_state[idx] if self.policy.uses_object_state else None
        return self.policy.prepare(images, self.samples.proprio[idx], self.samples.instruction_texts(idx),
                                   object_state=object_state)

    def targets(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tok, mask = self.tokens[idx], self.token_mask[idx]
        width = int(mask.any(0).nonzero().max()) + 1 if mask.any() else mask.shape[1]
        return tok[:, :width].to(self.device), mask[:, :width].to(self.device)

    # ---- reference cache ---------------------------------------------------------------------
    def reference_key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"init": self.init_facts, "bags": [cache_key(b) for b in self.samples.bags],
                             "z0_mode": self.config.z0_mode, "seed": self.config.seed,
                             "chunk": self.chunk}, sort_keys=True, default=str).encode())
        h.update(self.tokens.numpy().tobytes())
        h.update(self.token_mask.numpy().tobytes())
        return h.hexdigest()[:24]

    def prepare_reference(self) -> None:
        if self.method not in NEEDS_REFERENCE:
            return
        n = len(self.samples)
        if self.config.z0_mode == "exact" and n > 1:
            # A fixed single-cycle permutation: every sample has a partner other than itself.
            order = np.random.default_rng([self.config.seed, 13]).permutation(n)
            self.partner = np.empty(n, np.int64)
            self.partner[order] = np.roll(order, -1)
        if self.config.reference != "cached":
            return
        from safetensors.torch import load_file, save_file

        path = os.path.join(self.out, "reference_cache.safetensors")
        key = self.reference_key()
        if os.path.isfile(path):
            try:
                from safetensors import safe_open

                with safe_open(path, "pt") as f:
                    stored = (f.metadata() or {}).get("key")
                if stored == key:
                    cached = load_file(path)
                    self.ref_logps = cached["logps"]
                    self.ref_kl = cached.get("kl")
                    self.log(f"reference log-probs: loaded from {path}")
                    self.reference = None  # not needed any more: free a full-weight copy
                    return
            except Exception as err:  # a damaged cache is recomputed
                self.log(f"reference cache {path} unusable ({err}); recomputing")
        t0 = time.perf_counter()
        logps = torch.zeros(self.tokens.shape, dtype=torch.float32)
        kl = torch.zeros(n, dtype=torch.float32) if self.partner is not None else None
        bs = max(1, self.config.reference_batch_size)
        for lo in range(0, n, bs):
            idx = np.arange(lo, min(n, lo + bs))
            inputs = self.inputs(idx, None)
            tok, mask = self.targets(idx)
            with self._autocast():
                lp = self.reference.token_logps(inputs, tok, mask).float().cpu()
            logps[lo:lo + len(idx), :lp.shape[1]] = lp
            if kl is not None:
                ptok, pmask = self.targets(self.partner[idx])
                with self._autocast():
                    kl_lp = self.reference.token_logps(inputs, ptok, pmask)
                kl[lo:lo + len(idx)] = kl_lp.float().sum(-1).cpu()
        self.ref_logps, self.ref_kl = logps, kl
        self.reference = None  # not needed any more: free a full-weight copy
        seconds = time.perf_counter() - t0
        self.log(f"reference log-probs: {n} samples in {seconds:.1f} s (cached for this data set)")
        if self.dist.main:
            tensors = {"logps": logps.contiguous()}
            if kl is not None:
                tensors["kl"] = kl
            tmp = path + ".tmp"
            save_file(tensors, tmp, metadata={"key": key})
            os.replace(tmp, path)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast) if self.autocast \
            else _NullContext()

    # ---- one step ----------------------------------------------------------------------------
    def loss(self, step: int) -> tuple[torch.Tensor, dict, int]:
        """(loss, metrics, samples used) for the batch of `step`."""
        if self.method == "tpo":
            return self._tpo_loss(step)
        idx = self.sampler.next_batch()
        inputs = self.inputs(idx, step)
        tok, mask = self.targets(idx)
        if self.method in ("bc", "dagger", "sirius"):
            weights = self.sirius_w[idx].to(self.device) if self.sirius_w is not None else None
            if self.config.label_smoothing > 0 or self.config.bin_sigma > 0:
                with self._autocast():
                    logits = self.policy.token_logits(inputs, tok, mask)
                loss = O.smoothed_token_nll(logits, tok, mask, label_smoothing=self.config.label_smoothing,
                                            bin_sigma=self.config.bin_sigma, weights=weights)
                return loss, {"loss": float(loss.detach())}, len(idx)
            with self._autocast():
                logps = self.policy.token_logps(inputs, tok, mask)
            loss = O.bc_loss(logps.float(), mask, weights)
            return loss, {"loss": float(loss.detach())}, len(idx)
        want_argmax = self.method == "apo" and self.config.reweight
        with self._autocast():
            # one observation encoding for the sample's own tokens and its mismatched partner's
            encoding = self.policy.encode_observation(inputs)
            logps, pred, pred_mask = _logps_and_argmax(self.policy, inputs, tok, mask, want_argmax,
                                                       encoding=encoding)
        logps = logps.float()
        ref = self._reference_logps(idx, inputs, tok, mask)
        kl_pol, kl_ref = self._kl_terms(idx, inputs, tok, mask, logps, ref, encoding)
        desirable = torch.from_numpy(self.samples.desirable[idx]).to(self.device)
        c = self.config
        if self.method == "kto":
            pol_sum, ref_sum = logps.sum(-1), ref.sum(-1)
            loss = O.kto_loss(pol_sum, ref_sum, kl_pol, kl_ref, desirable, beta=c.beta,
                              desirable_weight=c.desirable_weight, undesirable_weight=c.undesirable_weight)
            terms = O.PreferenceTerms(loss=loss, rewards=(pol_sum - ref_sum).detach(),
                                      z0=(kl_pol - kl_ref).mean().clamp(min=0).detach(),
                                      losses=torch.zeros_like(pol_sum),
                                      weights=torch.where(desirable, c.desirable_weight,
                                                          c.undesirable_weight),
                                      desirable=desirable)
            metrics = terms.metrics()
            metrics["z0_unclamped"] = float((kl_pol - kl_ref).mean())
            return loss, metrics, len(idx)
        errors = ok = None
        if want_argmax:
            errors, ok = self._action_errors(idx, pred, pred_mask)
        terms = O.apo_loss(logps, ref, mask, desirable, kl_pol, kl_ref,
                           gripper_mask=self.policy.gripper_positions(tok, mask), action_errors=errors,
                           decode_ok=ok, beta=c.beta, z0_min=c.z0_min, z0_max=c.z0_max,
                           mask_gripper=c.mask_gripper, reweight=c.reweight,
                           desirable_weight=c.desirable_weight, undesirable_weight=c.undesirable_weight,
                           reduction=c.apo_reduction, group_size=c.apo_weight_group)
        metrics = terms.metrics()
        metrics["z0_unclamped"] = float((kl_pol - kl_ref).mean())
        return terms.loss, metrics, len(idx)

    def _reference_logps(self, idx, inputs, tok, mask) -> torch.Tensor:
        if self.ref_logps is not None:
            return self.ref_logps[idx][:, :tok.shape[1]].to(self.device)
        with self._autocast():
            return self.reference.token_logps(inputs, tok, mask).float()

    def _kl_terms(self, idx, inputs, tok, mask, logps, ref,
                  encoding=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs of the mismatched pairs under policy and reference (z0 is detached, so
        the policy's pass runs without gradient, on the already computed observation encoding)."""
        if self.config.z0_mode == "matched" or len(idx) < 2:
            return logps.detach().sum(-1), ref.sum(-1)
        if self.ref_kl is not None:  # cached: fixed partner per sample
            ptok, pmask = self.targets(self.partner[idx])
            kl_ref = self.ref_kl[idx].to(self.device)
        else:  # online: batch neighbour i + 1 (mod B), as KTO
            ptok, pmask = torch.roll(tok, -1, 0), torch.roll(mask, -1, 0)
            with self._autocast():
                kl_ref = self.reference.token_logps(inputs, ptok, pmask).float().sum(-1)
        with torch.no_grad(), self._autocast():
            if encoding is None:
                kl_pol = self.policy.token_logps(inputs, ptok, pmask).float().sum(-1)
            else:
                kl_pol = self.policy.token_logps_encoded(encoding, ptok, pmask).float().sum(-1)
        return kl_pol, kl_ref

    def _action_errors(self, idx, pred, pred_mask) -> tuple[torch.Tensor, torch.Tensor]:
        decoded, ok = self.policy.decode_tokens(pred, pred_mask)
        stats = self.policy.stats
        target = self.samples.action_targets(idx, self.chunk).reshape(len(idx), self.chunk, -1)
        errors = O.decoded_action_errors(stats.normalize(decoded.reshape(target.shape)),
                                         stats.normalize(target))
        errors = np.where(ok, errors, 0.0)
        return (torch.as_tensor(errors, dtype=torch.float32, device=self.device),
                torch.as_tensor(ok, dtype=torch.bool, device=self.device))

    def _tpo_loss(self, step: int) -> tuple[torch.Tensor, dict, int]:
        pairs = self.windows[self.sampler.next_batch()]
        rej = [np.arange(r, r + n) for r, _, n in pairs]
        cho = [np.arange(c, c + n) for _, c, n in pairs]
        p = len(pairs)
        idx = np.concatenate(cho + rej)
        window = torch.from_numpy(np.concatenate([np.full(len(x), i) for i, x in enumerate(cho + rej)]))
        window = window.to(self.device)
        inputs = self.inputs(idx, step)
        tok, mask = self.targets(idx)
        with self._autocast():
            logps = self.policy.token_logps(inputs, tok, mask).float().sum(-1)
        ref = self._reference_logps(idx, inputs, tok, mask).sum(-1)
        pol_w = O.window_logps(logps, window, 2 * p)
        ref_w = O.window_logps(ref, window, 2 * p)
        terms = O.tpo_loss(pol_w[:p], pol_w[p:], ref_w[:p], ref_w[p:], beta=self.config.beta)
        return terms.loss, terms.metrics(), len(idx)


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------
# Validation: best weights and early stopping
# ---------------------------------------------------------------------------------------------
class _BestTracker:
    """The best validation pass so far (its trainable weights kept in memory and in
    `<out>/best/`, so `--resume` keeps them) and the passes since it improved."""

    def __init__(self, out: str, config: TrainConfig, metric: str, policy, *, enabled: bool, resume: bool,
                 main: bool):
        self.enabled, self.config, self.policy, self.main = enabled, config, policy, main
        self.key = f"val_nll_{metric}"
        self.folder = os.path.join(out, "best")
        self.best_value = float("inf")
        self.best_step: int | None = None
        self.since_best = 0
        self.history: list[dict] = []
        self.weights: dict[str, torch.Tensor] | None = None
        if enabled and resume and os.path.isfile(os.path.join(self.folder, "best.json")):
            from safetensors.torch import load_file

            with open(os.path.join(self.folder, "best.json")) as f:
                saved = json.load(f)
            self.best_value, self.best_step = float(saved["value"]), saved["step"]
            self.since_best, self.history = int(saved["since_best"]), saved["history"]
            self.weights = load_file(os.path.join(self.folder, "trainable.safetensors"))

    def update(self, step: int, values: dict[str, float]) -> None:
        value = values.get(self.key, float("nan"))
        self.history.append({"step": step, **values})
        if math.isfinite(value) and value < self.best_value - 1e-4:
            self.best_value, self.best_step, self.since_best = value, step, 0
            self.weights = {n: p.detach().cpu().clone() for n, p in self.policy.named_parameters()
                            if p.requires_grad}
            if self.main:
                from safetensors.torch import save_file

                os.makedirs(self.folder, exist_ok=True)
                save_file({n: t.contiguous() for n, t in self.weights.items()},
                          os.path.join(self.folder, "trainable.safetensors"))
        else:
            self.since_best += 1
        if self.main:
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, "best.json"), "w") as f:
                json.dump({"metric": self.key, "value": self.best_value, "step": self.best_step,
                           "since_best": self.since_best, "history": self.history}, f, indent=1)

    def should_stop(self) -> bool:
        return self.config.patience > 0 and self.since_best >= self.config.patience

    def load_best(self, policy) -> None:
        params = dict(policy.named_parameters())
        with torch.no_grad():
            for name, value in (self.weights or {}).items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def describe(self) -> str:
        return (f"best {self.key} {self.best_value:.4f} nats/token at step {self.best_step}, "
                f"{self.since_best} passes without improvement since")

    def summary(self) -> dict:
        first = self.history[0] if self.history else {}
        best = next((h for h in self.history if h["step"] == self.best_step), {})
        return {"metric": self.key, "best_step": self.best_step, "best": best, "first": first,
                "passes": len(self.history)}


def _broadcast_flag(flag: bool, dist_info: _Dist) -> bool:
    """Rank 0's decision, so every process stops at the same step."""
    if dist_info.world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=dist_info.device or "cpu")
    dist.broadcast(t, 0)
    return bool(t.item())


def _format_validation(values: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items())


# ---------------------------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------------------------
def _checkpoints(out: str) -> list[tuple[int, str]]:
    folder = os.path.join(out, "checkpoints")
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        if name.startswith("step-") and name[5:].isdigit():
            path = os.path.join(folder, name)
            if os.path.isfile(os.path.join(path, "trainer_state", "state.json")):
                found.append((int(name[5:]), path))
    return sorted(found)


class _MetricsLog:
    """metrics.csv (+ TensorBoard when available), rank 0 only."""

    def __init__(self, out: str, start_step: int, tensorboard: bool, enabled: bool, log=print):
        self.enabled = enabled
        self.path = os.path.join(out, "metrics.csv")
        self.tb = None
        if not enabled:
            return
        rows = []
        if start_step > 0 and os.path.isfile(self.path):  # drop rows past the resumed step
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= start_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(out, "tb"), purge_step=start_step or None)
            except ImportError:
                log("tensorboard is not installed: metrics go to metrics.csv only "
                    "(pip install tensorboard to get TensorBoard logs)")

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # stderr: stdout carries only the checkpoint path (scripts capture it)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=not enabled,
                    console=Console(stderr=True))


def _format_info(m: dict) -> str:
    parts = [f"loss {m.get('loss', float('nan')):.4f}"]
    if "reward_margin" in m:
        parts.append(f"margin {m['reward_margin']:+.3f}")
    if "z0" in m and "pair_accuracy" not in m:
        parts.append(f"z0 {m['z0']:.3f}")
    if "pair_accuracy" in m:
        parts.append(f"acc {m['pair_accuracy']:.2f}")
    if "val_nll_data" in m or "val_nll_demos" in m:
        parts.append(f"val {m.get('val_nll_data', m.get('val_nll_demos')):.3f}")
    parts.append(f"lr {m.get('lr', 0.0):.2e}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def check_method_data(method: str, samples: SampleSet, *, tpo_window: int = 8) -> None:
    """Raise DataError with a clear message when the data cannot train `method`."""
    if method == "bc" and not samples.is_demo.any():
        raise DataError("bc trains on expert demos: give demo bags with --demos")
    if method in NEEDS_INTERACTION and not samples.has_interaction_data():
        raise DataError(f"{method} needs interaction data (bags recorded while the policy ran, with "
                        "human corrections): give them with --data")
    if method == "dagger" and not samples.human_mask().any():
        raise DataError("dagger adds the operator's corrections to the demos, but the --data bags "
                        "have no human-controlled steps")
    if method in NEEDS_INTERVENTIONS:
        if samples.intervention_starts().size == 0:
            raise DataError(f"{method} learns from interventions, but the --data bags have none "
                            "(no human-controlled steps)")
        if method in ("kto", "apo") and not samples.undesirable.any():
            raise DataError(f"{method}: no undesirable samples (no policy steps before any intervention)")
        if method == "tpo" and len(samples.tpo_windows(tpo_window)) == 0:
            raise DataError("tpo: no intervention has policy steps right before it to pair with")


def train_policy(config: TrainConfig, demos: list[str], data: list[str], init: str, out: str, *,
                 resume: bool = False, log=None) -> str:
    """Train and return the final checkpoint directory (`<out>/policy`).

    demos: expert-demo bags or folders of bags; data: interaction bags (policy + human steps);
    init: a policy checkpoint directory, or a kind ("small", "state", "vla_bins", "vla_fast") to build
    fresh with statistics from the demo actions; out: output directory (see module docstring);
    resume: continue from the last checkpoint in `out`.
    """
    from apo_ros.policies import make_reference, save_policy

    dist_info = _setup_distributed(config.device)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say = log if dist_info.main else (lambda msg: None)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = str(dist_info.device) if dist_info.device is not None else config.device
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)

    existing = _checkpoints(out)
    if existing and not resume:
        raise TrainingError(f"{out} already holds a training run (checkpoint at step {existing[-1][0]}); "
                            "pass --resume to continue it, or choose another --out")
    if resume and not existing:
        say(f"--resume: no checkpoint in {out}; starting from step 0")

    samples = load_samples(demos, data, cache_dir=config.cache_dir)
    for problem in samples.errors:
        say(f"skipping bad bag: {problem}")
    say(f"data: {samples.load_stats['bags_read']} bags read, {samples.load_stats['cache_hits']} from "
        f"cache, {len(samples)} steps in {samples.load_stats['seconds']:.1f} s")

    samples.split_episodes(config.val_fraction, config.seed)
    samples.select_demos(str(config.demo_mix), config.seed)
    policy, init_facts = _init_policy(init, config, samples, device)
    if policy.uses_object_state:
        problem = samples.object_state_problem(policy.object_dim)
        if problem:
            raise DataError(problem)
    samples.label(LabelConfig(config.k, config.noop_filter, config.sirius_window), stats=policy.stats)
    check_method_data(config.method, samples, tpo_window=config.tpo_window)
    say("samples: " + json.dumps(samples.summary()))

    params = policy.trainable_parameters()
    if not params:
        raise TrainingError("the policy has no trainable parameters")
    if dist_info.world > 1:  # start every rank from rank 0's weights
        import torch.distributed as dist

        for p in params:
            dist.broadcast(p.data, 0)
    optimizer = torch.optim.AdamW(params, lr=config.peak_lr, weight_decay=config.weight_decay)

    reference = make_reference(policy) if config.method in NEEDS_REFERENCE else None
    run = _Run(config, samples, policy, reference, out, dist_info, init_facts, log=say)
    del reference  # the run owns it (and drops it once the cache is filled)
    data_key = [cache_key(b) for b in samples.bags]
    start = 0
    if resume and existing:
        last_step, last_dir = existing[-1]
        saved = read_state(last_dir)
        for name in ("method", "batch_size", "seed"):
            if saved["config"].get(name) != getattr(config, name):
                raise TrainingError(f"cannot resume {out}: it was trained with {name}="
                                    f"{saved['config'].get(name)!r}, now {getattr(config, name)!r}")
        if saved.get("data_key") != data_key:
            raise TrainingError(f"cannot resume {out}: the bags differ from the ones the run started "
                                "with (same --demos / --data, unchanged bags are needed)")
        state = load_state(last_dir, policy=policy, optimizer=optimizer)
        run.sampler.load_state_dict(state["sampler"])
        start = int(state["step"])
        say(f"resumed from {last_dir} (step {start})")
    run.prepare_reference()
    if dist_info.main:
        with open(os.path.join(out, "train_config.json"), "w") as f:
            json.dump({"config": config.to_dict(), "demos": list(demos), "data": list(data),
                       "init": init_facts, "samples": samples.summary()}, f, indent=2, default=str)

    end = config.steps
    if config.max_steps_this_run > 0:
        end = min(end, start + config.max_steps_this_run)
    is_demo = _bag_is_demo(samples)
    training_facts = {"method": config.method, "init": init_facts, "config": config.to_dict(),
                      "demos": [b for b, d in zip(samples.bags, is_demo) if d],
                      "data": [b for b, d in zip(samples.bags, is_demo) if not d],
                      "samples": samples.summary()}
    last_saved = existing[-1][1] if (resume and existing) else None

    def checkpoint(step: int) -> str:
        nonlocal last_saved
        if dist_info.main:
            folder = os.path.join(out, "checkpoints")
            os.makedirs(folder, exist_ok=True)
            final = os.path.join(folder, f"step-{step:08d}")
            tmp = os.path.join(folder, f".tmp-step-{step:08d}")
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            save_policy(policy, os.path.join(tmp, "policy"), extra={**training_facts, "step": step})
            save_state(tmp, policy=policy, optimizer=optimizer,
                       state={"step": step, "config": config.to_dict(), "sampler": run.sampler.state_dict(),
                              "data_key": data_key, "init": init_facts, "epoch": run.sampler.epoch})
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
            kept = _checkpoints(out)
            for _s, old in kept[:-max(1, config.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
            last_saved = final
        _barrier(dist_info)
        return os.path.join(out, "checkpoints", f"step-{step:08d}")

    metrics_log = _MetricsLog(out, start, config.tensorboard, dist_info.main, log=say)
    validating = bool(run.val_rows[run.val_metric].size) and config.val_fraction > 0
    tracker = _BestTracker(out, config, run.val_metric, policy, enabled=validating,
                           resume=resume and bool(existing), main=dist_info.main)
    if tracker.enabled:
        say(f"validation: {', '.join(f'{len(r)} held-out {k} samples' for k, r in run.val_rows.items())}, "
            f"watching {run.val_metric} every {config.val_every} steps"
            + (f", early stopping after {config.patience} passes without improvement"
               if config.patience else ""))
        if start == 0:
            first = run.validate()
            tracker.update(0, first)
            metrics_log.write({"step": 0, "epoch": 0, **first})
            say("validation at step 0: " + _format_validation(first))
    stopped_early = False
    policy.train()
    t_start = time.perf_counter()
    window: dict[str, float] = {}
    window_n = window_samples = 0
    window_t = time.perf_counter()
    step = start
    try:
        with _progress(config.progress and dist_info.main) as bar:
            task = bar.add_task(config.method, total=end, completed=start, info="")
            for step in range(start, end):
                lr = learning_rate(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss, metrics, used = run.loss(step)
                check = _all_reduce_mean(loss.detach().float().clone(), dist_info)
                if not torch.isfinite(check):
                    raise TrainingError(
                        f"{config.method}: loss is {float(check)} at step {step + 1}; stopped before the "
                        f"optimizer step, nothing saved from this step. Last good checkpoint: "
                        f"{last_saved or 'none'}. Try a lower lr (now {lr:.2e}) or check the data.")
                loss.backward()
                if dist_info.world > 1:
                    for p in params:
                        if p.grad is not None:
                            _all_reduce_mean(p.grad, dist_info)
                norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0
                                                      else float("inf"))
                if not torch.isfinite(norm):
                    raise TrainingError(
                        f"{config.method}: gradient norm is {float(norm)} at step {step + 1}; stopped "
                        f"before the optimizer step. Last good checkpoint: {last_saved or 'none'}.")
                optimizer.step()
                metrics.update(lr=lr, grad_norm=float(norm), loss=float(check))  # loss: mean over ranks
                for k, v in metrics.items():
                    window[k] = window.get(k, 0.0) + float(v)
                window_n += 1
                window_samples += used
                done = step + 1
                validation: dict[str, float] = {}
                if tracker.enabled and (done % config.val_every == 0 or done == end):
                    validation = run.validate()
                    tracker.update(done, validation)
                    stopped_early = _broadcast_flag(tracker.should_stop(), dist_info)
                if done % max(1, config.log_every) == 0 or done == end or validation or stopped_early:
                    row: dict = {"step": done, "epoch": run.sampler.epoch, **validation}
                    if window_n:
                        avg = {k: v / window_n for k, v in window.items()}
                        avg["lr"] = lr
                        now = time.perf_counter()
                        row.update(samples_per_s=window_samples * dist_info.world / max(now - window_t, 1e-9),
                                   elapsed_s=now - t_start, **avg)
                        bar.update(task, completed=done, info=_format_info({**avg, **validation}))
                        window, window_n, window_samples, window_t = {}, 0, 0, now
                    metrics_log.write(row)
                else:
                    bar.update(task, completed=done)
                if stopped_early:
                    say(f"early stop at step {done}: {tracker.describe()}")
                    end = done
                    break
                if config.save_every > 0 and done % config.save_every == 0 and done < end:
                    checkpoint(done)
    finally:
        metrics_log.close()

    final_step = end
    if last_saved is None or not last_saved.endswith(f"step-{final_step:08d}"):
        checkpoint(final_step)
    if final_step < config.steps and not stopped_early:
        say(f"stopped at step {final_step} of {config.steps} (max_steps_this_run); continue with --resume")
        return os.path.join(out, "checkpoints", f"step-{final_step:08d}", "policy")
    final_dir = os.path.join(out, "policy")
    extra = {**training_facts, "step": final_step, "stopped_early": stopped_early}
    if tracker.enabled:
        extra["validation"] = tracker.summary()
        if config.select_best and tracker.best_step is not None:
            tracker.load_best(policy)
            extra["step"] = tracker.best_step
            say(f"final policy = the weights of step {tracker.best_step} ({tracker.describe()})")
    if dist_info.main:
        pid = save_policy(policy, final_dir, extra=extra)
        say(f"saved {final_dir} (policy id {pid})")
    _barrier(dist_info)
    return final_dir


def _bag_is_demo(samples: SampleSet) -> list[bool]:
    return [bool(samples.is_demo[o]) for o in samples.offsets[:-1]]
