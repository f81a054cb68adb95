"""The frozen reference policy pi_ref the preference objectives compare against.

- Full-weight policies: a deep copy, frozen (no grad) and in eval mode, made at call time.
- peft LoRA policies: the SAME model with its adapter disabled (`with model.disable_adapter():`),
  so no second copy of the (large) base weights is held in memory. This is exact when the
  adapter was freshly initialized on top of the reference weights (a LoRA B matrix starts at zero),
  which is how apo_ros continues training from a merged checkpoint.
"""

from __future__ import annotations

import copy

import torch

from apo_ros.policies.base import TokenPolicy


class ReferencePolicy:
    """`token_logps(inputs, tokens, mask)` of the frozen reference, always under no_grad."""

    def __init__(self, policy: TokenPolicy):
        self.shares_weights = bool(policy.uses_lora)
        if self.shares_weights:
            self.policy = policy
        else:
            self.policy = copy.deepcopy(policy)
            self.policy.eval()
            self.policy.requires_grad_(False)

    @torch.no_grad()
    def token_logps(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._frozen("token_logps", inputs, tokens, mask)

    @torch.no_grad()
    def token_logits(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L, V] (for z0's neighbour-label pairs, read off one pass)."""
        return self._frozen("token_logits", inputs, tokens, mask)

    def _frozen(self, name: str, *args):
        if not self.shares_weights:
            return getattr(self.policy, name)(*args)
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.adapter_disabled():
                return getattr(self.policy, name)(*args)
        finally:
            self.policy.train(was_training)

    @property
    def valid_target_ids(self) -> torch.Tensor:
        return self.policy.valid_target_ids

    def decode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor):
        return self.policy.decode_tokens(tokens, mask)


def make_reference(policy: TokenPolicy) -> ReferencePolicy:
    """A frozen reference for `policy` as it is now (see the module docstring)."""
    return ReferencePolicy(policy)
