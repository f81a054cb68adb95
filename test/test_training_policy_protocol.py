"""The trainer reads policies through the `TokenPolicy` protocol, not by probing attributes: every
registered kind implements `token_logits` and `valid_target_ids`, and the argmax the objectives
read off the logits keeps to the valid ids for a policy and for its frozen reference alike."""

from __future__ import annotations

import inspect

import pytest
import torch

from apo_ros.policies import build_policy, make_reference
from apo_ros.policies.base import TokenPolicy
from apo_ros.policies.factory import POLICY_KINDS, policy_class
from apo_ros.policies.testing import default_statistics
from apo_ros.training.batches import scores_from_logits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kind", list(POLICY_KINDS))
def test_every_kind_implements_the_protocol_the_trainer_reads(kind):
    cls = policy_class(kind)
    assert issubclass(cls, TokenPolicy) and not inspect.isabstract(cls), cls.__abstractmethods__
    for name in ("token_logits", "valid_target_ids", "tokens_per_step", "action_token_space"):
        assert hasattr(cls, name)


@pytest.fixture(scope="module")
def tiny_bins():
    torch.manual_seed(0)
    return build_policy("vla_bins", default_statistics(), instructions=["go"], chunk_size=1, device="cpu")


@pytest.mark.parametrize("as_reference", [False, True])
def test_the_argmax_keeps_to_the_valid_target_ids(tiny_bins, as_reference):
    valid = tiny_bins.valid_target_ids
    scorer = make_reference(tiny_bins) if as_reference else tiny_bins
    text_id = int((~valid).nonzero()[0])  # an id no action token may hold
    logits = torch.randn(2, 8, valid.shape[0])
    logits[..., text_id] = 1e3  # the unrestricted argmax would pick it everywhere
    tokens = torch.zeros(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.bool)
    _, argmax = scores_from_logits(scorer, logits, tokens, mask)
    assert bool(valid[argmax].all())
    assert torch.equal(argmax, logits.masked_fill(~valid, float("-inf")).argmax(-1))
