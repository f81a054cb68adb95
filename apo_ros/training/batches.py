"""What one training step reads: policy inputs, target tokens, reference log-probs, decoded errors.

`Batches` turns sample rows into tensors for the policy it was built with: images gathered from
the memory-mapped cache and augmented (image policies only), proprio and object poses, the target
tokens of every sample (tokenized once), and - for the preference objectives - the frozen
reference's scores (`apo_ros.training.reference`). The method registry's loss functions take a
`Batches` and the rows of their step; nothing here knows which method runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from apo_ros.training import objectives as O
from apo_ros.training.augmentation import AugmentConfig, augment_images
from apo_ros.training.distributed import Distributed
from apo_ros.training.method_configs import MethodConfig
from apo_ros.training.samples import SampleSet, encode_targets


@dataclass
class StepOutput:
    """A step's differentiable loss, its metrics (floats) and how many samples it used."""

    loss: torch.Tensor
    metrics: dict
    samples: int


class Batches:
    """A run's rows as tensors. It holds only what a step reads (the method's own settings, the
    seed, augmentation, bf16), not the whole TrainConfig: the config names the methods, whose
    losses read a Batches."""

    def __init__(self, samples: SampleSet, policy, dist: Distributed, method_config: MethodConfig, *,
                 seed: int, augment: AugmentConfig, bf16: bool):
        self.samples, self.policy, self.dist = samples, policy, dist
        self.method_config = method_config  # the running method's own settings (a loss reads them)
        self.seed = seed
        self.device = policy.device
        self.chunk = int(policy.chunk_size)
        self.aug = augment
        self.use_autocast = bf16 and self.device.type == "cuda"
        self.tokens, self.token_mask = encode_targets(policy, samples)  # once: they never change
        self.reference = None  # ReferenceScores, set by the trainer for methods that need one
        self.memo: dict = {}  # per-run values a loss function computes once (e.g. Sirius weights)

    def inputs(self, idx: np.ndarray, augment_step: int | None) -> dict:
        """Policy inputs of rows `idx`; images augmented with draws that are a function of
        (seed, rank, augment_step) when augment_step is given."""
        images = None
        if self.policy.cameras:  # a state policy reads no image: none is gathered or augmented
            images = self.samples.images(idx, self.policy.cameras)
            if augment_step is not None and self.aug.enabled:
                rng = np.random.default_rng([self.seed, 7, self.dist.rank, augment_step])
                images = augment_images(images, rng, self.aug)
        object_state = self.samples.object_state[idx] if self.policy.uses_object_state else None
        return self.policy.prepare(images, self.samples.proprio[idx], self.samples.instruction_texts(idx),
                                   object_state=object_state)

    def targets(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens long [B, L], mask bool [B, L]) on the policy's device, L trimmed to the
        longest real target of these rows."""
        tok, mask = self.tokens[idx], self.token_mask[idx]
        width = int(mask.any(0).nonzero().max()) + 1 if mask.any() else mask.shape[1]
        return tok[:, :width].to(self.device), mask[:, :width].to(self.device)

    def autocast(self):
        if self.use_autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def action_errors(self, idx, pred, pred_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """APO's l_i (normalized decoded-action error against the target) and decode-ok flags."""
        decoded, ok = self.policy.decode_tokens(pred, pred_mask)
        stats = self.policy.stats
        target = self.samples.action_targets(idx, self.chunk).reshape(len(idx), self.chunk, -1)
        errors = O.decoded_action_errors(stats.normalize(decoded.reshape(target.shape)),
                                         stats.normalize(target))
        errors = np.where(ok, errors, 0.0)
        return (torch.as_tensor(errors, dtype=torch.float32, device=self.device),
                torch.as_tensor(ok, dtype=torch.bool, device=self.device))

    def desirable(self, idx) -> torch.Tensor:
        return torch.from_numpy(self.samples.desirable[idx]).to(self.device)


def logps_and_argmax(policy, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor, want_argmax: bool,
                     encoding=None):
    """Teacher-forced per-token log-probs [B, L] and, when asked, the argmax token at each
    position from the SAME pass (as the released code; no extra autoregressive decode), or from
    greedy decoding when the logits do not cover the target ids. `encoding`: the policy's
    `encode_observation(inputs)`, when the caller scores other tokens on it too."""
    if encoding is None:
        encoding = inputs
        logits_fn, logps_fn = policy.token_logits, policy.token_logps
    else:
        logits_fn, logps_fn = policy.token_logits_encoded, policy.token_logps_encoded
    if want_argmax:
        logits = logits_fn(encoding, tokens, mask).float()
        if logits.shape[-1] > int(tokens.max()):
            picked, argmax = scores_from_logits(policy, logits, tokens, mask)
            return picked, argmax, mask
    logps = logps_fn(encoding, tokens, mask)
    if not want_argmax:
        return logps, None, None
    with torch.no_grad():
        pred, pred_mask = policy.predict_tokens(inputs)
    return logps, pred, pred_mask


def scores_from_logits(policy, logits: torch.Tensor, tokens: torch.Tensor,
                       mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From teacher-forced logits [B, L, V]: (log-probs of `tokens` [B, L], 0 where ~mask, with
    gradient; the argmax token at each position [B, L], restricted to the policy's
    `valid_target_ids` (a VLA's action ids + stop), as its constrained greedy decoding)."""
    logp = torch.log_softmax(logits.float(), -1)
    picked = logp.gather(-1, tokens.clamp(min=0)[..., None]).squeeze(-1)
    picked = torch.where(mask, picked, torch.zeros_like(picked))
    valid = policy.valid_target_ids
    width = min(logits.shape[-1], valid.shape[0])
    scores = logits.detach()[..., :width].masked_fill(~valid[:width].to(logits.device), float("-inf"))
    return picked, scores.argmax(-1)
