"""A tiny PaliGemma built from config — no downloads — for tests and the CPU demo.

Same classes as the real thing (SiglipVisionConfig + GemmaConfig -> PaliGemmaForConditionalGeneration,
GemmaTokenizer + SiglipImageProcessor -> PaliGemmaProcessor), so every code path of the VLA
policies (processor, prefix-LM attention, action ids, LoRA, save_pretrained / from_pretrained)
runs for real on a CPU in well under a second per training step.

The vocabulary mirrors PaliGemma's layout: special tokens, then the text alphabet (characters;
the BPE has no merges), then the 1024 `<locNNNN>` and 128 `<segNNN>` tokens at the END. So, as on
the real model, OpenVLA-style action bins (the last 256 ids of the base vocabulary) land on
`<loc0896>`..`<seg127>`, and a FAST range of 1024 ids lands on the loc/seg tokens too.
Constraints PaliGemma's code imposes: the image token id must be inside the vocabulary,
projection_dim must equal the text hidden size, and input_ids must hold exactly
(image_size / patch_size)^2 image tokens per image (the processor inserts them).
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass

from apo_ros.config import parse_config

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<image>")
EXTRA_TOKENS = tuple(f"<loc{i:0>4}>" for i in range(1024)) + tuple(f"<seg{i:0>3}>" for i in range(128))


@dataclass
class TinyVLAConfig:
    text_hidden: int = 64  # Gemma hidden size (= vision projection size)
    text_layers: int = 2  # Gemma decoder layers
    text_heads: int = 2  # attention heads
    text_kv_heads: int = 1  # key/value heads (multi-query, as Gemma-2B)
    head_dim: int = 32  # per-head width
    text_intermediate: int = 128  # MLP width
    vision_hidden: int = 32  # SigLIP width
    vision_layers: int = 1  # SigLIP layers
    vision_heads: int = 2  # SigLIP heads
    vision_intermediate: int = 64  # SigLIP MLP width
    image_size: int = 32  # square input resolution of the vision tower
    patch_size: int = 8  # -> (32 / 8)^2 = 16 image tokens per image
    seed: int = 0  # weight initialization seed (reproducible tiny models)

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def tiny_vocabulary() -> dict[str, int]:
    """Specials, then '▁' and printable characters, then the 1152 loc/seg tokens."""
    chars = ["▁"] + [c for c in string.printable if c not in " \t\r\x0b\x0c"]
    tokens = list(SPECIAL_TOKENS) + chars + list(EXTRA_TOKENS)
    return {t: i for i, t in enumerate(tokens)}


def build_tiny_tokenizer():
    from transformers import GemmaTokenizer

    return GemmaTokenizer(vocab=tiny_vocabulary(), merges=[])


def build_tiny_processor(config: TinyVLAConfig | None = None):
    from transformers import PaliGemmaProcessor

    try:  # the PIL image processor: no torchvision needed (and no fallback warning)
        from transformers import SiglipImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import SiglipImageProcessor as ImageProcessor
    config = config or TinyVLAConfig()
    image_processor = ImageProcessor(size={"height": config.image_size, "width": config.image_size},
                                     image_mean=[0.5] * 3, image_std=[0.5] * 3, do_convert_rgb=False)
    image_processor.image_seq_length = config.image_tokens
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=build_tiny_tokenizer())


def tiny_model_config(config: TinyVLAConfig | None = None):
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    config = config or TinyVLAConfig()
    vocab = tiny_vocabulary()
    vision = SiglipVisionConfig(
        hidden_size=config.vision_hidden, intermediate_size=config.vision_intermediate,
        num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
        image_size=config.image_size, patch_size=config.patch_size, projection_dim=config.text_hidden)
    text = GemmaConfig(vocab_size=len(vocab), hidden_size=config.text_hidden,
                       intermediate_size=config.text_intermediate, num_hidden_layers=config.text_layers,
                       num_attention_heads=config.text_heads, num_key_value_heads=config.text_kv_heads,
                       head_dim=config.head_dim, pad_token_id=vocab["<pad>"], bos_token_id=vocab["<bos>"],
                       eos_token_id=vocab["<eos>"])
    return PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=vocab["<image>"],
                           projection_dim=config.text_hidden, pad_token_id=vocab["<pad>"],
                           bos_token_id=vocab["<bos>"], eos_token_id=vocab["<eos>"])


def build_tiny_paligemma(config: TinyVLAConfig | None = None):
    """(PaliGemmaForConditionalGeneration in float32, PaliGemmaProcessor), seeded."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    config = config or TinyVLAConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = PaliGemmaForConditionalGeneration(tiny_model_config(config))
    model.eval()
    return model, build_tiny_processor(config)


def save_tiny_checkpoint(directory: str, config: TinyVLAConfig | None = None) -> str:
    """Write a tiny PaliGemma as a local transformers checkpoint (model + processor), so
    `from_pretrained(directory)` and the VLA policies' `pretrained=directory` path run for real."""
    model, processor = build_tiny_paligemma(config)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def tiny_config_from_dict(d: dict | None) -> TinyVLAConfig:
    """TinyVLAConfig from overrides (unknown keys and wrong types raise ConfigError, a ValueError)."""
    return parse_config(TinyVLAConfig, overrides=d or {}, source="tiny VLA config")
