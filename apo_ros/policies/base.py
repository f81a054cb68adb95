"""The token-policy interface every objective is written against.

A policy maps an observation to a sequence of action tokens. The objectives (bc, dagger, sirius,
kto, tpo, apo) only ever need:

- `prepare(images, proprio, instructions)`: model inputs for a batch (tensors on the device);
- `encode_actions(actions)`: raw actions -> target tokens + loss mask;
- `token_logps(inputs, tokens, mask)`: teacher-forced per-token log-probs [B, L] (0 where masked);
- `gripper_positions(tokens, mask)`: which of those positions hold the gripper token;
- `predict_tokens(inputs)` and `decode_tokens(tokens, mask)`: greedy prediction and decoding with
  an explicit failure flag.

Shapes: B = batch, K = cameras, H x W images, P = proprio dims, T = chunk length (1 for
single-step policies), L = number of target token positions (padded; `mask` marks real ones).
All actions crossing this interface are RAW (physical units, as executed); each policy
normalizes with its own `stats` and tokenizes with its own tokenizer.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch

from apo_ros.actions.statistics import ActionStatistics
from apo_ros.observation import Observation


class TokenPolicy(torch.nn.Module, abc.ABC):
    kind: str = "abstract"  # written into the checkpoint config; `load_policy` dispatches on it
    chunk_size: int = 1  # T: actions produced per prediction
    cameras: tuple[str, ...] = ("front", "wrist")  # cameras it reads, in order

    def __init__(self, stats: ActionStatistics):
        super().__init__()
        self.stats = stats

    # ---- inputs ------------------------------------------------------------------------------
    @abc.abstractmethod
    def prepare(self, images: np.ndarray, proprio: np.ndarray, instructions: Sequence[str]) -> dict:
        """images uint8 [B, K, H, W, 3], proprio float [B, P], B instructions -> model inputs."""

    def prepare_observations(self, observations: Sequence[Observation]) -> dict:
        images = np.stack([np.stack([o.images[c] for c in self.cameras]) for o in observations])
        proprio = np.stack([o.proprio() for o in observations])
        return self.prepare(images, proprio, [o.instruction for o in observations])

    # ---- tokens ------------------------------------------------------------------------------
    @abc.abstractmethod
    def encode_actions(self, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """raw actions [B, T, 7] (or [B, 7] when T == 1) -> (tokens long [B, L], mask bool [B, L])."""

    @abc.abstractmethod
    def token_logps(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log pi(token_l | obs, tokens_<l) -> float [B, L], 0 where ~mask."""

    @abc.abstractmethod
    def gripper_positions(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """bool [B, L]: positions holding a gripper token (APO leaves these out of the reward of
        undesirable samples). All False where the tokenizer mixes dimensions (FAST)."""

    @abc.abstractmethod
    def predict_tokens(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding -> (tokens long [B, L], mask bool [B, L])."""

    @abc.abstractmethod
    def decode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """tokens -> (raw actions float [B, T, 7], ok bool [B]); ok False where decoding failed
        (then that row's actions are zeros and must not be executed)."""

    # ---- convenience -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        """Greedy raw action chunks [B, T, 7] and ok flags [B]."""
        tokens, mask = self.predict_tokens(inputs)
        return self.decode_tokens(tokens, mask)

    @torch.no_grad()
    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]:
        """One observation -> (raw chunk [T, 7], ok)."""
        was_training = self.training
        self.eval()
        try:
            actions, ok = self.predict(self.prepare_observations([observation]))
        finally:
            self.train(was_training)
        return actions[0], bool(ok[0])

    def reset(self) -> None:
        """Clear any per-episode state (none by default)."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def config_dict(self) -> dict:
        """Everything `load_policy` needs to rebuild the architecture (saved in config JSON)."""
        raise NotImplementedError
