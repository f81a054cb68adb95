"""The state policy (kind "state"): object poses instead of images, the small policy's token head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apo_ros.observation import Observation
from apo_ros.policies import build_policy, load_policy, make_reference, save_policy
from apo_ros.policies.testing import default_statistics

INSTRUCTIONS = ["put the lemon on the plate", "hang the cup"]

pytestmark = pytest.mark.usefixtures("one_thread")


def make(**config):
    return build_policy("state", default_statistics(), instructions=INSTRUCTIONS, device="cpu", **config)


def observation(rng, n_objects=2, instruction=INSTRUCTIONS[0]):
    q = rng.normal(size=(n_objects, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    poses = np.concatenate([rng.uniform(-0.2, 0.2, size=(n_objects, 3)), q], 1).astype(np.float32)
    ee_q = rng.normal(size=4)
    return Observation(images={}, joint_positions=np.zeros(9), ee_pose=np.concatenate(
        [rng.uniform(-0.2, 0.2, 3), ee_q / np.linalg.norm(ee_q)]), gripper=float(rng.uniform()),
        instruction=instruction, object_poses=poses)


def test_select_action_reads_object_poses_and_no_camera():
    policy = make(chunk_size=2)
    assert policy.cameras == () and policy.uses_object_state
    rng = np.random.default_rng(0)
    obs = observation(rng)
    chunk, ok = policy.select_action(obs)
    assert ok and chunk.shape == (2, 7) and np.isfinite(chunk).all()
    # the object poses are an input: moving the object changes the logits
    inputs = policy.prepare_observations([obs])
    moved = Observation(**{**obs.__dict__, "object_poses": obs.object_poses + np.float32(0.05)})
    tokens, mask = policy.encode_actions(chunk[None])
    a = policy.token_logps(inputs, tokens, mask)
    b = policy.token_logps(policy.prepare_observations([moved]), tokens, mask)
    assert not torch.allclose(a, b)


def test_missing_or_wrong_object_poses_are_clear_errors():
    policy = make()
    rng = np.random.default_rng(1)
    obs = observation(rng)
    no_poses = Observation(**{**obs.__dict__, "object_poses": np.zeros((0, 7), np.float32)})
    with pytest.raises(ValueError, match="object poses"):
        policy.select_action(no_poses)
    with pytest.raises(ValueError, match="object poses"):
        policy.prepare(None, np.zeros((1, 8)), INSTRUCTIONS[:1])
    three = observation(rng, n_objects=3)
    with pytest.raises(ValueError, match="2 object poses"):
        policy.prepare_observations([three])
    with pytest.raises(ValueError, match="unknown instruction"):
        policy.prepare_observations([observation(rng, instruction="juggle")])


def test_checkpoint_roundtrip_is_exact_and_reference_agrees(tmp_path):
    stats = default_statistics()
    stats.extra["proprio"] = {"mean": [0.1] * 8, "std": [0.5] * 8}
    stats.extra["object_state"] = {"mean": [0.2] * 21, "std": [0.3] * 21}  # three objects
    policy = build_policy("state", stats, instructions=INSTRUCTIONS, device="cpu", hidden=32, layers=2)
    assert policy.config.n_objects == 3 and policy.config.object_mean == [0.2] * 21
    path = str(tmp_path / "state")
    pid = save_policy(policy, path)
    loaded = load_policy(path, device="cpu")
    assert loaded.kind == "state" and loaded.policy_id == pid
    rng = np.random.default_rng(2)
    obs = [observation(rng, n_objects=3) for _ in range(4)]
    inputs = policy.prepare_observations(obs)
    tokens, mask = policy.predict_tokens(inputs)
    a = policy.token_logps(inputs, tokens, mask)
    assert torch.equal(a, loaded.token_logps(loaded.prepare_observations(obs), tokens, mask))
    assert torch.equal(a, make_reference(policy).token_logps(inputs, tokens, mask))


def test_learns_to_point_at_the_object_and_generalizes():
    """dx, dy = direction from the gripper to the object: learned from 256 random layouts, and on
    64 held-out ones its bins are much closer to the targets than a constant guess."""
    torch.manual_seed(0)
    policy = make(hidden=64, layers=2, n_bins=32)  # 256 samples cannot fill 256 bins per dim
    rng = np.random.default_rng(3)

    def data(n):
        obs = [observation(rng) for _ in range(n)]
        actions = np.zeros((n, 7))
        for i, o in enumerate(obs):
            delta = o.object_poses[0, :2] - o.ee_pose[:2]
            actions[i, :2] = np.clip(delta * 0.1, -0.049, 0.049)
            actions[i, 6] = 1.0
        return policy.prepare_observations(obs), *policy.encode_actions(actions)

    train, held_out = data(256), data(64)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(300):
        loss = -policy.token_logps(*train).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    inputs, tokens, mask = held_out
    predicted, _ = policy.predict_tokens(inputs)
    error = (predicted[:, :2] - tokens[:, :2]).abs().float().mean()
    constant = (tokens[:, :2] - tokens[:, :2].float().median(0).values).abs().float().mean()
    assert error < 0.45 * constant, (float(error), float(constant))  # in bins, held-out layouts
    assert (predicted[:, 6] == tokens[:, 6]).all()


@pytest.mark.parametrize("kind", ["state", "small"])
def test_mean_decoding_follows_the_mass_not_the_zero_spike(kind, tmp_path):
    """Each arm position: an exact-zero spike (30 %) and a broad mode around +0.5 (70 % over 61
    bins). argmax decodes the spike (the arm stops); mean decodes the expected value (~0.35).
    The gripper keeps its argmax. The option is saved with the checkpoint."""
    from apo_ros.policies.small import SmallPolicy

    options = {"hidden": 16} if kind == "state" else {"hidden": 16, "image_size": 16, "channels": [4, 4]}
    policies = {mode: build_policy(kind, default_statistics(), instructions=INSTRUCTIONS, device="cpu",
                                   decode=mode, **options) for mode in ("argmax", "mean")}
    table = policies["mean"]._token_values()
    zero = int(torch.argmin(table.abs()))
    mode_bins = (table - 0.5).abs() <= 0.12
    probs = torch.zeros(256)
    probs[mode_bins] = 0.7 / int(mode_bins.sum())
    probs[zero] = 0.3
    expected = float(probs @ table)
    rng = np.random.default_rng(5)
    obs = observation(rng)
    if kind == "small":
        obs.images = {c: rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for c in ("front", "wrist")}
    for mode, policy in policies.items():
        with torch.no_grad():
            policy.head_weight.zero_()
            policy.head_bias.copy_(torch.log(probs.clamp_min(1e-9))[None].repeat(7, 1))
            policy.head_bias[6] = -20.0
            policy.head_bias[6, 3] = 0.0  # the gripper: one clear bin
        chunk, ok = policy.select_action(obs)
        normalized = policy.stats.normalize(chunk)[0]
        if mode == "argmax":
            assert np.allclose(normalized[:6], float(table[zero]))  # the spike: no motion
        else:
            assert np.allclose(normalized[:6], expected, atol=1e-5) and expected > 0.3
        assert normalized[6] == pytest.approx(float(table[3]))
    saved = str(tmp_path / "mean")
    save_policy(policies["mean"], saved)
    assert load_policy(saved).decode_mode == "mean"
    assert isinstance(policies["mean"], SmallPolicy) == (kind == "small")
