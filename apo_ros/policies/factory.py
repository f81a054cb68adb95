"""`build_policy(kind, stats, instructions=..., **config)`: a fresh (untrained) policy of a kind."""

from __future__ import annotations

import importlib

from apo_ros.actions.statistics import ActionStatistics
from apo_ros.policies.base import TokenPolicy

# kind -> "module:Class"; the VLA classes import transformers, so they are loaded on demand.
POLICY_KINDS: dict[str, str] = {
    "small": "apo_ros.policies.small:SmallPolicy",
    "vla_bins": "apo_ros.policies.vla:VLABinsPolicy",
    "vla_fast": "apo_ros.policies.vla:VLAFastPolicy",
}


def policy_class(kind: str) -> type[TokenPolicy]:
    if kind not in POLICY_KINDS:
        raise KeyError(f"unknown policy kind {kind!r} (known: {sorted(POLICY_KINDS)})")
    module, name = POLICY_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def build_policy(kind: str, stats: ActionStatistics, *, instructions: list[str], **config) -> TokenPolicy:
    """A new policy of `kind` ("small", "vla_bins", "vla_fast").

    small:    SmallPolicyConfig fields (cameras, chunk_size, channels, hidden, ...) + device.
    vla_*:    VLAConfig fields (pretrained=local transformers dir or None for the tiny PaliGemma,
              lora=dict or None, cameras, chunk_size, fast settings, ...) + device,
              fast_tokenizer / fit_chunks for vla_fast. See apo_ros.policies.vla.
    """
    if kind not in POLICY_KINDS:
        raise ValueError(f"unknown policy kind {kind!r} (known: {sorted(POLICY_KINDS)})")
    if kind == "small":
        from apo_ros.policies.small import SmallPolicy, SmallPolicyConfig

        device = config.pop("device", None)
        proprio = stats.extra.get("proprio") if isinstance(stats.extra, dict) else None
        if isinstance(proprio, dict) and "mean" in proprio and "std" in proprio:
            config.setdefault("proprio_mean", [float(v) for v in proprio["mean"]])
            config.setdefault("proprio_std", [float(v) for v in proprio["std"]])
        try:
            cfg = SmallPolicyConfig(instructions=list(instructions), **config)
        except TypeError as err:
            raise ValueError(f"bad small policy option: {err}") from None
        return SmallPolicy(cfg, stats, device=device)
    cls = policy_class(kind)
    return cls.build(stats, instructions=list(instructions), **config)  # type: ignore[attr-defined]
