"""action/tokens: the token ids a policy produced, written beside its proposals and read back
paired with the executed action they belong to (also the k-th action of a chunk)."""

from __future__ import annotations

import numpy as np
import pytest

from apo_ros.actions.space import ACTION_NAMES
from apo_ros.recording import EpisodeWriter, read_episode, schema
from apo_ros.recording import messages as M
from apo_ros.recording.synthetic import START_NS, STEP_NS, synthetic_observation

SPACE = "bins:grid:n=64:vocab=64@stats=0123456789ab"


def test_tokens_pair_with_their_proposal_and_executed_action(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "bag")
    written = []  # (source, tokens or None) per executed action, in order
    with EpisodeWriter(path, metadata={"task": "lift", "instruction": "lift"}, cameras=()) as w:
        w.write_event(START_NS, "start")
        stamp = START_NS + STEP_NS
        w.write_observation(synthetic_observation(rng, stamp, cameras=(), instruction="lift"))
        for k in range(3):  # a chunk of 3 planned on one observation, executed one per tick
            ids = rng.integers(0, 64, 7)
            w.write_action(stamp + (k + 1) * STEP_NS, rng.uniform(-0.01, 0.01, 7), "policy", stamp,
                           proposed=rng.uniform(-0.01, 0.01, 7), tokens=ids, token_space=SPACE)
            written.append(("policy", ids))
        stamp2 = stamp + 4 * STEP_NS
        w.write_observation(synthetic_observation(rng, stamp2, cameras=(), instruction="lift"))
        # the operator drove: the policy's proposal and its ids are still recorded
        ids = rng.integers(0, 64, 7)
        w.write_action(stamp2 + 1, rng.uniform(-0.01, 0.01, 7), "human", stamp2,
                       proposed=rng.uniform(-0.01, 0.01, 7), tokens=ids, token_space=SPACE)
        written.append(("human", ids))
        stamp3 = stamp2 + STEP_NS
        w.write_observation(synthetic_observation(rng, stamp3, cameras=(), instruction="lift"))
        w.write_action(stamp3 + 1, rng.uniform(-0.01, 0.01, 7), "expert", stamp3)  # no proposal, no ids
        written.append(("expert", None))
        stamp4 = stamp3 + STEP_NS
        w.write_observation(synthetic_observation(rng, stamp4, cameras=(), instruction="lift"))
        # a policy without per-step ids: a proposal only
        w.write_action(stamp4 + 1, rng.uniform(-0.01, 0.01, 7), "policy", stamp4,
                       proposed=rng.uniform(-0.01, 0.01, 7))
        written.append(("policy", None))
    episode = read_episode(path, load_images=False)
    assert [s.source for s in episode.steps] == [s for s, _ in written]
    for step, (_, ids) in zip(episode.steps, written):
        if ids is None:
            assert step.tokens is None and step.token_space == ""
        else:
            assert step.tokens.dtype == np.int64 and step.tokens.tolist() == ids.tolist()
            assert step.token_space == SPACE


def test_a_bag_without_the_topic_reads_with_no_tokens(tmp_path):
    from apo_ros.recording.synthetic import write_synthetic_episode

    write_synthetic_episode(str(tmp_path / "old"), ["policy"] * 3 + ["human"] * 2, size=8)
    episode = read_episode(str(tmp_path / "old"), load_images=False)
    assert all(s.tokens is None and s.token_space == "" for s in episode.steps)
    assert all(s.proposed is not None for s in episode.steps)


def test_the_token_message_is_a_standard_joint_state():
    spec = {s.topic: s for s in schema.topics(cameras=())}[schema.ACTION_TOKENS]
    assert spec.msgtype == "sensor_msgs/msg/JointState" and not spec.required
    types = M.rosbags_types()
    msg = M.make_action_tokens(types, 42, [3, 0, 63, 7, 1, 2, 5], SPACE)
    assert list(msg.name) == list(ACTION_NAMES) and msg.header.frame_id == SPACE
    ids, space, stamp = M.joint_state_to_tokens(msg)
    assert ids.tolist() == [3, 0, 63, 7, 1, 2, 5] and space == SPACE and stamp == 42
    assert list(M.make_action_tokens(types, 1, [5, 6], SPACE).name) == ["t0", "t1"]
    for bad in ([-1] * 7, [0.5] * 7, []):
        with pytest.raises(ValueError, match="token ids"):
            M.make_action_tokens(types, 1, bad, SPACE)
    with pytest.raises(ValueError, match="token space"):
        M.make_action_tokens(types, 1, [1] * 7, "")
