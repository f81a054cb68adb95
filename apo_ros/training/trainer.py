"""The trainer: bags + a starting policy -> a new checkpoint, with one of the registered methods.

    train_policy(TrainConfig(method="apo", steps=2000), demos=["bags/demos"],
                 data=["bags/round1"], init="runs/base/policy", out="runs/apo1")  -> "runs/apo1/policy"

Output directory:

    <out>/policy/                 the final checkpoint (apo_ros policy format; what the policy node loads)
    <out>/checkpoints/step-N/     periodic checkpoints: policy/ + trainer_state/ (resume)
    <out>/best/                   the best validation pass's trainable weights (with val_fraction > 0)
    <out>/metrics.csv             one row per log interval and per validation pass
    <out>/tb/                     TensorBoard events (when tensorboard is installed)
    <out>/train_config.json       the resolved configuration
    <out>/reference_cache.safetensors  frozen-reference log-probs (methods with a reference, reference=cached)

The pieces: `config` (TrainConfig), `registry` (per method: data check, sampler, step loss,
reference, default lr), `batches` (rows -> tensors), `reference` (the frozen reference's scores),
`distributed` (DDP), `metrics` (logs, validation, best weights), `state` (checkpoints without
pickle), `policy_init` (where a run starts). This module keeps the loop.

Determinism and resume: all randomness is a function of (seed, step) - the sampler permutations,
batch shuffles and augmentation draws - plus torch's generator, saved with each checkpoint. The
learning rate is a pure function of the step. So resuming from step N reproduces the parameters
of an uninterrupted run (tested), as long as the data and the device are the same.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from apo_ros.errors import UserError
from apo_ros.policies.factory import POLICY_KINDS, policy_kind
from apo_ros.training.augmentation import AugmentConfig
from apo_ros.training.batches import Batches
from apo_ros.training.cache import DataError, cache_key
from apo_ros.training.config import TrainConfig, learning_rate
from apo_ros.training.distributed import Distributed, setup_distributed, wrap_step
from apo_ros.training.metrics import (
    BestTracker,
    MetricsLog,
    Validation,
    format_info,
    format_validation,
    progress_bar,
)
from apo_ros.training.policy_init import check_init, init_policy
from apo_ros.training.reference import ReferenceScores
from apo_ros.training.registry import METHODS, check_method_data, get_method
from apo_ros.training.samples import LabelConfig, SampleSet, load_samples
from apo_ros.training.state import list_checkpoints, load_state, read_state, write_checkpoint

__all__ = ["METHODS", "Run", "TrainConfig", "TrainingError", "learning_rate", "prepare_run",
           "train_policy"]


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume, ...); the message says why."""


def _bag_is_demo(samples) -> list[bool]:
    return [bool(samples.is_demo[o]) for o in samples.offsets[:-1]]


@dataclass
class Run:
    """Everything one training run steps: built by `prepare_run`, stepped by `train_policy`
    (and by `apo-ros bench train`)."""

    config: TrainConfig
    samples: SampleSet
    policy: torch.nn.Module
    batches: Batches
    sampler: object
    validation: Validation
    step_fn: object  # (rows, step) -> StepOutput; DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    params: list
    init_facts: dict
    dist: Distributed

    def step(self, step: int, *, last_good: str | None = None):
        """One optimizer step (0-based `step`): (metrics, samples used by this process). Raises
        TrainingError before the update when the loss or the gradient norm is not finite."""
        config = self.config
        lr = learning_rate(config, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        batch = self.sampler.next_batch()
        output = self.step_fn(batch[self.dist.rows(batch)], step)
        loss = self.dist.mean(output.loss.detach().float())
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{config.method}: loss is {float(loss)} at step {step + 1}; stopped before the "
                f"optimizer step, nothing saved from this step. Last good checkpoint: "
                f"{last_good or 'none'}. Try a lower lr (now {lr:.2e}) or check the data.")
        output.loss.backward()  # DDP averages the gradients across processes here
        norm = torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip if config.grad_clip > 0
                                              else float("inf"))
        if not torch.isfinite(norm):
            raise TrainingError(
                f"{config.method}: gradient norm is {float(norm)} at step {step + 1}; stopped "
                f"before the optimizer step. Last good checkpoint: {last_good or 'none'}.")
        self.optimizer.step()
        metrics = dict(output.metrics)
        metrics.update(lr=lr, grad_norm=float(norm), loss=float(loss))  # loss: mean over processes
        return metrics, output.samples


def prepare_run(config: TrainConfig, samples: SampleSet, init: str, out: str, *,
                dist_info: Distributed | None = None, log=lambda msg: None) -> Run:
    """Split the data (validation, demo mix), build or load the starting policy, label the
    samples, check the data fits the method, and set up batches, reference scores (computed
    here in cached mode), sampler, validation and optimizer."""
    from apo_ros.policies import make_reference

    dist_info = dist_info or Distributed()
    method = get_method(config.method)
    device = str(dist_info.device) if dist_info.device is not None else config.device
    samples.split_episodes(config.val_fraction, config.seed)
    samples.select_demos(demo_mix_episodes(samples, config.demo_mix), config.seed)
    policy, init_facts = init_policy(init, config, samples, device)
    if policy.uses_object_state:
        problem = samples.object_state_problem(policy.object_dim)
        if problem:
            raise DataError(problem)
    samples.label(LabelConfig(k=config.k, noop_filter=config.drop_noop, noop_threshold=config.noop_threshold,
                              **config.method_config.label_settings()), stats=policy.stats)
    check_method_data(config.method, samples, config)
    _check_smoothing(config, policy)
    params = policy.trainable_parameters()
    if not params:
        raise TrainingError("the policy has no trainable parameters")
    b = Batches(samples, policy, dist_info, config.method_config, seed=config.seed, bf16=config.bf16,
                augment=AugmentConfig(config.augment, config.aug_shift, config.aug_brightness))
    if method.needs_reference:
        b.reference = ReferenceScores(make_reference(policy), b, config, out, init_facts, log=log)
        b.reference.prepare()
    # every process draws the same global batch and trains on its slice (see distributed.py)
    sampler = method.sampler(samples, config, config.batch_size * dist_info.world, config.seed)
    validation = Validation(b, sampler.target_rows(), config)
    step_fn = wrap_step(policy, lambda rows, step: method.loss(b, rows, step), dist_info)
    optimizer = torch.optim.AdamW(params, lr=config.peak_lr, weight_decay=config.weight_decay)
    return Run(config, samples, policy, b, sampler, validation, step_fn, optimizer, params, init_facts,
               dist_info)


def demo_mix_episodes(samples: SampleSet, mix: str) -> str:
    """`demo_mix` as `SampleSet.select_demos` takes it: "matched" becomes the number of training
    interaction episodes that hold at least one intervention (the paper's real-world mix: as
    many expert demos as intervened trajectories); the other values pass through."""
    if mix != "matched":
        return mix
    held = samples.held_out if samples.held_out is not None else np.zeros(len(samples), bool)
    starts = samples.intervention_starts()
    return str(len(np.unique(samples.episode[starts[~held[starts]]])))


def describe_run(run: Run) -> dict:
    """What a run's null fields resolved to and what its batches hold (saved with the config)."""
    return {**run.config.effective(), "batches": getattr(run.sampler, "description", None),
            "demo_episodes": len(np.unique(run.samples.episode[run.samples.is_demo
                                                                & run.samples.trainable_rows()]))}


def train_policy(config: TrainConfig, demos: list[str], data: list[str], init: str, out: str, *,
                 resume: bool = False, log=None) -> str:
    """Train and return the final checkpoint directory (`<out>/policy`).

    demos: expert-demo bags or folders of bags; data: interaction bags (policy + human steps);
    init: a policy checkpoint directory, or a policy kind (`policies.factory.policy_kinds()`) to
    build fresh with statistics from the demo actions; out: output directory (see module
    docstring); resume: continue from the last checkpoint in `out`.
    """
    from apo_ros.policies import save_policy

    check_init(init, config)  # before any bag is read
    dist_info = setup_distributed()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say = log if dist_info.main else (lambda msg: None)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)

    existing = list_checkpoints(out)
    if existing and not resume:
        raise TrainingError(f"{out} already holds a training run (checkpoint at step {existing[-1][0]}); "
                            "pass --resume to continue it, or choose another --out")
    if resume and not existing:
        say(f"--resume: no checkpoint in {out}; starting from step 0")

    samples = load_samples(demos, data, cache_dir=config.cache_dir)
    for problem in samples.errors:
        say(f"skipping {problem}")
    say(f"data: {samples.load_stats['bags_read']} bags read, {samples.load_stats['cache_hits']} from "
        f"cache, {len(samples)} steps in {samples.load_stats['seconds']:.1f} s")
    run = prepare_run(config, samples, init, out, dist_info=dist_info, log=say)
    say("samples: " + json.dumps(samples.summary()))
    effective = describe_run(run)
    say("sampling: " + json.dumps(effective))
    policy, sampler, optimizer, validation = run.policy, run.sampler, run.optimizer, run.validation
    init_facts = run.init_facts

    data_key = [cache_key(bag) for bag in samples.bags]
    start = 0
    if resume and existing:
        last_step, last_dir = existing[-1]
        saved = read_state(last_dir)
        for name in ("method", "batch_size", "seed", "sampling"):
            if saved["config"].get(name) != getattr(config, name):
                raise TrainingError(f"cannot resume {out}: it was trained with {name}="
                                    f"{saved['config'].get(name)!r}, now {getattr(config, name)!r}")
        if saved.get("data_key") != data_key:
            raise TrainingError(f"cannot resume {out}: the bags differ from the ones the run started "
                                "with (same --demos / --data, unchanged bags are needed)")
        state = load_state(last_dir, policy=policy, optimizer=optimizer)
        sampler.load_state_dict(state["sampler"])
        start = int(state["step"])
        say(f"resumed from {last_dir} (step {start})")
    if dist_info.main:
        with open(os.path.join(out, "train_config.json"), "w") as f:
            json.dump({"config": config.to_dict(), "effective": effective, "demos": list(demos),
                       "data": list(data), "init": init_facts, "samples": samples.summary()}, f,
                      indent=2, default=str)

    end = config.steps
    if config.max_steps_this_run > 0:
        end = min(end, start + config.max_steps_this_run)
    is_demo = _bag_is_demo(samples)
    training_facts = {"method": config.method, "init": init_facts, "config": config.to_dict(),
                      "effective": effective,
                      "demos": [bag for bag, d in zip(samples.bags, is_demo) if d],
                      "data": [bag for bag, d in zip(samples.bags, is_demo) if not d],
                      "samples": samples.summary()}
    last_saved = existing[-1][1] if (resume and existing) else None

    def checkpoint(step: int) -> str:
        nonlocal last_saved
        if dist_info.main:
            last_saved = write_checkpoint(
                out, step, policy=policy, optimizer=optimizer, policy_extra=training_facts,
                keep=config.keep_checkpoints,
                state={"step": step, "config": config.to_dict(), "sampler": sampler.state_dict(),
                       "data_key": data_key, "init": init_facts, "epoch": sampler.epoch})
        dist_info.barrier()
        return os.path.join(out, "checkpoints", f"step-{step:08d}")

    metrics_log = MetricsLog(out, start, config.tensorboard, dist_info.main, log=say)
    tracker = BestTracker(out, validation.metric, policy, patience=config.patience,
                          enabled=validation.enabled, resume=resume and bool(existing), main=dist_info.main)
    if tracker.enabled:
        say(f"validation: {validation.describe()}, watching {validation.metric} every {config.val_every} "
            "steps" + (f", early stopping after {config.patience} passes without improvement"
                       if config.patience else ""))
        if start == 0 and dist_info.main:
            first = validation()
            tracker.update(0, first)
            metrics_log.write({"step": 0, "epoch": 0, **first})
            say("validation at step 0: " + format_validation(first))
    stopped_early = False
    policy.train()
    t_start = time.perf_counter()
    window: dict[str, float] = {}
    window_n = window_samples = 0
    window_t = time.perf_counter()
    try:
        with progress_bar(config.progress and dist_info.main) as bar:
            task = bar.add_task(config.method, total=end, completed=start, info="")
            for step in range(start, end):
                metrics, used = run.step(step, last_good=last_saved)
                lr = metrics["lr"]
                for k, v in metrics.items():
                    window[k] = window.get(k, 0.0) + float(v)
                window_n += 1
                window_samples += used
                done = step + 1
                values: dict[str, float] = {}
                stop = False
                if tracker.enabled and (done % config.val_every == 0 or done == end):
                    if dist_info.main:
                        values = validation()
                        tracker.update(done, values)
                        stop = tracker.should_stop()
                    stop = dist_info.broadcast_flag(stop)
                if done % max(1, config.log_every) == 0 or done == end or values or stop:
                    avg = {k: v / window_n for k, v in window.items()}
                    now = time.perf_counter()
                    row = {"step": done, "epoch": sampler.epoch, **avg, **values,
                           "samples_per_s": window_samples * dist_info.world / max(now - window_t, 1e-9),
                           "elapsed_s": now - t_start, "lr": lr}
                    metrics_log.write(row)
                    bar.update(task, completed=done, info=format_info({**avg, **values}))
                    window, window_n, window_samples, window_t = {}, 0, 0, now
                else:
                    bar.update(task, completed=done)
                if stop:
                    say(f"early stop at step {done}: {tracker.describe()}")
                    stopped_early, end = True, done
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
    if tracker.enabled and dist_info.main:
        extra["validation"] = tracker.summary()
        if config.select_best and tracker.best_step is not None:
            tracker.load_best(policy)
            extra["step"] = tracker.best_step
            say(f"final policy = the weights of step {tracker.best_step} ({tracker.describe()})")
    if dist_info.main:
        pid = save_policy(policy, final_dir, extra=extra)
        say(f"saved {final_dir} (policy id {pid})")
    dist_info.barrier()
    return final_dir


def _check_smoothing(config: TrainConfig, policy) -> None:
    own = config.method_config
    if not own.soft_targets():
        return
    if own.bin_sigma > 0 and not policy_kind(policy.kind).bin_head:
        bin_kinds = ", ".join(name for name, kind in POLICY_KINDS.items() if kind.bin_head)
        raise TrainingError(f"bin_sigma smooths over neighbouring bins of a policy whose tokens are "
                            f"the bins ({bin_kinds}); {policy.kind} tokens are not")
