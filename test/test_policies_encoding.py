"""Scoring several token sequences on one observation encoding (what KTO/APO's z0 needs) gives
exactly what separate passes give, for every policy kind."""

import numpy as np
import pytest
import torch

from apo_ros.policies import build_policy
from apo_ros.policies.testing import default_statistics, random_batch

INSTRUCTIONS = ["put the lemon on the plate"]


@pytest.mark.parametrize("kind", ["small", "vla_bins"])
def test_encoded_scoring_matches_separate_passes(kind):
    torch.manual_seed(0)
    policy = build_policy(kind, default_statistics(), instructions=INSTRUCTIONS, device="cpu")
    images, proprio, actions = random_batch(4, cameras=len(policy.cameras), seed=1)
    inputs = policy.prepare(images, proprio, INSTRUCTIONS * 4)
    tok, mask = policy.encode_actions(actions)
    partner_tok, partner_mask = torch.roll(tok, -1, 0), torch.roll(mask, -1, 0)
    encoding = policy.encode_observation(inputs)
    own = policy.token_logps_encoded(encoding, tok, mask)
    partner = policy.token_logps_encoded(encoding, partner_tok, partner_mask)
    assert torch.allclose(own, policy.token_logps(inputs, tok, mask), atol=1e-6)
    assert torch.allclose(partner, policy.token_logps(inputs, partner_tok, partner_mask), atol=1e-6)
    assert not torch.allclose(own, partner)  # a different action really scores differently
    # gradients flow through the shared encoding
    own.sum().backward()
    grads = [p.grad for p in policy.trainable_parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert np.isfinite(own.detach().numpy()).all()
