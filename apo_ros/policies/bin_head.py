"""The autoregressive bin-token head shared by the bin policies (small: images; state: object
poses), and what they share with it: the instruction matching, the decode modes, the quaternion
features, the weights file. A bin policy is an encoder plus this head."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from apo_ros.actions.bins import BinTokenizer
from apo_ros.actions.space import ACTION_DIM, GRIPPER_INDEX
from apo_ros.actions.statistics import ActionStatistics
from apo_ros.policies.base import pick_device, write_action_tokenizer
from apo_ros.policies.errors import CheckpointError, require_file

WEIGHTS_FILENAME = "model.safetensors"


def normalize_instruction(instruction: str) -> str:
    """The form instructions are matched in: case, surrounding space and a final period ignored."""
    return " ".join(str(instruction).strip().lower().rstrip(".").split())


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """[B, 4] unit quaternions [qx, qy, qz, qw] -> [B, 3, 3] rotation matrices (same for q and -q)."""
    x, y, z, w = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))


class BinTokenHead:
    """The autoregressive bin-token head shared by the small (image) and state policies.

    T x 7 positions over `n_bins` bins each (BinTokenizer ids 0..n_bins-1). The head of position d
    sees the observation encoding plus the embeddings of the tokens before d:
    context_d = encoding + pos_d + sum_{j<d} emb_j[token_j] -> shared hidden layer -> one
    n_bins-way head per position. Teacher forcing is one pass (an exclusive cumulative sum);
    masked tokens are left out of every later context. A subclass sets up its encoder, calls
    `_build_head(chunk_size, n_bins, hidden, layout)` in `__init__` and implements `encode_observation`
    (inputs -> [B, hidden]).
    """

    stats: ActionStatistics
    chunk_size: int
    tokens_per_step = ACTION_DIM  # token position p holds chunk step p // 7 (TokenPolicy.tokens_per_step)

    def _build_head(self, chunk_size: int, n_bins: int, hidden: int, layout: str = "grid") -> None:
        n_pos = chunk_size * ACTION_DIM
        self.n_positions = n_pos
        self.n_bins = n_bins
        self.tokenizer = BinTokenizer(vocab_size=n_bins, n_bins=n_bins, layout=layout)
        self.token_embedding = nn.Embedding(n_pos * n_bins, hidden)  # one table per position
        self.position = nn.Parameter(torch.zeros(n_pos, hidden))
        self.head_hidden = nn.Linear(hidden, hidden)
        self.head_weight = nn.Parameter(torch.randn(n_pos, hidden, n_bins) * hidden ** -0.5)
        self.head_bias = nn.Parameter(torch.zeros(n_pos, n_bins))
        self.register_buffer("token_offset", torch.arange(n_pos) * n_bins, persistent=False)

    @property
    def valid_target_ids(self) -> torch.Tensor:
        """bool [n_bins]: every head output is a valid token (same contract as the VLAs')."""
        return torch.ones(self.n_bins, dtype=torch.bool, device=self.device)

    def max_target_tokens(self) -> int:
        return self.n_positions

    # ---- tokens ------------------------------------------------------------------------------
    def encode_actions(self, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = self.as_action_chunks(actions)
        ids = self.tokenizer.encode(self.stats.normalize(chunks)).reshape(chunks.shape[0], -1)
        tokens = torch.from_numpy(ids).to(self.device)
        return tokens, torch.ones_like(tokens, dtype=torch.bool)

    def gripper_positions(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device) % ACTION_DIM == GRIPPER_INDEX
        return pos[None].expand_as(tokens) & mask

    def decode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        ids = tokens.detach().cpu().numpy()
        m = mask.detach().cpu().numpy().astype(bool)
        b = ids.shape[0]
        ok = m.all(1) & (ids.shape[1] == self.n_positions) & self.tokenizer.is_action_id(ids).all(1)
        actions = np.zeros((b, self.chunk_size, ACTION_DIM))
        if ok.any():
            norm = self.tokenizer.decode(ids[ok]).reshape(-1, self.chunk_size, ACTION_DIM)
            actions[ok] = self.stats.unnormalize(norm)
        return actions, ok

    # ---- checkpoint files and instructions (the same for every bin-head policy) -----------------
    # the policy's config dataclass, and the statistics extras it standardizes its inputs with:
    # (key in ActionStatistics.extra, config field prefix: {prefix}_mean / {prefix}_std)
    config_class: type
    standardized: tuple[tuple[str, str], ...] = (("proprio", "proprio"),)

    @classmethod
    def build(cls, stats: ActionStatistics, *, instructions: list[str], device: str | None = None,
              **options):
        """A new policy: `options` are the config's fields; the input standardization comes from
        the statistics' extras unless given."""
        extra = stats.extra if isinstance(stats.extra, dict) else {}
        for key, prefix in cls.standardized:
            entry = extra.get(key)
            if isinstance(entry, dict) and "mean" in entry and "std" in entry:
                options.setdefault(f"{prefix}_mean", [float(v) for v in entry["mean"]])
                options.setdefault(f"{prefix}_std", [float(v) for v in entry["std"]])
        cls.complete_options(options)
        try:
            config = cls.config_class(instructions=list(instructions), **options)
        except TypeError as err:
            raise ValueError(f"bad {cls.kind} policy option: {err}") from None
        return cls(config, stats, device=device)

    @classmethod
    def complete_options(cls, options: dict) -> None:
        """Options a kind derives from the others before its config is built (none here)."""

    def save_parts(self, directory: str, *, merge_lora: bool = True) -> dict:
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(directory, WEIGHTS_FILENAME), metadata={"format": "pt"})
        write_action_tokenizer(directory, {"type": "bins", "n_bins": self.n_bins, "vocab_size": self.n_bins,
                                           "layout": self.tokenizer.layout,
                                           "id_range": list(self.tokenizer.id_range)})
        return self.config_dict()

    @classmethod
    def load_parts(cls, directory: str, config: dict, stats: ActionStatistics, *,
                   device: str | None = None, trust_remote_code: bool = False,
                   lora: bool | None = None):
        path = require_file(directory, WEIGHTS_FILENAME, f"{cls.kind} policy weights")
        try:
            policy = cls.from_config_dict(config, stats, device="cpu")
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{directory}: bad {cls.kind} policy config: {err}") from None
        try:
            state = load_file(path)
        except Exception as err:  # safetensors raises its own error types on a damaged file
            raise CheckpointError(f"{path}: cannot read weights ({err})") from None
        result = policy.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(f"{path}: weights do not match the config (missing "
                                  f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
        return policy.to(pick_device(device)[0])

    @property
    def instructions(self) -> list[str]:
        """The fixed instruction list it was built with (ids are positions in it)."""
        return list(self.config.instructions)

    def instruction_ids(self, instructions: Sequence[str]) -> torch.Tensor:
        ids = []
        for text in instructions:
            key = normalize_instruction(text)
            if key not in self._instruction_index:
                shown = text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"
                raise ValueError(f"unknown instruction {shown!r}: this {self.kind} policy knows "
                                 f"{self.config.instructions} (instructions are fixed when it is built)")
            ids.append(self._instruction_index[key])
        return torch.tensor(ids, dtype=torch.long)

    # ---- head ------------------------------------------------------------------------------
    def _logits(self, trunk: torch.Tensor, history: torch.Tensor, positions: slice) -> torch.Tensor:
        """trunk [B, H], history [B, P, H] (sum of embeddings of earlier tokens) -> logits [B, P, V]."""
        ctx = F.relu(trunk[:, None] + self.position[positions] + history)
        hidden = F.relu(self.head_hidden(ctx))
        return torch.einsum("bph,phv->bpv", hidden, self.head_weight[positions]) + self.head_bias[positions]

    def token_logits_encoded(self, encoding: torch.Tensor, tokens: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L, n_bins] from the trunk; masked tokens are left out of
        every history."""
        self._check_tokens(tokens, mask)
        safe = tokens.clamp(0, self.n_bins - 1)
        emb = self.token_embedding(safe + self.token_offset[: tokens.shape[1]])
        emb = emb * mask[..., None].to(emb.dtype)
        history = torch.cumsum(emb, 1) - emb  # exclusive prefix sum: tokens < d
        return self._logits(encoding, history, slice(0, tokens.shape[1]))

    def token_logps_encoded(self, encoding: torch.Tensor, tokens: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
        logits = self.token_logits_encoded(encoding, tokens, mask)
        logp = torch.log_softmax(logits.float(), -1)
        picked = logp.gather(-1, tokens.clamp(0, self.n_bins - 1)[..., None]).squeeze(-1)
        return torch.where(mask, picked, torch.zeros_like(picked))

    def token_logits(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L, n_bins]; masked tokens are left out of every history."""
        return self.token_logits_encoded(self.encode_observation(inputs), tokens, mask)

    def token_logps(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.token_logps_encoded(self.encode_observation(inputs), tokens, mask)

    def _check_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        if tokens.shape != mask.shape or tokens.dim() != 2:
            raise ValueError(f"tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)} must both be [B, L]")
        if tokens.shape[1] > self.n_positions:
            raise ValueError(f"{tokens.shape[1]} target tokens; this policy has {self.n_positions}")

    @property
    def decode_mode(self) -> str:
        return getattr(self.config, "decode", "argmax")

    def _token_values(self) -> torch.Tensor:
        """float [n_bins]: the normalized action value each token id decodes to (computed once
        per device)."""
        cached = getattr(self, "_token_value_table", None)
        if cached is None or cached.device != self.device:
            values = self.tokenizer.decode(np.arange(self.n_bins))
            cached = torch.as_tensor(values, dtype=torch.float32, device=self.device)
            self._token_value_table = cached
        return cached

    @torch.no_grad()
    def _greedy(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Autoregressive prediction -> (tokens long [B, L], normalized values float [B, L]).
        The tokens are the argmax at every position, fed back into the history: the policy's
        mode, which is what it outputs and what a trainer scores as its own action. The values:
        argmax decoding, the token's bin value; mean decoding (arm dimensions), the expected value
        under the softmax given that history (a continuous action that is usually not the value
        of the argmax token); the gripper keeps its argmax value (a 0/1 choice: its mean would be
        a half-open)."""
        trunk = self.encode_observation(inputs)
        b = trunk.shape[0]
        history = torch.zeros_like(trunk)
        tokens = torch.zeros(b, self.n_positions, dtype=torch.long, device=trunk.device)
        values = torch.zeros(b, self.n_positions, dtype=torch.float32, device=trunk.device)
        mean = self.decode_mode == "mean"
        table = self._token_values()
        for d in range(self.n_positions):
            logits = self._logits(trunk, history[:, None], slice(d, d + 1))[:, 0]
            token = logits.argmax(-1)
            if mean and d % ACTION_DIM != GRIPPER_INDEX:
                values[:, d] = torch.softmax(logits.float(), -1) @ table
            else:
                values[:, d] = table[token]
            tokens[:, d] = token
            history = history + self.token_embedding(token + d * self.n_bins)
        return tokens, values

    @torch.no_grad()
    def predict_tokens(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, _ = self._greedy(inputs)
        return tokens, torch.ones_like(tokens, dtype=torch.bool)

    @torch.no_grad()
    def predict_with_tokens(self, inputs: dict) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
        """(raw action chunks [B, T, 7], ok [B], tokens [B, L], mask [B, L]) from one decoding
        (see `decode` in the policy's config: with "mean" the arm values are continuous, not
        bin values; the tokens are the argmax tokens either way)."""
        tokens, values = self._greedy(inputs)
        b = values.shape[0]
        normalized = values.cpu().numpy().astype(np.float64).reshape(b, self.chunk_size, ACTION_DIM)
        return (self.stats.unnormalize(normalized), np.ones(b, dtype=bool), tokens,
                torch.ones_like(tokens, dtype=torch.bool))

    @torch.no_grad()
    def predict(self, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        """Raw action chunks [B, T, 7] and ok flags [B] (see `predict_with_tokens`)."""
        actions, ok, _, _ = self.predict_with_tokens(inputs)
        return actions, ok

    def action_token_space(self) -> str | None:
        """What a token id this policy outputs means: its tokenizer and its action statistics."""
        return f"{self.tokenizer.describe()}@stats={self.stats.statistics_id()}"
