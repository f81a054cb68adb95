"""`apo-ros bench train`: training step time of a few methods (and APO variants) on the same small
policy and batch, and the bag -> samples throughput with and without the decoded-bag cache.

Baseline: bc (one teacher-forced pass + backward). Target: apo <= 1.3x bc with cached reference
log-probs. Also reported: apo with the reference run every step (the released code's way), apo
with the released code's cheap z0 (no mismatched-pair forward), kto, and the one-off reference
pass that caching moves out of the loop.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import torch


def _write_bags(root: str, n_bags: int, steps: int, size: int) -> tuple[list[str], list[str]]:
    from apo_ros.recording.synthetic import write_synthetic_episode

    demos, data = [], []
    for b in range(n_bags):
        if b % 2 == 0:
            path = os.path.join(root, f"demo{b}")
            write_synthetic_episode(path, ["expert"] * steps, seed=b, size=size)
            demos.append(path)
        else:
            third = steps // 3
            rest = steps - third - third // 2
            sources = ["policy"] * third + ["human"] * (third // 2) + ["policy"] * rest
            path = os.path.join(root, f"int{b}")
            write_synthetic_episode(path, sources, seed=b, size=size)
            data.append(path)
    return demos, data


def _make_step(samples, config):
    """(one-training-step function, facts) for `config` on a fresh small policy."""
    from apo_ros.training.registry import get_method
    from apo_ros.training.trainer import prepare_run

    info: dict = {"batch": config.batch_size}
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run = prepare_run(config, samples, "small", out)
        if get_method(config.method).needs_reference and config.method_config.reference == "cached":
            info["reference_pass_s"] = round(time.perf_counter() - t0, 3)
            info["reference_pass_samples"] = len(samples)
    run.policy.train()
    counter = [0]

    def step() -> None:
        run.step(counter[0])
        counter[0] += 1

    return step, info


def run(quick: bool = False) -> dict:
    from apo_ros.training.config import TrainConfig
    from apo_ros.training.samples import load_samples

    n_bags, steps, iters, batch = (6, 40, 8, 64) if quick else (12, 80, 25, 64)
    root = tempfile.mkdtemp(prefix="apo_ros_bench_train_")
    result: dict = {"policy": "small (default config, 64x64, 2 cameras)"}
    try:
        demos, data = _write_bags(os.path.join(root, "bags"), n_bags, steps, 64)
        cache = os.path.join(root, "cache")
        t = time.perf_counter()
        samples = load_samples(demos, data, cache_dir=cache)
        first = time.perf_counter() - t
        t = time.perf_counter()
        samples = load_samples(demos, data, cache_dir=cache)
        cached = time.perf_counter() - t
        t = time.perf_counter()
        load_samples(demos, data, cache_dir=None)
        uncached = time.perf_counter() - t
        n = len(samples)
        result["bags_to_samples"] = {
            "samples": n, "bags": n_bags,
            "no_cache_samples_per_s": round(n / uncached, 1),
            "first_read_with_cache_write_samples_per_s": round(n / first, 1),
            "cached_samples_per_s": round(n / cached, 1),
            "cache_speedup": round(uncached / cached, 1),
        }
        base = dict(steps=1000, batch_size=batch, progress=False, augment=True)
        variants = {
            "bc": dict(method="bc"),
            "kto": dict(method="kto"),
            "apo": dict(method="apo"),  # cached reference, exact z0, reweighting, gripper masking
            "apo_matched_z0": dict(method="apo", z0_mode="matched"),
            "apo_online_reference": dict(method="apo", reference="online"),  # released code's way
            "apo_online_reference_matched_z0": dict(method="apo", reference="online", z0_mode="matched"),
        }
        # One torch thread: per-step CPU time is then a stable cost measure even on a busy
        # machine (with several threads, OpenMP spin-waits under contention inflate it).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        result["step_time_threads"] = 1
        steps_out = {}
        fns = {}
        for name, options in variants.items():
            fns[name], steps_out[name] = _make_step(samples, TrainConfig(**base, **options))
        wall: dict[str, list[float]] = {name: [] for name in fns}
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        for i in range(iters + 2):  # round-robin so background load hits every variant alike
            for name, fn in fns.items():
                t, c = time.perf_counter(), time.process_time()
                fn()
                if i >= 2:  # the first two are warm-up
                    wall[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
        # CPU time (all threads of this process) is what the step costs; wall time also moves
        # with whatever else runs on the machine. Ratios are taken on CPU time.
        bc_cpu = float(np.median(cpu["bc"]))
        for name, r in steps_out.items():
            r["ms_per_step"] = round(1000 * float(np.median(wall[name])), 2)
            r["cpu_ms_per_step"] = round(1000 * float(np.median(cpu[name])), 2)
            r["ratio_to_bc"] = round(float(np.median(cpu[name])) / bc_cpu, 2)
        torch.set_num_threads(threads)
        result["step_time"] = steps_out
        result["apo_over_bc"] = steps_out["apo"]["ratio_to_bc"]
        result["apo_target"] = "<= 1.3x bc with cached reference"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
