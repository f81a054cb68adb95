"""Bags -> samples: cache, bad bags, labels, TPO pairing, samplers, augmentation."""

from __future__ import annotations

import os

import numpy as np
import pytest

from apo_ros.recording.episode import Episode, Step
from apo_ros.recording.synthetic import synthetic_observation, write_synthetic_episode
from apo_ros.training.augmentation import AugmentConfig, augment_images
from apo_ros.training.cache import DataError, episode_columns
from apo_ros.training.config import TrainConfig
from apo_ros.training.registry import METHODS
from apo_ros.training.samplers import BalancedSampler, UniformSampler, group_counts
from apo_ros.training.samples import LabelConfig, assemble_samples, load_samples


def pool(samples, method: str) -> np.ndarray:
    """The rows the method's sampler draws from (the registry's entry)."""
    sampler = METHODS[method].sampler(samples, TrainConfig(method=method), 4, 0)
    return sampler.target_rows()


def _episode(sources, seed=0, path="mem"):
    rng = np.random.default_rng(seed)
    steps = []
    for i, src in enumerate(sources):
        obs = synthetic_observation(rng, 1000 + i, size=8, index=i)
        action = np.full(7, 0.01 * i)
        steps.append(Step(observation=obs, action=action, source=src, stamp_ns=1000 + i))
    return Episode(path=path, steps=steps)


def _samples(*episodes, demo=()):
    parts = [(episode_columns(ep), i in demo) for i, ep in enumerate(episodes)]
    return assemble_samples(parts, [ep.path for ep in episodes]).label(LabelConfig(k=2, sirius_window=3))


def test_tpo_pairing_on_hand_built_episode():
    #          0    1    2    3    4    5    6    7    8    9
    src = ["policy"] * 4 + ["human"] * 3 + ["policy"] * 2 + ["human"]
    s = _samples(_episode(["expert"] * 5), _episode(src), demo=(0,))
    # rows of the interaction episode start at 5
    w = s.tpo_windows(window=8)
    assert w.tolist() == [[5 + 1, 5 + 4, 3], [5 + 8, 5 + 9, 1]]
    # window caps the length; chosen rows are human, rejected rows are policy steps
    w2 = s.tpo_windows(window=2)
    assert w2.tolist() == [[5 + 2, 5 + 4, 2], [5 + 8, 5 + 9, 1]]
    for rej, cho, n in w:
        assert (s.source[rej:rej + n] == 0).all() and (s.source[cho:cho + n] == 1).all()
    # an intervention at the very start of an episode has nothing to pair with
    s2 = _samples(_episode(["human", "human", "policy"]))
    assert s2.tpo_windows().shape == (0, 3)


def test_labels_groups_and_pools():
    src = ["policy"] * 4 + ["human"] * 3 + ["policy"] * 2 + ["human"]
    s = _samples(_episode(["expert"] * 5), _episode(src), demo=(0,))
    assert s.desirable[:5].all() and not s.undesirable[:5].any()
    # k=2: the two policy steps before each intervention
    assert np.nonzero(s.undesirable)[0].tolist() == [5 + 2, 5 + 3, 5 + 7, 5 + 8]
    g = s.groups()
    assert g["human"].tolist() == [9, 10, 11, 14]
    assert g["undesirable"].tolist() == [7, 8, 12, 13]
    assert set(g["desirable"].tolist()) == {0, 1, 2, 3, 4, 5, 6}
    assert pool(s, "bc").tolist() == [0, 1, 2, 3, 4]
    assert pool(s, "dagger").tolist() == [0, 1, 2, 3, 4, 9, 10, 11, 14]
    assert len(pool(s, "sirius")) == 15
    # sirius window 3 before each intervention, demos "demo"
    names = np.array(["demo", "rollout", "intervention", "pre_intervention"])[s.sirius]
    assert names[:5].tolist() == ["demo"] * 5
    assert names[5:].tolist() == ["rollout"] + ["pre_intervention"] * 3 + ["intervention"] * 3 + \
        ["pre_intervention"] * 2 + ["intervention"]


def test_chunks_repeat_last_action_of_episode():
    s = _samples(_episode(["expert"] * 3), _episode(["expert"] * 4))
    assert s.chunk_index(np.array([1, 2, 3]), 3).tolist() == [[1, 2, 2], [2, 2, 2], [3, 4, 5]]
    assert s.action_targets(np.array([1]), 3).shape == (1, 3, 7)
    assert s.action_targets(np.array([1]), 1).shape == (1, 7)


def test_cache_and_bad_bags(tmp_path):
    good = str(tmp_path / "good")
    write_synthetic_episode(good, ["policy"] * 4 + ["human"] * 2, seed=1, size=16)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.yaml").write_text("not: a: bag\n")
    cache = str(tmp_path / "cache")
    s = load_samples([], [good, str(bad), str(tmp_path / "missing")], cache_dir=cache)
    assert s.load_stats["bags_read"] == 1 and s.load_stats["cache_hits"] == 0
    assert len(s) == 6 and len(s.errors) == 2
    assert any(str(bad) in e for e in s.errors) and any("missing" in e for e in s.errors)
    entries = [e for e in os.listdir(cache) if not e.startswith(".")]
    assert len(entries) == 1
    assert all(n.endswith((".npy", ".json")) for n in os.listdir(os.path.join(cache, entries[0])))
    again = load_samples([], [good], cache_dir=cache)
    assert again.load_stats["cache_hits"] == 1 and again.load_stats["bags_read"] == 0
    cams = ["front", "wrist"]
    assert np.array_equal(again.images(np.arange(6), cams), s.images(np.arange(6), cams))
    assert np.array_equal(again.actions, s.actions)
    # a changed bag is a different cache entry
    meta = os.path.join(good, "metadata.yaml")
    os.utime(meta, ns=(os.stat(meta).st_atime_ns, os.stat(meta).st_mtime_ns + 10**9))
    third = load_samples([], [good], cache_dir=cache)
    assert third.load_stats["bags_read"] == 1
    with pytest.raises(DataError, match="no usable bags"):
        load_samples([], [str(bad)], cache_dir=None)


def test_group_counts_and_balanced_sampler():
    assert group_counts({"desirable": 0.5, "human": 0.25, "undesirable": 0.25},
                        {"desirable": 10, "human": 3, "undesirable": 5}, 8) == \
        {"desirable": 4, "human": 2, "undesirable": 2}
    # an empty group's share goes to the others, counts still add up
    c = group_counts({"desirable": 0.5, "human": 0.25, "undesirable": 0.25},
                     {"desirable": 10, "human": 0, "undesirable": 5}, 9)
    assert c["human"] == 0 and sum(c.values()) == 9 and c["desirable"] == 6
    groups = {"desirable": np.arange(0, 10), "human": np.arange(10, 13), "undesirable": np.arange(13, 18)}
    ratios = {"desirable": 0.5, "human": 0.25, "undesirable": 0.25}
    a = BalancedSampler(groups, ratios, 8, seed=3)
    batches = [a.next_batch() for _ in range(5)]
    for b in batches:
        assert len(b) == 8
        assert ((b >= 10) & (b < 13)).sum() == 2 and (b >= 13).sum() == 2
    # state round trip continues identically
    b = BalancedSampler(groups, ratios, 8, seed=3)
    for _ in range(2):
        b.next_batch()
    c = BalancedSampler(groups, ratios, 8, seed=3)
    c.load_state_dict(b.state_dict())
    assert all(np.array_equal(c.next_batch(), x) for x in batches[2:])
    assert a.epoch >= 2  # 3 human samples, 2 per batch, 5 batches


def test_uniform_sampler_covers_each_pass():
    u = UniformSampler(np.arange(10, 20), 5, seed=0)
    first = np.concatenate([u.next_batch(), u.next_batch()])
    assert sorted(first.tolist()) == list(range(10, 20))
    assert u.epoch == 0
    u.next_batch()
    assert u.epoch == 1


def test_augmentation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 2, 16, 16, 3), dtype=np.uint8)
    out = augment_images(images, np.random.default_rng(1), AugmentConfig(True, 2, 0.1))
    assert out.shape == images.shape and out.dtype == np.uint8 and not np.array_equal(out, images)
    again = augment_images(images, np.random.default_rng(1), AugmentConfig(True, 2, 0.1))
    assert np.array_equal(out, again)
    assert np.array_equal(augment_images(images, rng, AugmentConfig(True, 0, 0.0)), images)
    assert augment_images(images, rng, AugmentConfig(False)) is images


def test_chunk_continuations_are_not_training_samples():
    """A chunk-4 policy executes steps 1-3 of each chunk from the chunk's planning observation
    (the bag links them to it). Pairing that observation with a chunk target starting later would
    misalign samples, so those steps are dropped from training but still count for the labels."""
    rng = np.random.default_rng(0)
    sources = ["policy"] * 8 + ["human"] * 2
    steps = []
    for i, src in enumerate(sources):
        planned_at = i - i % 4 if src == "policy" else i  # policy chunks of 4: obs of the chunk start
        obs = synthetic_observation(rng, 1000 + planned_at, size=8, index=planned_at)
        steps.append(Step(observation=obs, action=np.full(7, 0.01 * i), source=src, stamp_ns=1000 + i))
    s = _samples(Episode(path="chunked", steps=steps))
    assert s.continues_chunk.tolist() == [False, True, True, True, False, True, True, True, False, False]
    assert s.dropped.tolist() == s.continues_chunk.tolist()
    # K = 2 undesirable steps are still the two executed policy steps before the take-over ...
    # ... but both continue a chunk, so neither is a training sample
    assert not s.undesirable.any()
    assert pool(s, "sirius").tolist() == [0, 4, 8, 9]
    assert s.groups()["human"].tolist() == [8, 9]


def _episode_with_proposals(sources, seed=0, path="mem"):
    """Like _episode, with what the policy proposed at each step (the executed action + 0.5)."""
    ep = _episode(sources, seed=seed, path=path)
    for step in ep.steps:
        step.proposed = step.action + 0.5
    return ep


def test_chunk_targets_never_cross_a_take_over_or_hand_back():
    from apo_ros.policies import build_policy
    from apo_ros.policies.testing import default_statistics
    from apo_ros.training.samples import encode_targets

    #          0    1    2    3    4    5    6    7    8    9   10
    src = ["policy"] * 4 + ["human"] * 3 + ["policy"] * 4
    s = _samples(_episode_with_proposals(src))
    # a take-over inside the chunk of step 2 (chunk 4 = steps 2, 3, 4, 5): only 2 and 3 are its own
    assert s.chunk_index(np.array([2]), 4).tolist() == [[2, 3, 3, 3]]
    assert s.chunk_valid(np.array([2, 4, 5, 8]), 4).tolist() == [
        [True, True, False, False],  # policy steps before the take-over
        [True, True, True, False],  # the operator's run 4..6, handed back at 7
        [True, True, False, False],
        [True, True, True, True]]  # the episode's end: padded with its last action (LeRobot)
    assert s.chunk_index(np.array([8]), 4).tolist() == [[8, 9, 10, 10]]
    # policy steps use what the policy proposed, the operator's steps what was executed
    targets = s.action_targets(np.array([2, 4]), 4)
    np.testing.assert_allclose(targets[0, :2], s.actions[[2, 3]] + 0.5)
    np.testing.assert_allclose(targets[1, :3], s.actions[[4, 5, 6]])
    # tokens of chunk steps outside the segment are masked, 7 per step (bin tokens)
    policy = build_policy("small", default_statistics(), instructions=["lift the red cube"], device="cpu",
                          chunk_size=4, image_size=8, channels=[4, 4], hidden=8)
    tokens, mask = encode_targets(policy, s, np.array([2, 4, 8]))
    assert tokens.shape == (3, 28)
    assert mask.sum(1).tolist() == [14, 21, 28]
    assert mask[0, :14].all() and not mask[0, 14:].any()


def test_validation_split_and_demo_mix_are_by_episode():
    demos = [_episode(["expert"] * 4, seed=i, path=f"demo{i}") for i in range(6)]
    data = [_episode(["policy"] * 3 + ["human"] * 2, seed=10 + i, path=f"int{i}") for i in range(4)]
    s = _samples(*demos, *data, demo=tuple(range(6)))
    s.split_episodes(0.25, seed=0)
    held = {s.bags[e] for e in np.unique(s.episode[s.held_out])}
    # round(0.25 * 6) = 2 demo episodes, round(0.25 * 4) = 1 interaction episode, whole episodes
    assert sum(b.startswith("demo") for b in held) == 2 and sum(b.startswith("int") for b in held) == 1
    for e in range(len(s.bags)):
        rows = s.episode == e
        assert s.held_out[rows].all() or not s.held_out[rows].any()
    assert not np.isin(pool(s, "dagger"), np.nonzero(s.held_out)[0]).any()
    assert all(not np.isin(g, np.nonzero(s.held_out)[0]).any() for g in s.groups().values())
    val = s.validation_rows("data")
    assert len(val) == 2 and (s.source[val] == 1).all() and s.held_out[val].all()
    assert s.is_demo[s.validation_rows("demos")].all()
    # the paper's fine-tuning mix: as many demo episodes as (training) interaction episodes
    s.select_demos("equal", seed=0)
    used_demos = {s.bags[e] for e in np.unique(s.episode[s.is_demo & s.trainable_rows()])}
    assert len(used_demos) == 3 and not (held & used_demos)
    assert len(np.unique(s.episode[pool(s, "bc")])) == 3
    s.select_demos("all", seed=0)
    assert len(np.unique(s.episode[pool(s, "bc")])) == 4
    with pytest.raises(ValueError, match="demo_mix"):
        s.select_demos("some", seed=0)


def test_camera_less_bags_give_object_state_only():
    rng = np.random.default_rng(0)
    steps = []
    for i in range(5):
        obs = synthetic_observation(rng, 1000 + i, size=8, index=i, cameras=())
        steps.append(Step(observation=obs, action=np.zeros(7), source="expert", stamp_ns=1000 + i))
    s = _samples(Episode(path="nocam", steps=steps))
    assert s.cameras == () and s.object_state.shape == (5, 14)
    np.testing.assert_allclose(s.object_state[0], steps[0].observation.object_poses.reshape(-1))
    with pytest.raises(DataError, match="cameras"):
        s.images(np.arange(2), ("front",))
    assert s.object_state_problem(14) is None
    assert "object poses" in s.object_state_problem(21)
