"""The small CPU token policy: teacher-forced log-probs, autoregression, masking, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apo_ros.observation import Observation
from apo_ros.policies import build_policy, make_reference
from apo_ros.policies.testing import default_statistics, random_batch, square_task

INSTRUCTIONS = ["open it", "close it"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make(**config):
    return build_policy("small", default_statistics(), instructions=INSTRUCTIONS, device="cpu", **config)


def batch(policy, n=6, seed=0):
    images, proprio, actions = random_batch(n, seed=seed, chunk=policy.chunk_size)
    inputs = policy.prepare(images, proprio, [INSTRUCTIONS[i % 2] for i in range(n)])
    tokens, mask = policy.encode_actions(actions)
    return inputs, tokens, mask, actions


def test_logps_match_hand_computation_position_by_position():
    policy = make()
    inputs, tokens, mask, _ = batch(policy)
    logps = policy.token_logps(inputs, tokens, mask)
    assert logps.shape == (6, 7) and (logps < 0).all()
    # By hand: the context of position d is trunk + pos_d + sum of the embeddings of tokens < d.
    with torch.no_grad():
        trunk = policy.trunk(inputs)
        history = torch.zeros_like(trunk)
        for d in range(7):
            logits = policy._logits(trunk, history[:, None], slice(d, d + 1))[:, 0]
            expected = torch.log_softmax(logits, -1).gather(1, tokens[:, d:d + 1])[:, 0]
            torch.testing.assert_close(logps[:, d], expected, rtol=1e-5, atol=1e-5)
            history = history + policy.token_embedding(tokens[:, d] + d * 256)


def test_autoregressive_dependence_and_masking():
    policy = make()
    inputs, tokens, mask, _ = batch(policy)
    base = policy.token_logps(inputs, tokens, mask)
    changed = tokens.clone()
    changed[:, 2] = (changed[:, 2] + 77) % 256
    out = policy.token_logps(inputs, changed, mask)
    assert torch.equal(out[:, :2], base[:, :2])  # earlier positions cannot see token 2
    assert not torch.allclose(out[:, 3:], base[:, 3:])  # later ones do (incl. the gripper)
    # masked position: its log-prob is 0 and its token value changes nothing else
    masked = mask.clone()
    masked[:, 2] = False
    a = policy.token_logps(inputs, tokens, masked)
    b = policy.token_logps(inputs, changed, masked)
    assert (a[:, 2] == 0).all() and torch.equal(a, b)
    assert torch.equal(a[:, :2], base[:, :2])


def test_gripper_positions_and_token_roundtrip():
    policy = make(chunk_size=2)
    inputs, tokens, mask, actions = batch(policy)
    assert tokens.shape == (6, 14) and tokens.min() >= 0 and tokens.max() <= 255
    grip = policy.gripper_positions(tokens, mask)
    assert grip[0].nonzero().flatten().tolist() == [6, 13]
    decoded, ok = policy.decode_tokens(tokens, mask)
    assert ok.all() and decoded.shape == actions.shape
    # one bin is 2/255 of the normalized range [-1, 1] = 0.1 raw -> error <= half a bin
    assert np.abs(decoded[..., :6] - actions[..., :6]).max() <= 0.1 / 255 + 1e-9
    bad_mask = mask.clone()
    bad_mask[1, 3] = False
    _, ok = policy.decode_tokens(tokens, bad_mask)
    assert ok.tolist() == [True, False, True, True, True, True]


def test_predict_is_greedy_over_teacher_forced_distribution():
    policy = make()
    inputs, _, _, _ = batch(policy)
    tokens, mask = policy.predict_tokens(inputs)
    logits = policy.token_logits(inputs, tokens, mask)
    assert torch.equal(logits.argmax(-1), tokens)


def test_unknown_instruction_and_bad_shapes_are_named():
    policy = make()
    images, proprio, actions = random_batch(2)
    with pytest.raises(ValueError, match="unknown instruction 'fly away'"):
        policy.prepare(images, proprio, ["open it", "fly away"])
    with pytest.raises(ValueError, match="cameras"):
        policy.prepare(images[:, :1], proprio, INSTRUCTIONS)
    with pytest.raises(ValueError, match="NaN"):
        policy.encode_actions(np.full((2, 7), np.nan))
    with pytest.raises(ValueError, match="instruction list"):
        build_policy("small", default_statistics(), instructions=[])


def test_select_action_from_observation_resizes_images():
    policy = make()
    blank = np.zeros((48, 48, 3), np.uint8)
    obs = Observation(images={"front": blank, "wrist": blank},
                      joint_positions=np.zeros(7), ee_pose=np.array([0.4, 0, 0.3, 0, 0, 0, 1.0]),
                      gripper=1.0, instruction="Close it.")
    action, ok = policy.select_action(obs)
    assert ok and action.shape == (1, 7) and np.isfinite(action).all()
    assert np.abs(action[0, :6]).max() <= 0.05 + 1e-9  # inside the statistics' range


def test_reference_is_frozen_copy():
    policy = make()
    inputs, tokens, mask, _ = batch(policy)
    ref = make_reference(policy)
    before = ref.token_logps(inputs, tokens, mask)
    torch.testing.assert_close(before, policy.token_logps(inputs, tokens, mask), rtol=0, atol=0)
    assert not before.requires_grad
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=0.1)
    loss = -policy.token_logps(inputs, tokens, mask).sum()
    loss.backward()
    opt.step()
    assert torch.equal(ref.token_logps(inputs, tokens, mask), before)
    assert not torch.allclose(policy.token_logps(inputs, tokens, mask), before)


def test_learns_a_localization_task_in_bounded_steps():
    policy = make()
    images, proprio, instructions, actions = square_task(64, seed=0, instructions=tuple(INSTRUCTIONS))
    inputs = policy.prepare(images, proprio, instructions)
    tokens, mask = policy.encode_actions(actions)
    opt = torch.optim.Adam(policy.trainable_parameters(), lr=3e-3)
    for _ in range(150):
        loss = -policy.token_logps(inputs, tokens, mask).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    predicted, _ = policy.predict_tokens(inputs)
    accuracy = (predicted == tokens).float().mean().item()
    assert accuracy > 0.9, accuracy
    # held-out square positions: the policy localizes rather than memorizes (chance ~ 0.33)
    h_images, h_proprio, h_instr, h_actions = square_task(64, seed=1, instructions=tuple(INSTRUCTIONS))
    pred, ok = policy.predict(policy.prepare(h_images, h_proprio, h_instr))
    error = np.abs(pred[:, 0, :2] - h_actions[:, :2]).mean() / 0.08
    assert ok.all() and error < 0.2, error
    assert (np.round(pred[:, 0, 6]) == h_actions[:, 6]).all()


def test_rotation_features_are_sign_invariant_and_old_configs_load():
    # A top-down gripper sits near qw = 0, where the canonical quaternion flips between q and -q
    # from step to step: the policy must see the same state for both.
    policy = make()
    assert policy.config.rotation_features == "matrix"
    images, proprio, _ = random_batch(4, seed=0, chunk=1)
    q = np.array([0.47, -0.88, 0.01, 0.004])
    proprio[:, 3:7] = q / np.linalg.norm(q)
    flipped = proprio.copy()
    flipped[:, 3:7] *= -1
    instr = [INSTRUCTIONS[0]] * 4
    a = policy.trunk(policy.prepare(images, proprio, instr))
    b = policy.trunk(policy.prepare(images, flipped, instr))
    torch.testing.assert_close(a, b)
    features = policy.proprio_features(torch.from_numpy(proprio).float())
    rot = features[:, 3:12].reshape(-1, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(4, 3, 3), atol=1e-5, rtol=0)
    # a config saved before the option existed is the raw-quaternion network
    old = policy.config_dict()
    del old["rotation_features"]
    loaded = type(policy).from_config_dict(old, default_statistics(), device="cpu")
    assert loaded.config.rotation_features == "quaternion"
    assert loaded.state_proj.in_features == policy.state_proj.in_features - 5
    with pytest.raises(ValueError, match="rotation_features"):
        make(rotation_features="euler")


def test_separate_camera_encoder_trains_and_sees_both_cameras():
    policy = make(camera_fusion="separate", channels=(8, 16, 16), hidden=64)
    inputs, tokens, mask, _ = batch(policy)
    assert policy.image_proj.in_features == 2 * 3 * 16  # keypoints + means per camera
    before = policy.token_logps(inputs, tokens, mask)
    for channel in (0, 3):  # blank the front, then the wrist camera: both change the output
        other = dict(inputs)
        other["images"] = inputs["images"].clone()
        other["images"][:, channel:channel + 3] = 0
        assert not torch.allclose(policy.token_logps(other, tokens, mask), before)
    opt = torch.optim.Adam(policy.trainable_parameters(), lr=1e-2)
    for _ in range(5):
        loss = -policy.token_logps(inputs, tokens, mask).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert policy.token_logps(inputs, tokens, mask).sum() > before.sum()
    with pytest.raises(ValueError, match="camera_fusion"):
        make(camera_fusion="mixed")
