"""The policy's own tokens: a session records the token ids a decode-mean state policy produced
beside each proposal (chunk 1 and chunk 8), and the trainer scores exactly those ids for the
policy's steps - not a re-tokenization of the expected values they decoded to. Bags without
ids still train, with one warning naming the bag."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from apo_ros.policies import build_policy, save_policy  # noqa: E402
from apo_ros.policies.testing import default_statistics  # noqa: E402
from apo_ros.recording import read_episode  # noqa: E402
from apo_ros.runtime.session import run_session  # noqa: E402
from apo_ros.training import samples as S  # noqa: E402
from apo_ros.training.samples import LabelConfig, encode_targets, load_samples  # noqa: E402

TASK = "lemon_on_plate"
STEPS = 24

pytestmark = pytest.mark.usefixtures("one_thread")


def mean_policy(chunk_size: int):
    torch.manual_seed(chunk_size)
    return build_policy("state", default_statistics(0.03), instructions=["put the lemon on the plate"],
                        device="cpu", decode="mean", n_bins=64, hidden=32, chunk_size=chunk_size)


class WithoutTokens:
    """The same policy behind the bare action interface: a bag as recorded before token ids were."""

    def __init__(self, policy):
        self.policy, self.policy_id = policy, "no-tokens"

    def select_action(self, observation):
        return self.policy.select_action(observation)

    def reset(self):
        pass


def record(policy, bags: str, seed: int = 0) -> str:
    summary = run_session(TASK, policy, "none", episodes=1, bags_dir=bags, seed=seed, max_steps=STEPS,
                          cameras=(), render=False)
    return summary.episodes[0].path


def argmax_tokens(policy, observation) -> np.ndarray:
    """[T, 7]: the tokens the policy's greedy decoding gives (its mode)."""
    tokens, _ = policy.predict_tokens(policy.prepare_observations([observation]))
    return tokens[0].numpy().reshape(policy.chunk_size, 7)


@pytest.mark.parametrize("chunk_size", [1, 8])
def test_a_session_records_the_argmax_tokens_and_the_trainer_scores_them(tmp_path, chunk_size):
    policy = mean_policy(chunk_size)
    bag = record(policy, str(tmp_path / "bags"))
    episode = read_episode(bag, load_images=False)
    steps = episode.steps
    assert len(steps) == STEPS and {s.source for s in steps} == {"policy"}
    space = policy.action_token_space()
    assert space.startswith("bins:grid:n=64") and policy.stats.statistics_id() in space
    index = 0  # position of each step in its chunk: the k-th step of an observation is action k
    for i, step in enumerate(steps):
        index = index + 1 if i and step.observation.stamp_ns == steps[i - 1].observation.stamp_ns else 0
        assert step.token_space == space
        assert step.tokens.tolist() == argmax_tokens(policy, step.observation)[index].tolist()
    # the trainer's targets for these policy steps are those ids, chunk step by chunk step
    samples = load_samples([], [bag], cache_dir=str(tmp_path / "cache")).label(LabelConfig())
    tokens, mask = encode_targets(policy, samples)
    recorded = np.stack([s.tokens for s in steps])
    rows = np.arange(len(steps) - chunk_size + 1)  # chunks that lie inside the episode
    for r in rows:
        assert tokens[r].tolist() == recorded[r:r + chunk_size].reshape(-1).tolist()
    assert mask.all()
    # ... which is not what re-tokenizing the decoded expected values gives (the defect: targets
    # the policy never predicted)
    retokenized, _ = policy.encode_actions(samples.action_targets(rows, chunk_size))
    differ = (retokenized != tokens[rows]).any(1)
    assert differ.sum() >= len(rows) // 2


def test_a_bag_without_tokens_trains_on_its_proposals_with_one_warning(tmp_path, caplog):
    from apo_ros.training.trainer import TrainConfig, train_policy

    policy = mean_policy(1)
    checkpoint = str(tmp_path / "ckpt")
    save_policy(policy, checkpoint)
    old = record(WithoutTokens(policy), str(tmp_path / "old"))
    old_steps = read_episode(old, load_images=False).steps
    assert all(s.tokens is None and s.proposed is not None for s in old_steps)
    samples = load_samples([], [old], cache_dir=None).label(LabelConfig())
    S._WARNED_BAGS.discard(old)
    with caplog.at_level(logging.WARNING, logger=S.__name__):
        tokens, _ = encode_targets(policy, samples)
        encode_targets(policy, samples)  # once per bag, not per call
    warnings = [r.getMessage() for r in caplog.records if old in r.getMessage()]
    assert len(warnings) == 1 and "re-tokenized" in warnings[0] and "before token ids were" in warnings[0]
    expected, _ = policy.encode_actions(samples.action_targets(np.arange(len(samples)), 1))
    assert torch.equal(tokens, expected)
    # and a training run on it (with an expert demo) completes
    demo = run_session(TASK, "expert", "none", episodes=1, bags_dir=str(tmp_path / "demos"), max_steps=8,
                       cameras=(), render=False).episodes[0].path
    out = str(tmp_path / "run")
    path = train_policy(TrainConfig(method="bc", steps=2, batch_size=8, log_every=1, save_every=0,
                                    progress=False, cache_dir=str(tmp_path / "cache"), threads=1,
                                    val_fraction=0.0),
                        [demo], [old], checkpoint, out, log=lambda msg: None)
    assert os.path.isdir(path)


def test_ids_of_another_token_space_are_not_used(tmp_path, caplog):
    recorder = mean_policy(1)
    bag = record(recorder, str(tmp_path / "bags"))
    samples = load_samples([], [bag], cache_dir=None).label(LabelConfig())
    # same architecture, other statistics: the recorded ids would mean other actions
    other = build_policy("state", default_statistics(0.05), instructions=["put the lemon on the plate"],
                         device="cpu", decode="mean", n_bins=64, hidden=32)
    S._WARNED_BAGS.discard(bag)
    with caplog.at_level(logging.WARNING, logger=S.__name__):
        tokens, _ = encode_targets(other, samples)
    expected, _ = other.encode_actions(samples.action_targets(np.arange(len(samples)), 1))
    assert torch.equal(tokens, expected)
    assert any(bag in r.getMessage() and "token space" in r.getMessage() for r in caplog.records)
