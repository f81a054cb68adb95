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

`inputs` dicts hold tensors whose first axis is the batch (so a trainer may cache them on the CPU,
index rows with `index_inputs` and move them with `inputs_to`). Images stay uint8 in them.

Device and dtype: `pick_device()` gives CUDA + bfloat16 when a GPU is present, CPU + float32
otherwise. Log-probabilities are always computed in float32.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch

from apo_ros.actions.space import ACTION_DIM
from apo_ros.actions.statistics import ActionStatistics
from apo_ros.observation import Observation


def pick_device(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) to run a model with: the given device (float32 on CPU, bfloat16 on CUDA),
    or CUDA + bfloat16 when available, else CPU + float32."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available on this machine")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return device, dtype


def index_inputs(inputs: dict, index) -> dict:
    """Rows `index` (slice, int tensor or bool mask) of every tensor in an inputs dict."""
    return {k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def inputs_to(inputs: dict, device: torch.device | str) -> dict:
    """Move every tensor of an inputs dict to `device` (dtypes unchanged)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in inputs.items()}


def concat_inputs(parts: Sequence[dict], pad_values: dict | None = None) -> dict:
    """Concatenate inputs dicts along the batch. Sequence tensors of different lengths (the
    VLA prompts) are LEFT-padded with `pad_values[key]` (0 by default)."""
    pad_values = pad_values or {}
    out: dict = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if not isinstance(values[0], torch.Tensor):
            out[key] = values[0]
            continue
        if values[0].dim() >= 2 and key in ("input_ids", "attention_mask", "token_type_ids"):
            width = max(v.shape[1] for v in values)
            values = [torch.nn.functional.pad(v, (width - v.shape[1], 0), value=pad_values.get(key, 0))
                      for v in values]
        out[key] = torch.cat(values)
    return out


ACTION_TOKENIZER_FILENAME = "action_tokenizer.json"


def write_action_tokenizer(directory: str, description: dict) -> None:
    """Record which action tokenizer a checkpoint uses (for readers and `policy info`)."""
    import json
    import os

    with open(os.path.join(directory, ACTION_TOKENIZER_FILENAME), "w") as f:
        json.dump(description, f, indent=2)


class TokenPolicy(torch.nn.Module, abc.ABC):
    kind: str = "abstract"  # written into the checkpoint config; `load_policy` dispatches on it
    chunk_size: int = 1  # T: actions produced per prediction
    cameras: tuple[str, ...] = ("front", "wrist")  # cameras it reads, in order
    has_stop_token: bool = False  # True when the target sequence ends in a stop token (VLAs)
    uses_object_state: bool = False  # True when `prepare` reads Observation.object_poses (state policies)
    # Tokens per chunk step when target position p holds step p // tokens_per_step (bin
    # tokenizers: 7); None when a token mixes steps (FAST). The trainer masks the tokens of chunk
    # steps that lie outside a sample's own segment only when this is set.
    tokens_per_step: int | None = None
    # the `PolicySource` attributes (apo_ros.control.policy_source): a checkpoint loaded here
    # keeps its ids, and a failed decode needs no reason beyond "decode_failed"
    reports_policy_id: bool = False
    failure_reason: str = ""

    def __init__(self, stats: ActionStatistics):
        super().__init__()
        if stats.dim != ACTION_DIM:
            raise ValueError(f"statistics have {stats.dim} dims, a {self.kind} policy needs {ACTION_DIM}")
        self.stats = stats
        self.policy_id: str | None = None  # content hash, set by save_policy / load_policy
        self.checkpoint_dir: str | None = None  # where it was loaded from / saved to
        self.training_info: dict = {}  # the "training" entry of the checkpoint it was loaded from

    # ---- inputs ------------------------------------------------------------------------------
    @abc.abstractmethod
    def prepare(self, images: np.ndarray | None, proprio: np.ndarray, instructions: Sequence[str],
                object_state: np.ndarray | None = None) -> dict:
        """images uint8 [B, K, H, W, 3] (None when the policy reads no camera), proprio float
        [B, P], B instructions, object_state float [B, 7 N] (`Observation.object_state()`; read
        only by policies with `uses_object_state`) -> model inputs."""

    def prepare_observations(self, observations: Sequence[Observation]) -> dict:
        images = None
        if self.cameras:
            images = np.stack([np.stack([o.images[c] for c in self.cameras]) for o in observations])
        proprio = np.stack([o.proprio() for o in observations])
        object_state = None
        if self.uses_object_state:
            sizes = {o.object_state().shape[0] for o in observations}
            if len(sizes) != 1:
                raise ValueError(f"observations carry different numbers of object poses {sorted(sizes)}")
            object_state = np.stack([o.object_state() for o in observations])
        return self.prepare(images, proprio, [o.instruction for o in observations], object_state=object_state)

    @property
    def input_pad_values(self) -> dict:
        """Pad value per inputs key for `collate_inputs` (VLAs: the tokenizer's pad id)."""
        return {}

    def collate_inputs(self, parts: Sequence[dict]) -> dict:
        """Concatenate prepared inputs along the batch (left-padding prompts where needed)."""
        return concat_inputs(parts, self.input_pad_values)

    # ---- tokens ------------------------------------------------------------------------------
    def as_action_chunks(self, actions) -> np.ndarray:
        """Raw actions [B, T, 7] (or [B, 7] when T == 1) as float64 [B, T, 7]; NaN/Inf refused."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim == 2 and self.chunk_size == 1:
            a = a[:, None, :]
        if a.ndim != 3 or a.shape[1:] != (self.chunk_size, ACTION_DIM):
            raise ValueError(f"actions must be [B, {self.chunk_size}, {ACTION_DIM}]"
                             f"{' or [B, 7]' if self.chunk_size == 1 else ''}, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or Inf; refusing to tokenize")
        return a

    @abc.abstractmethod
    def encode_actions(self, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """raw actions [B, T, 7] (or [B, 7] when T == 1) -> (tokens long [B, L], mask bool [B, L])."""

    @abc.abstractmethod
    def token_logps(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log pi(token_l | obs, tokens_<l) -> float [B, L], 0 where ~mask."""

    @abc.abstractmethod
    def token_logits(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L, V] (their log-softmax at `tokens` is `token_logps`): the
        trainer reads the argmax and softened-target losses off them."""

    @property
    @abc.abstractmethod
    def valid_target_ids(self) -> torch.Tensor:
        """bool [V]: the ids a target token may hold (action ids, + stop where the policy has one);
        an argmax over `token_logits` is restricted to them, as the policy's own decoding is."""

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

    # ---- scoring several token sequences on one observation encoding --------------------------
    def encode_observation(self, inputs: dict):
        """The part of a forward pass that depends on the observation only. The objectives score a
        sample's own actions and its mismatched partner's (KTO/APO's z0) on the same observation:
        with `token_logps_encoded` the second scoring reuses this instead of re-encoding images.
        Default: no sharing (the encoding is the inputs themselves)."""
        return inputs

    def token_logps_encoded(self, encoding, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`token_logps` from `encode_observation(inputs)` -> float [B, L], 0 where ~mask."""
        return self.token_logps(encoding, tokens, mask)

    def token_logits_encoded(self, encoding, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L, V] from `encode_observation(inputs)`."""
        return self.token_logits(encoding, tokens, mask)

    # ---- convenience -------------------------------------------------------------------------
    @torch.no_grad()
    def predict_with_tokens(self, inputs: dict) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
        """Greedy decoding -> (raw action chunks [B, T, 7], ok [B], tokens [B, L], mask [B, L]):
        the actions and the token ids they came from, from one decoding."""
        tokens, mask = self.predict_tokens(inputs)
        actions, ok = self.decode_tokens(tokens, mask)
        return actions, ok, tokens, mask

    @torch.no_grad()
    def predict(self, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        """Greedy raw action chunks [B, T, 7] and ok flags [B]."""
        tokens, mask = self.predict_tokens(inputs)
        return self.decode_tokens(tokens, mask)

    def action_token_space(self) -> str | None:
        """What the ids of one chunk step mean (tokenizer and action statistics), recorded beside
        them so a trainer uses them only for a policy that reads them the same way. None when the
        tokens cannot be split per chunk step (`tokens_per_step` None: FAST) or the policy does
        not name its tokenizer: then nothing is recorded."""
        return None

    def step_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> np.ndarray | None:
        """Predicted tokens [B, L] -> int64 [B, T, tokens_per_step]: the ids of each chunk step,
        as bags record them (None when the policy has no per-step tokens or a row is cut short)."""
        per_step = self.tokens_per_step
        if per_step is None or self.action_token_space() is None:
            return None
        width = self.chunk_size * per_step
        if tokens.shape[1] < width or not bool(mask[:, :width].all()):
            return None
        ids = tokens[:, :width].detach().cpu().numpy().astype(np.int64)
        return ids.reshape(ids.shape[0], self.chunk_size, per_step)

    @torch.no_grad()
    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]:
        """One observation -> (raw chunk [T, 7], ok)."""
        actions, ok, _ = self.select_action_with_tokens(observation)
        return actions, ok

    @torch.no_grad()
    def select_action_with_tokens(self, observation: Observation
                                  ) -> tuple[np.ndarray, bool, np.ndarray | None]:
        """One observation -> (raw chunk [T, 7], ok, token ids [T, tokens_per_step] or None): the
        ids the policy produced for each action of the chunk (see `step_tokens`)."""
        was_training = self.training
        self.eval()
        try:
            actions, ok, tokens, mask = self.predict_with_tokens(self.prepare_observations([observation]))
        finally:
            self.train(was_training)
        ids = self.step_tokens(tokens, mask) if ok[0] else None
        return actions[0], bool(ok[0]), (None if ids is None else ids[0])

    def reset(self) -> None:
        """Clear any per-episode state (none by default)."""

    @property
    def statistics_id(self) -> str:
        return self.stats.statistics_id()

    @property
    def instructions(self) -> list[str]:
        """The fixed instruction list of a policy built with one (bin-head policies); [] for a
        policy that reads any text (VLAs)."""
        return []

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters an optimizer should update (the LoRA adapter only for LoRA models)."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def uses_lora(self) -> bool:
        """True when the trainable weights are a peft LoRA adapter over frozen base weights."""
        return False

    def max_target_tokens(self) -> int:
        """Upper bound on L (target token positions) for this policy."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Human-readable facts for `apo-ros policy info`."""
        n_params = sum(p.numel() for p in self.parameters())
        n_train = sum(p.numel() for p in self.trainable_parameters())
        return {"kind": self.kind, "policy_id": self.policy_id, "chunk_size": self.chunk_size,
                "cameras": list(self.cameras), "parameters": n_params, "trainable_parameters": n_train,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "statistics_id": self.stats.statistics_id()}

    def config_dict(self) -> dict:
        """Everything `load_policy` needs to rebuild the architecture (saved in config JSON)."""
        raise NotImplementedError

    # ---- checkpoint hooks (used by apo_ros.policies.checkpoint) ------------------------------
    def save_parts(self, directory: str, *, merge_lora: bool = True) -> dict:
        """Write weights and tokenizer files into `directory`; return the config to record."""
        raise NotImplementedError

    @classmethod
    def load_parts(cls, directory: str, config: dict, stats: ActionStatistics, *,
                   device: str | None = None, trust_remote_code: bool = False,
                   lora: bool | None = None) -> TokenPolicy:
        """Rebuild from a checkpoint directory written by `save_parts`."""
        raise NotImplementedError
