"""`apo-ros bench`: one run per section at the smallest sizes. Nothing here is timed: the timings
must come out finite, non-negative and ordered (p99 >= p50), with the rates and times that every
section reports strictly positive (a broken timer, an empty loop or a division gone wrong shows);
the figures that do not depend on the clock (sizes, counts, parameters, the merge rules' step
changes, the take-over tick) must have their known values and directions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apo_ros.bench import SECTIONS, describe_machine


def _numbers(doc, path=""):
    """(dotted path, value) of every number in a nested result (bools are flags, not figures)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _numbers(value, f"{path}.{key}" if path else str(key))
    elif isinstance(doc, (list, tuple)):
        for i, value in enumerate(doc):
            yield from _numbers(value, f"{path}.{i}")
    elif isinstance(doc, (int, float, np.integer, np.floating)) and not isinstance(doc, (bool, np.bool_)):
        yield path, float(doc)


def _check(result: dict, positive: list[str]) -> None:
    figures = dict(_numbers(result))
    # differences between two timings ("added_over_...") may come out below zero under load
    bad = {k: v for k, v in figures.items()
           if not math.isfinite(v) or (v < 0 and "added_" not in k.rsplit(".", 1)[-1])}
    assert not bad, f"non-finite or negative figures: {bad}"
    for key in positive:
        assert figures.get(key, 0) > 0, f"{key} = {figures.get(key)} (of {sorted(figures)})"
    # percentiles of one sample are ordered
    for key, value in figures.items():
        for low, high in (("p50_ms", "p99_ms"), ("p50", "p99")):
            if key.endswith("." + high) or key == high:
                assert value >= figures[key[: -len(high)] + low], key


def test_sections_are_the_documented_ones():
    assert list(SECTIONS) == ["sim", "bags", "policy", "train", "runtime", "serve"]
    machine = describe_machine()
    assert machine["cpu_count"] >= 1 and machine["torch"]


def test_bags_section(tmp_path):
    from apo_ros.recording import bench

    recording = bench.bench_recording(0.4, str(tmp_path), repeats=1)
    reading = bench.bench_reading(60, str(tmp_path))
    _check({"recording": recording, "reading": reading},
           ["recording.real_time_factor", "recording.bare_real_time_factor", "recording.bag_megabytes",
            "recording.jpeg_real_time_factor", "recording.time_ratio_to_bare",
            "reading.read_label_steps_per_s", "reading.read_label_steps_per_s_no_images",
            "reading.bare_read_deserialize_steps_per_s", "reading.time_ratio_to_bare"])
    # two 640x480 rgb8 cameras at 30 Hz; the raw bag holds them uncompressed (most frames of the
    # 0.4 s: the last may fall past the end), the JPEG bag a small fraction of that
    assert recording["image_megabytes_per_data_second"] == round(2 * 640 * 480 * 3 * 30 / 1e6, 1)
    assert recording["bag_megabytes"] >= 0.8 * recording["image_megabytes_per_data_second"] * 0.4
    assert recording["jpeg_bag_megabytes"] < recording["bag_megabytes"] / 5
    assert reading["steps"] == 60


def test_policy_section():
    from apo_ros.policies import bench

    latency = bench._latency("small", "cpu", 2)
    training = bench._train_speed(steps=1, batch=8, threads=1)
    _check({"latency": latency, "training": training},
           ["latency.p50_ms", "latency.p99_ms", "latency.parameters", "training.small_samples_per_s",
            "training.naive_baseline_samples_per_s", "training.ratio_to_baseline"])
    # the figures are of the policy they name: the default small policy, counted independently
    from apo_ros.policies import build_policy
    from apo_ros.policies.testing import default_statistics

    small = build_policy("small", default_statistics(), instructions=bench.INSTRUCTIONS, device="cpu")
    assert latency["parameters"] == training["small_parameters"] == sum(p.numel() for p in small.parameters())
    assert latency["n"] == 2 and (training["batch"], training["threads"]) == (8, 1)


def test_train_section(tmp_path):
    from apo_ros.training import bench
    from apo_ros.training.config import TrainConfig
    from apo_ros.training.samples import load_samples

    demos, data = bench._write_bags(str(tmp_path / "bags"), 2, 12, 16)
    samples = load_samples(demos, data, cache_dir=None)
    step, facts = bench._make_step(samples, TrainConfig(method="apo", steps=10, batch_size=4, progress=False))
    step()
    _check(facts, ["batch", "reference_pass_s", "reference_pass_samples"])
    # apo scores the frozen reference once over every sample before training
    assert facts["batch"] == 4 and facts["reference_pass_samples"] == len(samples)


def test_runtime_section():
    from apo_ros.runtime import bench

    overhead = bench.per_step_overhead(12)
    takeover = bench.takeover_latency(4)
    drain = bench.spacemouse_drain(20)
    _check({"overhead": overhead, "takeover": takeover, "drain": drain},
           ["overhead.control_ms.mean", "overhead.total_ms.mean", "drain.drain_read_us"])
    assert drain["drained_read_sees_deflection"]
    # the action queue: a 0.3 s policy on a real 10 Hz clock, sync against async; merge rules
    rates = bench.queue_rates(1.5, delay_s=0.3)
    steps = bench.merge_step_changes(ticks=80)
    _check({"rates": rates, "steps": steps},
           ["rates.async.executed_actions_per_s", "rates.sync.inference_ms.p50",
            "steps.replace.max_step_change_m_s", "steps.crossfade.boundaries"])
    assert rates["async"]["repeated_actions"] == rates["sync"]["repeated_actions"] == 0
    # the take-over applies on the tick after the deflection, in every trial
    assert takeover["trials"] == 4 and takeover["steps_after_next_tick"]["max"] == 0
    # simulated ticks, no clock: merging the overlap of two disagreeing chunks (ensemble,
    # crossfade) makes the hand-over jump smaller than replacing one chunk by the next, and with
    # replace the jumps are at the hand-overs, not inside a chunk
    replace = steps["replace"]
    assert replace["max_step_change_at_boundaries_m_s"] > replace["max_step_change_inside_chunks_m_s"]
    for merge in ("ensemble", "crossfade"):
        assert steps[merge]["boundaries"] == replace["boundaries"] > 0
        assert (steps[merge]["max_step_change_at_boundaries_m_s"]
                < replace["max_step_change_at_boundaries_m_s"]), merge
        assert (steps[merge]["mean_step_change_at_boundaries_m_s"]
                < replace["mean_step_change_at_boundaries_m_s"]), merge


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sim_section():
    from apo_ros.sim import bench

    actions = bench._expert_actions(bench.BENCH_TASK, seed=0)[:5]
    runners = bench._make_runners(bench.BENCH_TASK, actions)
    substeps = runners.pop("_substeps")
    rates = {}
    for name, replay in runners.items():
        steps, seconds = replay()
        assert steps == len(actions), name
        rates[name] = steps / seconds
    _check({"rates": rates, "substeps": substeps},
           ["substeps"] + [f"rates.{name}" for name in runners])


@pytest.mark.slow  # a real `apo-ros serve` subprocess: ~10 s
def test_serve_section(tmp_path):
    from apo_ros.serving.bench import _case

    result = _case(64, 3, "cpu", str(tmp_path))  # a real `apo-ros serve` subprocess, 3 requests
    _check(result, ["in_process.p50_ms", "remote.p50_ms", "transport.p50_ms", "request_bytes"])
    # a request carries both 64x64 rgb8 images raw, plus the state and the prompt
    assert 2 * 64 * 64 * 3 < result["request_bytes"] < 2 * 64 * 64 * 3 + 2000
