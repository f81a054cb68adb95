"""Transformers VLA policies on any local `AutoModelForImageTextToText` checkpoint (PaliGemma first).

kind "vla_bins" (OpenVLA-style)
    prompt  "In: What action should the robot take to {instruction lowercased}?\\nOut:" after the
            camera images (the PaliGemma processor puts the image tokens and <bos> in front and a
            "\\n" after the prompt, its prefix separator);
    targets 7 x T action tokens = the last 256 ids of the base vocabulary (BinTokenizer with
            vocab_size = tokenizer.vocab_size, OpenVLA-exact), then the stop token (<eos>);
            L = 7T + 1, the gripper token at index 6 (+ 7k).
kind "vla_fast" (pi0-FAST-style)
    targets the FAST tokens of a T x 7 normalized chunk (FastTokenizer: DCT + BPE), then <eos>;
            variable length (mask marks the real positions). FAST token t is backbone id
            V - 1 - fast_skip_tokens - t (openpi's mapping; the FAST range REPLACES the bin range
            at the end of the vocabulary; openpi uses fast_skip_tokens=128 on PaliGemma to keep the
            <seg> tokens free). gripper_positions is all False: FAST tokens mix dimensions.

Both: the image + prompt prefix attends bidirectionally (PaliGemma prefix-LM via token_type_ids),
the targets causally; prompts in a batch are left-padded and position ids come from the attention
mask, so a row's log-probs do not depend on what else is in the batch. Only target positions
get logits (`logits_to_keep`), log-softmax in float32. Greedy prediction uses the KV cache and
is restricted to the valid ids (action bins; FAST range + stop), so bins never decode from a
text token. LoRA (peft; rank 32, alpha 16, dropout 0, all-linear by default) makes only the
adapter trainable; `make_reference` then disables the adapter instead of copying the model.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from apo_ros.actions.bins import BinTokenizer
from apo_ros.actions.fast import FastTokenizer
from apo_ros.actions.space import ACTION_DIM, GRIPPER_INDEX
from apo_ros.actions.statistics import ActionStatistics
from apo_ros.policies.base import TokenPolicy, pick_device, write_action_tokenizer
from apo_ros.policies.errors import CheckpointError, check_remote_code, require_file
from apo_ros.policies.tiny import build_tiny_paligemma, tiny_config_from_dict

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
BACKBONE_DIR = "backbone"
ADAPTER_DIR = "adapter"
FAST_DIR = "fast_tokenizer"


@dataclass
class VLAConfig:
    pretrained: str | None = None  # local transformers checkpoint dir; None = tiny PaliGemma
    tiny: dict = field(default_factory=dict)  # TinyVLAConfig overrides when pretrained is None
    instructions: list[str] = field(default_factory=list)  # informational: a VLA reads any text
    cameras: tuple[str, ...] = ("front",)  # images put in the prompt, in this order
    chunk_size: int = 1  # T actions per prediction
    prompt: str = OPENVLA_PROMPT  # {instruction} is replaced by the lowercased instruction
    lora: dict | None = field(default_factory=lambda: {"r": 32, "alpha": 16, "dropout": 0.0,
                                                       "target_modules": "all-linear"})  # None = full
    action_vocab_size: int | None = None  # V for bins: ids [V-256, V-1]; None = tokenizer.vocab_size
    n_bins: int = 256  # bins per action dimension (vla_bins)
    fast_vocab_size: int = 1024  # reserved FAST id range size (vla_fast)
    fast_scale: float = 10.0  # FAST DCT coefficient scale
    fast_skip_tokens: int = 0  # ids left free at the end of the vocabulary before the FAST range
    max_new_tokens: int | None = None  # FAST generation cap; None = 2 * T * 7 + 1
    dtype: str = "auto"  # "auto" (bf16 on CUDA, f32 on CPU), "float32", "bfloat16"
    gradient_checkpointing: bool = False  # trade compute for memory on big backbones
    trust_remote_code: bool = False  # recorded; loading still needs the explicit flag
    adapter: str | None = None  # (checkpoints) relative dir of a saved LoRA adapter
    source: str | None = None  # (checkpoints) where the backbone originally came from

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.instructions = [str(i) for i in self.instructions]
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not self.cameras:
            raise ValueError("a VLA policy needs at least one camera")
        if "{instruction}" not in self.prompt:
            raise ValueError(f"prompt must contain '{{instruction}}', got {self.prompt!r}")
        if self.lora is not None:
            unknown = sorted(set(self.lora) - {"r", "alpha", "dropout", "target_modules"})
            if unknown:
                raise ValueError(f"unknown LoRA options {unknown} (r, alpha, dropout, target_modules)")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return pick_device(device)[1]
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {name!r}") from None


def load_backbone(path: str, *, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False):
    """(model, processor) from a local transformers checkpoint directory; safetensors only."""
    _quiet_transformers()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such backbone checkpoint directory")
    check_remote_code(path, trust_remote_code)
    if not os.path.isfile(os.path.join(path, "model.safetensors.index.json")):
        require_file(path, "model.safetensors", "backbone weights")
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                  local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: cannot load the processor / tokenizer ({err})") from None
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code,
            local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: cannot load the model ({err})") from None
    return model.to(device), processor


class VLABinsPolicy(TokenPolicy):
    kind = "vla_bins"
    tokens_per_step = ACTION_DIM  # 7 bin tokens per chunk step, then the stop token
    has_stop_token = True

    def __init__(self, config: VLAConfig, stats: ActionStatistics, model, processor, device: torch.device):
        super().__init__(stats)
        self.config = config
        self.cameras = config.cameras
        self.chunk_size = config.chunk_size
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
        self.tokenizer.padding_side = "left"
        self.image_token = getattr(processor, "image_token", "<image>")
        self.model_vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.base_vocab_size = int(config.action_vocab_size or self.tokenizer.vocab_size)
        if self.base_vocab_size > self.model_vocab_size:
            raise ValueError(f"action vocabulary end {self.base_vocab_size} exceeds the model's "
                             f"{self.model_vocab_size} output ids")
        self.stop_id = int(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.stop_id)
        model_type = getattr(getattr(model, "config", None), "model_type", "")
        self._position_offset = 1 if model_type == "paligemma" else 0  # PaliGemma is 1-indexed
        self.device_ = torch.device(device)
        self._setup_tokens()

    # ---- construction ------------------------------------------------------------------------
    def _setup_tokens(self) -> None:
        self.bins = BinTokenizer(vocab_size=self.base_vocab_size, n_bins=self.config.n_bins)
        lo, hi = self.bins.id_range
        self._check_range(lo, hi, "action bin")
        allowed = torch.zeros(self.model_vocab_size, dtype=torch.bool, device=self.device_)
        allowed[lo:hi + 1] = True
        self.register_buffer("allowed_ids", allowed, persistent=False)

    def _check_range(self, lo: int, hi: int, what: str) -> None:
        special = {int(i) for i in (self.tokenizer.eos_token_id, self.tokenizer.bos_token_id,
                                     self.tokenizer.pad_token_id) if i is not None}
        image_id = getattr(getattr(self.model, "config", None), "image_token_id", None)
        if image_id is not None:
            special.add(int(image_id))
        clash = sorted(i for i in special if lo <= i <= hi)
        if lo < 0 or clash:
            raise ValueError(f"the {what} id range [{lo}, {hi}] is invalid or holds special tokens {clash}")

    @classmethod
    def build(cls, stats: ActionStatistics, *, instructions: list[str], device: str | None = None,
              **options) -> VLABinsPolicy:
        extra = cls._pop_build_options(options, stats)
        try:
            config = VLAConfig(instructions=list(instructions), **options)
        except TypeError as err:
            raise ValueError(f"bad VLA policy option: {err}") from None
        dev = pick_device(device)[0]
        dtype = _torch_dtype(config.dtype, dev)
        if config.pretrained:
            model, processor = load_backbone(config.pretrained, device=dev, dtype=dtype,
                                             trust_remote_code=config.trust_remote_code)
            config.source = os.path.abspath(config.pretrained)
        else:
            _quiet_transformers()
            model, processor = build_tiny_paligemma(tiny_config_from_dict(config.tiny))
            model = model.to(dev, dtype)
            config.source = "tiny"
        policy = cls(config, stats, model, processor, dev, **extra)
        if config.lora is not None:
            policy.add_lora()
        policy._finish_setup()
        return policy

    @classmethod
    def _pop_build_options(cls, options: dict, stats: ActionStatistics) -> dict:
        return {}

    def _finish_setup(self) -> None:
        if self.config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
            if self.uses_lora:
                self.model.enable_input_require_grads()
        self.train(False)

    def add_lora(self, settings: dict | None = None) -> None:
        """Wrap the backbone in a fresh peft LoRA adapter (B = 0: outputs unchanged); only the
        adapter is trainable afterwards."""
        from peft import LoraConfig, get_peft_model

        if self.uses_lora:
            raise ValueError("this policy already has a LoRA adapter")
        s = dict(self.config.lora or {})
        s.update(settings or {})
        self.config.lora = {"r": int(s.get("r", 32)), "alpha": float(s.get("alpha", 16)),
                            "dropout": float(s.get("dropout", 0.0)),
                            "target_modules": s.get("target_modules", "all-linear")}
        lora = LoraConfig(r=self.config.lora["r"], lora_alpha=self.config.lora["alpha"],
                          lora_dropout=self.config.lora["dropout"],
                          target_modules=self.config.lora["target_modules"], bias="none")
        with warnings.catch_warnings():  # peft calls a transformers property deprecated in 5.x
            warnings.simplefilter("ignore", FutureWarning)
            self.model = get_peft_model(self.model, lora)

    @property
    def valid_target_ids(self) -> torch.Tensor:
        """bool [vocab]: ids a target may hold (action ids + stop) — mask `token_logits` with it
        before an argmax so a text token is never picked."""
        valid = self.allowed_ids.clone()
        valid[self.stop_id] = True
        return valid

    @property
    def uses_lora(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def adapter_disabled(self):
        """Context manager: the base model (adapter off) — the LoRA reference policy."""
        if not self.uses_lora:
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    @property
    def device(self) -> torch.device:
        return self.device_

    def _apply(self, fn, *args, **kwargs):  # keep `device` right after .to() / .cuda()
        out = super()._apply(fn, *args, **kwargs)
        self.device_ = next(self.model.parameters()).device
        return out

    def base_model(self):
        """The transformers model under the peft wrapper (or the model itself)."""
        return self.model.get_base_model() if self.uses_lora else self.model

    # ---- config / info -----------------------------------------------------------------------
    def config_dict(self) -> dict:
        d = asdict(self.config)
        d["cameras"] = list(d["cameras"])
        return d

    def max_target_tokens(self) -> int:
        return self.chunk_size * ACTION_DIM + 1

    def action_token_space(self) -> str | None:
        """The generated bin ids (OpenVLA's rule over this vocabulary) under these statistics."""
        return f"{self.bins.describe()}@stats={self.stats.statistics_id()}"

    def describe(self) -> dict:
        d = super().describe()
        lo, hi = self.bins.id_range
        d.update({"backbone": type(self.base_model()).__name__, "source": self.config.source,
                  "vocab_size": self.base_vocab_size, "lora": self.config.lora if self.uses_lora else None,
                  "action_tokenizer": f"bins(n_bins={self.config.n_bins}, ids {lo}..{hi}) "
                                      f"+ stop {self.stop_id}",
                  "prompt": self.config.prompt})
        return d

    # ---- inputs ------------------------------------------------------------------------------
    @property
    def input_pad_values(self) -> dict:
        return {"input_ids": self.pad_id}

    def prompts(self, instructions: Sequence[str]) -> list[str]:
        head = self.image_token * len(self.cameras)
        return [head + self.config.prompt.format(instruction=str(text).lower()) for text in instructions]

    def prepare(self, images: np.ndarray, proprio: np.ndarray, instructions: Sequence[str],
                object_state: np.ndarray | None = None) -> dict:
        images = np.asarray(images)
        k = len(self.cameras)
        if images.ndim != 5 or images.shape[1] != k or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [B, {k} cameras {list(self.cameras)}, H, W, 3], "
                             f"got {images.dtype} {images.shape}")
        if len(instructions) != images.shape[0]:
            raise ValueError(f"{len(instructions)} instructions for a batch of {images.shape[0]}")
        pictures = [[images[b, c] for c in range(k)] for b in range(images.shape[0])]
        out = self.processor(text=self.prompts(instructions), images=pictures, return_tensors="np",
                             padding="longest")
        inputs = {key: torch.from_numpy(np.asarray(out[key])) for key in
                  ("input_ids", "attention_mask", "token_type_ids", "pixel_values") if key in out}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in inputs:
                inputs[key] = inputs[key].long()
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return {key: value.to(self.device) for key, value in inputs.items()}

    # ---- sequences ---------------------------------------------------------------------------
    def _positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        return (attention_mask.long().cumsum(-1) - 1).clamp_min(0) + self._position_offset

    def _sequence(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        targets = torch.where(mask, tokens, torch.full_like(tokens, self.pad_id))
        attention = torch.cat([inputs["attention_mask"], mask.to(inputs["attention_mask"].dtype)], 1)
        kwargs = {"input_ids": torch.cat([inputs["input_ids"], targets], 1), "attention_mask": attention,
                  "pixel_values": inputs["pixel_values"], "position_ids": self._positions(attention)}
        if "token_type_ids" in inputs:
            kwargs["token_type_ids"] = torch.cat([inputs["token_type_ids"], torch.ones_like(targets)], 1)
        return kwargs

    def token_logits(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L, vocab] at the target positions (model dtype)."""
        if tokens.shape != mask.shape or tokens.dim() != 2:
            raise ValueError(f"tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)} must both be [B, L]")
        length = tokens.shape[1]
        out = self.model(**self._sequence(inputs, tokens, mask), use_cache=False, logits_to_keep=length + 1)
        return out.logits[:, :length]

    def token_logps(self, inputs: dict, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.token_logits(inputs, tokens, mask).float(), -1)
        picked = logp.gather(-1, tokens.clamp(0, logp.shape[-1] - 1)[..., None]).squeeze(-1)
        return torch.where(mask, picked, torch.zeros_like(picked))

    @torch.no_grad()
    def _greedy(self, inputs: dict, steps: int, stop: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding restricted to `allowed_ids` (+ the stop id when `stop`), KV-cached.
        Returns tokens [B, n] and mask [B, n] (True up to and including the stop token)."""
        allowed = self.allowed_ids.clone()
        if stop:
            allowed[self.stop_id] = True
        attention = inputs["attention_mask"]
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": attention,
                  "pixel_values": inputs["pixel_values"], "position_ids": self._positions(attention)}
        if "token_type_ids" in inputs:
            kwargs["token_type_ids"] = inputs["token_type_ids"]
        out = self.model(**kwargs, use_cache=True, logits_to_keep=1)
        position = kwargs["position_ids"][:, -1:]
        b = attention.shape[0]
        done = torch.zeros(b, dtype=torch.bool, device=attention.device)
        tokens, masks = [], []
        for step in range(steps):
            logits = out.logits[:, -1].float().masked_fill(~allowed[: out.logits.shape[-1]], float("-inf"))
            nxt = torch.where(done, torch.full_like(done, self.pad_id, dtype=torch.long), logits.argmax(-1))
            tokens.append(nxt)
            masks.append(~done)
            if stop:
                done = done | (nxt == self.stop_id)
            if step == steps - 1 or done.all():
                break
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
            position = position + 1
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = out.past_key_values
            out = self.model(input_ids=nxt[:, None], attention_mask=attention, position_ids=position,
                             cache=cache, use_cache=True, logits_to_keep=1)
        return torch.stack(tokens, 1), torch.stack(masks, 1)

    # ---- bins --------------------------------------------------------------------------------
    def encode_actions(self, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = self.as_action_chunks(actions)
        ids = self.bins.encode(self.stats.normalize(chunks)).reshape(chunks.shape[0], -1)
        ids = np.concatenate([ids, np.full((ids.shape[0], 1), self.stop_id)], 1)
        tokens = torch.from_numpy(ids).to(self.device)
        return tokens, torch.ones_like(tokens, dtype=torch.bool)

    def gripper_positions(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        index = torch.arange(tokens.shape[1], device=tokens.device)
        grip = (index % ACTION_DIM == GRIPPER_INDEX) & (index < self.chunk_size * ACTION_DIM)
        return grip[None].expand_as(tokens) & mask

    def predict_tokens(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = self._greedy(inputs, self.chunk_size * ACTION_DIM, stop=False)
        stop = torch.full_like(tokens[:, :1], self.stop_id)
        tokens = torch.cat([tokens, stop], 1)
        return tokens, torch.ones_like(tokens, dtype=torch.bool)

    def decode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        n = self.chunk_size * ACTION_DIM
        ids = tokens.detach().cpu().numpy()
        m = mask.detach().cpu().numpy().astype(bool)
        b = ids.shape[0]
        actions = np.zeros((b, self.chunk_size, ACTION_DIM))
        if ids.shape[1] < n:
            return actions, np.zeros(b, dtype=bool)
        ok = m[:, :n].all(1) & self.bins.is_action_id(ids[:, :n]).all(1)
        if ok.any():
            norm = self.bins.decode(ids[ok, :n]).reshape(-1, self.chunk_size, ACTION_DIM)
            actions[ok] = self.stats.unnormalize(norm)
        return actions, ok

    # ---- checkpoints -------------------------------------------------------------------------
    def _backbone_state(self, merge: bool) -> dict:
        """State dict of the transformers model with peft's wrappers removed; LoRA deltas added
        out of place when `merge` (the live adapter is untouched)."""
        from peft.tuners.lora import LoraLayer

        base = self.base_model()
        deltas = {}
        if merge:
            for name, module in base.named_modules():
                if isinstance(module, LoraLayer) and "default" in module.lora_A:
                    deltas[f"{name}.weight"] = module.get_delta_weight("default")
        state = {}
        for key, value in base.state_dict().items():
            if "lora_" in key:
                continue
            clean = key.replace(".base_layer.", ".")
            value = value.detach()
            if clean in deltas:
                value = (value.float() + deltas[clean].float()).to(value.dtype)
            state[clean] = value.contiguous()
        return state

    def save_parts(self, directory: str, *, merge_lora: bool = True) -> dict:
        backbone = os.path.join(directory, BACKBONE_DIR)
        base = self.base_model()
        config = self.config_dict()
        if self.uses_lora:
            base.save_pretrained(backbone, state_dict=self._backbone_state(merge=merge_lora))
            if not merge_lora:
                self.model.save_pretrained(os.path.join(directory, ADAPTER_DIR))
            config["adapter"] = None if merge_lora else ADAPTER_DIR
        else:
            base.save_pretrained(backbone)
            config["adapter"] = None
        self.processor.save_pretrained(backbone)
        config["pretrained"] = BACKBONE_DIR
        self._save_action_tokenizer(directory)
        return config

    def _save_action_tokenizer(self, directory: str) -> None:
        lo, hi = self.bins.id_range
        write_action_tokenizer(directory, {"type": "bins", "n_bins": self.config.n_bins,
                                           "vocab_size": self.base_vocab_size, "id_range": [lo, hi],
                                           "stop_id": self.stop_id})

    @classmethod
    def load_parts(cls, directory: str, config: dict, stats: ActionStatistics, *,
                   device: str | None = None, trust_remote_code: bool = False,
                   lora: bool | None = None) -> VLABinsPolicy:
        try:
            cfg = VLAConfig(**config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{directory}: bad VLA policy config: {err}") from None
        dev = pick_device(device)[0]
        backbone = os.path.join(directory, cfg.pretrained or BACKBONE_DIR)
        model, processor = load_backbone(backbone, device=dev, dtype=_torch_dtype(cfg.dtype, dev),
                                         trust_remote_code=trust_remote_code)
        policy = cls(cfg, stats, model, processor, dev, **cls._load_extra(directory))
        if cfg.adapter:
            from peft import PeftModel

            adapter = os.path.join(directory, cfg.adapter)
            require_file(adapter, "adapter_config.json", "LoRA adapter config")
            require_file(adapter, "adapter_model.safetensors", "LoRA adapter weights")
            with warnings.catch_warnings():  # see add_lora
                warnings.simplefilter("ignore", FutureWarning)
                policy.model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
            if lora is False:  # inference: fold the adapter into the weights
                policy.model = policy.model.merge_and_unload()
                policy.config.lora = None
        elif lora or (lora is None and cfg.lora is not None):
            policy.add_lora()
        else:
            policy.config.lora = None
        policy.config.adapter = None
        policy._finish_setup()
        return policy

    @classmethod
    def _load_extra(cls, directory: str) -> dict:
        return {}


class VLAFastPolicy(VLABinsPolicy):
    """pi0-FAST-style: FAST tokens of a T x 7 chunk in a reserved backbone id range, then <eos>."""

    kind = "vla_fast"
    tokens_per_step = None  # FAST tokens mix the steps of a chunk

    def __init__(self, config: VLAConfig, stats: ActionStatistics, model, processor, device: torch.device,
                 fast_tokenizer=None):
        if fast_tokenizer is None:
            raise ValueError("vla_fast needs a fitted FastTokenizer")
        self.fast = fast_tokenizer
        super().__init__(config, stats, model, processor, device)

    def _setup_tokens(self) -> None:
        super()._setup_tokens()  # bins kept only for describe(); FAST ids below replace the range
        fast = self.fast
        if (fast.time_horizon, fast.action_dim) != (self.chunk_size, ACTION_DIM):
            raise ValueError(f"FAST tokenizer is for {fast.time_horizon} x {fast.action_dim} chunks, "
                             f"the policy predicts {self.chunk_size} x {ACTION_DIM}")
        if fast.vocab_size > self.config.fast_vocab_size:
            raise ValueError(f"FAST tokenizer has {fast.vocab_size} ids, more than the reserved "
                             f"{self.config.fast_vocab_size}")
        self.fast_end = self.base_vocab_size - 1 - self.config.fast_skip_tokens  # id of FAST token 0
        lo = self.fast_end - self.config.fast_vocab_size + 1
        self._check_range(lo, self.fast_end, "FAST")
        allowed = torch.zeros(self.model_vocab_size, dtype=torch.bool, device=self.device_)
        allowed[self.fast_end - fast.vocab_size + 1:self.fast_end + 1] = True
        self.allowed_ids = allowed

    @classmethod
    def _pop_build_options(cls, options: dict, stats: ActionStatistics) -> dict:
        """fast_tokenizer: a fitted FastTokenizer or its directory; else fit_actions: raw chunks
        [N, T, 7] to fit one on (the demos); else a BPE fitted on synthetic smooth chunks."""
        given = options.pop("fast_tokenizer", None)
        fit_actions = options.pop("fit_actions", None)
        if isinstance(given, str):
            given = FastTokenizer.load(given)
        if given is None:
            given = fit_fast_tokenizer(stats, fit_actions, int(options.get("chunk_size", 1)),
                                       int(options.get("fast_vocab_size", 1024)),
                                       float(options.get("fast_scale", 10.0)))
        return {"fast_tokenizer": given}

    def max_target_tokens(self) -> int:
        return self.config.max_new_tokens or 2 * self.chunk_size * ACTION_DIM + 1

    def action_token_space(self) -> str | None:
        return None  # FAST tokens mix the steps of a chunk: no per-step ids to record

    def describe(self) -> dict:
        d = super().describe()
        lo = self.fast_end - self.config.fast_vocab_size + 1
        d["action_tokenizer"] = (f"FAST(T={self.fast.time_horizon}, scale={self.fast.scale}, "
                                 f"bpe vocab {self.fast.vocab_size}, ids {lo}..{self.fast_end} reversed) "
                                 f"+ stop {self.stop_id}")
        return d

    def fast_to_ids(self, fast_tokens: Sequence[int]) -> list[int]:
        return [self.fast_end - int(t) for t in fast_tokens]

    def ids_to_fast(self, ids: np.ndarray) -> np.ndarray:
        return self.fast_end - np.asarray(ids, dtype=np.int64)

    def encode_actions(self, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = self.stats.normalize(self.as_action_chunks(actions))
        rows = [self.fast_to_ids(t) + [self.stop_id] for t in self.fast.encode_batch(chunks)]
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = True
        return tokens.to(self.device), mask.to(self.device)

    def gripper_positions(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(mask, dtype=torch.bool)

    def predict_tokens(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self._greedy(inputs, self.max_target_tokens(), stop=True)

    def decode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Tokens up to the first stop token -> FAST decode; ok False when there is no stop token,
        an id outside the FAST range, or the FAST decode fails (wrong coefficient count...)."""
        ids = tokens.detach().cpu().numpy()
        m = mask.detach().cpu().numpy().astype(bool)
        b = ids.shape[0]
        lists: list[list[int]] = []
        valid = np.zeros(b, dtype=bool)
        lo = self.fast_end - self.fast.vocab_size + 1
        for i in range(b):
            row = ids[i][m[i]]
            stops = np.nonzero(row == self.stop_id)[0]
            body = row[: stops[0]] if stops.size else row
            in_range = bool(((body >= lo) & (body <= self.fast_end)).all())
            valid[i] = bool(stops.size) and body.size > 0 and in_range
            lists.append(self.ids_to_fast(body).tolist() if valid[i] else [])
        chunks, ok = self.fast.decode_batch([t if v else [] for t, v in zip(lists, valid)])
        ok = ok & valid
        actions = np.zeros((b, self.chunk_size, ACTION_DIM))
        if ok.any():
            actions[ok] = self.stats.unnormalize(chunks[ok])
        return actions, ok

    def _save_action_tokenizer(self, directory: str) -> None:
        self.fast.save(os.path.join(directory, FAST_DIR))
        write_action_tokenizer(directory, {
            "type": "fast", "time_horizon": self.fast.time_horizon, "scale": self.fast.scale,
            "fast_vocab_size": self.fast.vocab_size, "reserved": self.config.fast_vocab_size,
            "id_of_fast_token_0": self.fast_end, "mapping": "id = id_of_fast_token_0 - fast_token",
            "stop_id": self.stop_id, "files": FAST_DIR})

    @classmethod
    def _load_extra(cls, directory: str) -> dict:
        path = os.path.join(directory, FAST_DIR)
        require_file(path, "fast_tokenizer.json", "FAST tokenizer settings")
        require_file(path, "tokenizer.json", "FAST tokenizer BPE model")
        try:
            return {"fast_tokenizer": FastTokenizer.load(path)}
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path}: {err}") from None

    def refit_fast_tokenizer(self, raw_chunks: np.ndarray) -> None:
        """Fit a new FAST BPE on raw action chunks [N, T, 7] (e.g. the expert demos) before
        training; changes the token vocabulary, so only do it on an untrained policy."""
        self.fast = fit_fast_tokenizer(self.stats, raw_chunks, self.chunk_size, self.config.fast_vocab_size,
                                       self.config.fast_scale)
        self._setup_tokens()


def synthetic_chunks(n: int, chunk: int, seed: int = 0) -> np.ndarray:
    """Smooth normalized chunks [n, T, 7] (linear + small curvature, gripper 0/1) to fit a FAST
    BPE when no demos are given yet."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, chunk)[None, :, None]
    start = rng.uniform(-0.8, 0.8, (n, 1, 6))
    slope = rng.uniform(-0.5, 0.5, (n, 1, 6))
    curve = rng.uniform(-0.3, 0.3, (n, 1, 6))
    deltas = np.clip(start + slope * t + curve * t ** 2, -1, 1)
    gripper = rng.integers(0, 2, (n, 1, 1)).repeat(chunk, 1).astype(np.float64)
    return np.concatenate([deltas, gripper], -1)


def fit_fast_tokenizer(stats: ActionStatistics, raw_chunks, chunk: int, vocab: int, scale: float):
    """A FastTokenizer fitted on raw chunks (normalized with `stats`), or on synthetic chunks."""
    tok = FastTokenizer(chunk, ACTION_DIM, scale=scale, vocab_size=vocab)
    if raw_chunks is None:
        normalized = synthetic_chunks(512, chunk)
    else:
        raw = np.asarray(raw_chunks, dtype=np.float64)
        if raw.ndim != 3 or raw.shape[1:] != (chunk, ACTION_DIM):
            raise ValueError(f"fit_actions must be raw chunks [N, {chunk}, {ACTION_DIM}], got {raw.shape}")
        normalized = stats.normalize(raw)
    return tok.fit(normalized)
