"""What a run reports: metrics.csv + TensorBoard, the progress bar, and validation (held-out token
NLL, the best weights, early stopping)."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import torch

from apo_ros.training.batches import Batches, logps_and_argmax
from apo_ros.training.cache import DataError
from apo_ros.training.config import TrainConfig

CSV_COLUMNS = ("step", "epoch", "lr", "loss", "grad_norm", "samples_per_s", "z0", "z0_unclamped",
               "reward_desirable", "reward_undesirable", "reward_margin", "weight_desirable",
               "weight_undesirable", "pair_accuracy", "train_nll", "val_nll_demos", "val_nll_data",
               "train_bin_error", "val_bin_error_demos", "val_bin_error_data", "elapsed_s")
VALIDATION_SETS = ("demos", "data")


class MetricsLog:
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
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
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


def progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # stderr: stdout carries only the checkpoint path (scripts capture it)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=not enabled,
                    console=Console(stderr=True))


def format_info(m: dict) -> str:
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


def format_validation(values: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items())


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
class Validation:
    """Token NLL (nats per real target token, un-augmented inputs, eval mode) on fixed rows:
    held-out demos, held-out operator corrections, and as many training rows (the method's
    desirable targets) for the train / held-out gap."""

    def __init__(self, b: Batches, train_rows: np.ndarray, config: TrainConfig):
        c, s = config, b.samples
        self.b = b
        self.batch_size = config.reference_batch_size
        rng = np.random.default_rng([c.seed, 17])

        def cap(rows: np.ndarray) -> np.ndarray:
            if len(rows) > c.val_max_samples:
                rows = np.sort(rng.choice(rows, size=c.val_max_samples, replace=False))
            return rows

        self.rows = {kind: cap(s.validation_rows(kind)) for kind in VALIDATION_SETS}
        self.train_rows = cap(train_rows) if any(len(r) for r in self.rows.values()) else train_rows[:0]
        metric = c.val_metric
        if metric == "auto":
            metric = "data" if len(self.rows["data"]) else "demos"
        self.metric = metric
        self.enabled = c.val_fraction > 0 and len(self.rows[metric]) > 0
        if c.val_fraction > 0 and not self.enabled:
            need = ("2 or more --demos bags" if metric == "demos"
                    else "2 or more --data bags with human corrections")
            raise DataError(f"val_fraction {c.val_fraction}: no held-out {metric} to validate on "
                            f"(give {need})")

    def describe(self) -> str:
        return ", ".join(f"{len(r)} held-out {k} samples" for k, r in self.rows.items())

    @torch.no_grad()
    def scores(self, rows: np.ndarray) -> tuple[float, float]:
        """(token NLL in nats per real target token, mean |argmax bin - target bin| per token or
        NaN when the policy's tokens are not bins) of the policy on `rows`. The bin error does not
        depend on how sharp the predicted distribution is, so runs with softened targets
        (bin_sigma) compare on it too."""
        if len(rows) == 0:
            return float("nan"), float("nan")
        policy = self.b.policy
        bins = policy.tokens_per_step is not None
        was_training = policy.training
        policy.eval()
        total = count = error = action_count = 0.0
        try:
            bs = self.batch_size
            for lo in range(0, len(rows), bs):
                idx = rows[lo:lo + bs]
                inputs = self.b.inputs(idx, None)
                tok, mask = self.b.targets(idx)
                with self.b.autocast():
                    logps, argmax, _ = logps_and_argmax(policy, inputs, tok, mask, bins)
                total -= float(logps.float().sum())
                count += float(mask.sum())
                if bins and argmax is not None:
                    action = mask.clone()
                    action[:, policy.chunk_size * policy.tokens_per_step:] = False  # not a stop token
                    error += float(((argmax - tok).abs().float() * action).sum())
                    action_count += float(action.sum())
        finally:
            policy.train(was_training)
        return total / max(count, 1.0), (error / max(action_count, 1.0) if bins else float("nan"))

    def __call__(self) -> dict[str, float]:
        """{"val_nll_demos", "val_nll_data", "train_nll"} (and the *_bin_error figures for bin
        policies) for the sets that have rows."""
        out: dict[str, float] = {}
        sets = [(f"_{kind}", rows) for kind, rows in self.rows.items() if len(rows)]
        if sets:
            sets.append(("", self.train_rows))
        for suffix, rows in sets:
            nll, error = self.scores(rows)
            prefix = "val" if suffix else "train"
            out[f"{prefix}_nll{suffix}"] = nll
            if math.isfinite(error):
                out[f"{prefix}_bin_error{suffix}"] = error
        return out


class BestTracker:
    """The best validation pass so far (its trainable weights kept in memory and in
    `<out>/best/`, so `--resume` keeps them) and the passes since it improved."""

    def __init__(self, out: str, metric: str, policy, *, patience: int, enabled: bool, resume: bool,
                 main: bool):
        self.enabled, self.patience, self.policy, self.main = enabled, patience, policy, main
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
            if os.path.isfile(os.path.join(self.folder, "trainable.safetensors")):
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
        return self.patience > 0 and self.since_best >= self.patience

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
