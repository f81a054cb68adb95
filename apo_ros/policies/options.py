"""The build options of each policy kind: one dataclass per kind, each checking its own values.

`PolicyOptions` is a draccus ChoiceRegistry (as LeRobot's policy configs, and as the training
methods' configs): each `PolicyKind` in `factory.py` names its options class, filed under the
kind's name. The trainer holds the options as the user gave them (`--policy.hidden 256`, YAML
`policy: {hidden: 256}`, the study's `policy` dict) and builds the kind's class once `--init`
names the kind; an option that kind does not take is refused, naming the option and the kind.

Every option left null takes that kind's default (the policy's own config class). Kinds that
share an option share its class (`BinHeadOptions`, `VLAOptions`): an option several kinds take
has one type and one meaning in all of them. Importing this module is cheap (no torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import draccus

from apo_ros.actions.bins import DECODE_MODES


@dataclass
class PolicyOptions(draccus.ChoiceRegistry):
    """The options every kind takes."""

    # actions per prediction (T; each is 7 tokens for bin policies)
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")

    def given(self) -> dict:
        """The options that were set (not null)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    def build_options(self) -> dict:
        """`build_policy(kind, ...)` keyword arguments: the options that were set, lists as tuples."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.given().items()}


@dataclass
class BinHeadOptions(PolicyOptions):
    """Policies with their own network and a per-dimension bin head (small, state)."""

    # action bins per dimension
    n_bins: int | None = None
    # width of the trunk / MLP, token embeddings and head
    hidden: int | None = None
    # instruction embedding width
    instruction_dim: int | None = None
    # how predictions become actions: argmax (the most likely bin) or mean (the expected value of
    # each arm dimension; the gripper keeps its argmax)
    decode: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decode is not None and self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {self.decode!r}")


@dataclass
class SmallOptions(BinHeadOptions):
    """The small CPU policy: a conv encoder over the camera images."""

    # cameras read, in order; null: front wrist (small), front (the VLAs)
    cameras: list[str] | None = None
    # square image side the policy resizes to
    image_size: int | None = None
    # conv widths of the encoder
    channels: list[int] | None = None
    # "stacked" (cameras as channels) or "separate" (one encoder pass per camera)
    camera_fusion: str | None = None
    # "matrix" or "quaternion" ee orientation features
    rotation_features: str | None = None


@dataclass
class StateOptions(BinHeadOptions):
    """The state policy: an MLP over proprio and object poses, no image."""

    # MLP layers
    layers: int | None = None
    # object poses read (default: as many as the bags record)
    n_objects: int | None = None


@dataclass
class VLAOptions(PolicyOptions):
    """A transformers vision-language backbone (vla_bins, vla_fast)."""

    # cameras read, in order; null: front wrist (small), front (the VLAs)
    cameras: list[str] | None = None
    # local transformers checkpoint directory (null = the tiny PaliGemma built from config)
    pretrained: str | None = None
    # LoRA rank (alpha 16, all linear layers); 0 = train all weights
    lora_rank: int | None = None
    # prompt with {instruction}
    prompt: str | None = None
    # auto, float32, bfloat16
    dtype: str | None = None
    # trade compute for memory
    gradient_checkpointing: bool | None = None
    # allow the checkpoint's own Python code (only code you trust)
    trust_remote_code: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_rank is not None and self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0 = train all weights), got {self.lora_rank}")

    def build_options(self) -> dict:
        options = super().build_options()
        if "lora_rank" in options:
            rank = int(options.pop("lora_rank"))
            options["lora"] = None if rank == 0 else {"r": rank, "alpha": 16, "dropout": 0.0,
                                                      "target_modules": "all-linear"}
        return options


@dataclass
class VLABinsOptions(VLAOptions):
    """OpenVLA-style: 256 bins per dimension mapped onto the vocabulary's last ids."""

    # action bins per dimension
    n_bins: int | None = None


@dataclass
class VLAFastOptions(VLAOptions):
    """pi0-FAST-style: DCT + BPE action tokens."""

    # size of the reserved FAST id range
    fast_vocab_size: int | None = None
    # DCT coefficient scale
    fast_scale: float | None = None
    # ids left free at the end of the vocabulary
    fast_skip_tokens: int | None = None
