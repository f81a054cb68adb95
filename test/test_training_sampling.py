"""Sampling as one setting shared by every method: natural, released (0.5 / 0.25 / 0.25) and
capped shares, measured on the batches the registry's samplers really draw."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from apo_ros.errors import ConfigError
from apo_ros.recording.episode import Episode, Step
from apo_ros.recording.synthetic import synthetic_observation
from apo_ros.training.cache import episode_columns
from apo_ros.training.config import TrainConfig
from apo_ros.training.registry import METHODS, group_shares
from apo_ros.training.samplers import BalancedSampler, capped_shares, systematic_counts
from apo_ros.training.samples import LabelConfig, assemble_samples

K = 10


def _episode(sources, seed, path):
    rng = np.random.default_rng(seed)
    steps = []
    for i, src in enumerate(sources):
        obs = synthetic_observation(rng, 1000 + i, size=8, index=i)
        steps.append(Step(observation=obs, action=rng.uniform(-0.5, 0.5, 7), source=src, stamp_ns=1000 + i))
    return Episode(path=path, steps=steps)


@pytest.fixture(scope="module")
def samples():
    """8 demos x 30 steps; 10 deployments of 50 steps, each with one 3-step correction after 40
    policy steps: 30 human steps of 740 (4%), 100 undesirable (K = 10 per intervention)."""
    demos = [_episode(["expert"] * 30, i, f"demo{i}") for i in range(8)]
    runs = [_episode(["policy"] * 40 + ["human"] * 3 + ["policy"] * 7, 100 + i, f"run{i}") for i in range(10)]
    episodes = demos + runs
    parts = [(episode_columns(ep), i < len(demos)) for i, ep in enumerate(episodes)]
    s = assemble_samples(parts, [ep.path for ep in episodes]).label(LabelConfig(k=K))
    s.split_episodes(0.0, 0)
    s.select_demos("all", 0)
    return s


def _draw(samples, batches: int, batch: int = 64, **config):
    cfg = TrainConfig(**config)
    sampler = METHODS[cfg.method].sampler(samples, cfg, batch, cfg.seed)
    rows = np.concatenate([sampler.next_batch() for _ in range(batches)])
    return rows, sampler


def _share(samples, rows, group: str) -> float:
    return float(np.isin(rows, samples.groups()[group]).mean())


def test_natural_released_and_capped_shares_of_the_corrections(samples):
    n = len(samples)
    human, undesirable = 30 / n, 100 / n
    natural, _ = _draw(samples, 200, method="apo", sampling="natural")
    released, sampler = _draw(samples, 200, method="apo", sampling="released")
    capped, capped_sampler = _draw(samples, 400, method="apo", sampling="capped", max_repeat=2.0)
    # natural: each group at its share of the data (uniform over every labeled step)
    assert _share(samples, natural, "human") == pytest.approx(human, abs=0.005)
    assert _share(samples, natural, "undesirable") == pytest.approx(undesirable, abs=0.01)
    # released: a quarter of every batch, ~6x the corrections' share of the data
    assert _share(samples, released, "human") == pytest.approx(0.25, abs=1e-9)
    assert _share(samples, released, "undesirable") == pytest.approx(0.25, abs=1e-9)
    assert sampler.description["groups"]["human"]["repeat"] == pytest.approx(0.25 / human, rel=0.01)
    # capped at 2x: the corrections at twice their natural share, between natural and released
    assert _share(samples, capped, "human") == pytest.approx(2 * human, abs=0.005)
    by_mode = [_share(samples, rows, "human") for rows in (natural, capped, released)]
    assert by_mode == sorted(by_mode) and len(set(by_mode)) == 3
    # the undesirable group is pinned too: once the corrections are capped, its ratio share of
    # what is left (0.31) would be 2.3x its 13.5% share of the data
    assert _share(samples, capped, "undesirable") == pytest.approx(2 * undesirable, abs=0.01)
    for group in capped_sampler.description["groups"].values():
        assert group["repeat"] <= 2.0 + 1e-6


def test_each_method_has_its_default_and_every_setting_reaches_its_batches(samples):
    defaults = {m: METHODS[m].default_sampling for m in METHODS}
    assert defaults == {"bc": "natural", "dagger": "natural", "sirius": "natural", "kto": "released",
                        "tpo": "natural", "apo": "released"}
    # a null sampling is the method's default, drawn exactly as before (same batches)
    for method in ("apo", "bc"):
        a, _ = _draw(samples, 3, method=method)
        b, _ = _draw(samples, 3, method=method, sampling=defaults[method])
        assert np.array_equal(a, b)
    human = samples.groups()["human"]
    demo_rows = np.nonzero(samples.is_demo)[0]
    for mode in ("natural", "released", "capped"):
        # bc: the demos only, whatever the sampling
        rows, _ = _draw(samples, 20, method="bc", sampling=mode)
        assert np.isin(rows, demo_rows).all()
        # dagger: demos + corrections; released gives the corrections 0.25 / (0.5 + 0.25) = 1/3
        rows, sampler = _draw(samples, 60, method="dagger", sampling=mode)
        assert np.isin(rows, np.concatenate([demo_rows, human])).all()
        share = float(np.isin(rows, human).mean())
        natural_share = 30 / (240 + 30)
        expected = {"natural": natural_share, "released": 1 / 3, "capped": 2 * natural_share}[mode]
        assert share == pytest.approx(expected, abs=0.01), mode
        # sirius: every step; its class weights apply on top of the draws
        rows, _ = _draw(samples, 60, method="sirius", sampling=mode)
        assert float(np.isin(rows, human).mean()) == pytest.approx(
            {"natural": 30 / 740, "released": 0.25, "capped": 60 / 740}[mode], abs=0.01)
    # the sampler's targets (train NLL) never include the undesirable rows, whatever the mode
    for mode in ("natural", "released", "capped"):
        _, sampler = _draw(samples, 1, method="kto", sampling=mode)
        assert not np.isin(sampler.target_rows(), samples.groups()["undesirable"]).any()


def test_tpo_takes_natural_sampling_only():
    assert TrainConfig(method="tpo", sampling="natural").effective_sampling == "natural"
    with pytest.raises(ValueError, match="tpo takes sampling"):
        TrainConfig(method="tpo", sampling="released")
    with pytest.raises(ConfigError, match="sampling must be one of"):
        TrainConfig.from_dict({"sampling": "balanced"})
    with pytest.raises(ConfigError, match="max_repeat"):
        TrainConfig.from_dict({"sampling": "capped", "max_repeat": 0.5})


def test_capped_shares_interpolate_between_natural_and_released():
    ratios = {"desirable": 0.5, "human": 0.25, "undesirable": 0.25}
    sizes = {"desirable": 610, "human": 30, "undesirable": 100}
    natural = {g: n / 740 for g, n in sizes.items()}
    one = capped_shares(ratios, sizes, 1.0)
    assert all(one[g] == pytest.approx(natural[g]) for g in sizes)
    assert capped_shares(ratios, sizes, 1e6) == pytest.approx(ratios)
    two = capped_shares(ratios, sizes, 2.0)
    assert sum(two.values()) == pytest.approx(1.0)
    assert two["human"] == pytest.approx(2 * natural["human"])
    assert two["undesirable"] == pytest.approx(2 * natural["undesirable"])
    assert two["desirable"] == pytest.approx(1 - 2 * natural["human"] - 2 * natural["undesirable"])
    # a larger cap never gives the corrections a smaller share
    shares = [capped_shares(ratios, sizes, m)["human"] for m in (1, 1.5, 2, 4, 8, 100)]
    assert shares == sorted(shares) and shares[-1] == pytest.approx(0.25)


def test_systematic_counts_are_exact_on_average_even_at_small_batches():
    shares = {"desirable": 0.85, "human": 0.06, "undesirable": 0.09}
    rng = np.random.default_rng(0)
    draws = [systematic_counts(shares, 8, rng) for _ in range(4000)]
    assert all(sum(d.values()) == 8 for d in draws)
    human = np.array([d["human"] for d in draws])
    assert set(human.tolist()) <= {0, 1}  # floor(0.48) or one more, never more
    assert human.mean() == pytest.approx(0.48, abs=0.03)  # fixed rounding would give 0 every batch
    assert np.mean([d["undesirable"] for d in draws]) == pytest.approx(0.72, abs=0.03)


def test_capped_sampler_resumes_identically(samples):
    groups, description = group_shares(samples, np.ones(len(samples), bool),
                                       TrainConfig(sampling="capped", max_repeat=2.0))
    shares = {g: d["batch"] for g, d in description["groups"].items()}
    a = BalancedSampler(groups, None, 16, seed=5, shares=shares)
    batches = [a.next_batch() for _ in range(6)]
    b = BalancedSampler(groups, None, 16, seed=5, shares=shares)
    for _ in range(3):
        b.next_batch()
    c = BalancedSampler(groups, None, 16, seed=5, shares=shares)
    c.load_state_dict(b.state_dict())
    assert all(np.array_equal(c.next_batch(), x) for x in batches[3:])


def test_the_run_records_its_sampling(tmp_path):
    from apo_ros.recording.synthetic import write_synthetic_episode
    from apo_ros.training.trainer import train_policy

    demos = [str(tmp_path / f"demo{i}") for i in range(2)]
    data = [str(tmp_path / "run0")]
    for i, path in enumerate(demos):
        write_synthetic_episode(path, ["expert"] * 12, seed=i, size=16)
    write_synthetic_episode(data[0], ["policy"] * 12 + ["human"] * 4 + ["policy"] * 4, seed=7, size=16)
    out = str(tmp_path / "out")
    cfg = TrainConfig(method="apo", steps=1, batch_size=8, progress=False, cache_dir=None, threads=1,
                      save_every=0, tensorboard=False, policy={"hidden": 16}, sampling="capped",
                      max_repeat=1.5, k=4)
    train_policy(cfg, demos, data, "state", out, log=lambda msg: None)
    with open(os.path.join(out, "train_config.json")) as f:
        saved = json.load(f)
    assert saved["config"]["sampling"] == "capped" and saved["config"]["max_repeat"] == 1.5
    eff = saved["effective"]
    assert eff["sampling"] == "capped" and eff["z0_clamp"] == [-5.0, 5.0]
    groups = eff["batches"]["groups"]
    assert groups["human"]["rows"] == 4 and groups["undesirable"]["rows"] == 4
    assert groups["human"]["repeat"] == pytest.approx(1.5, abs=0.01)
    assert eff["demo_episodes"] == 2
