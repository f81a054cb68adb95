"""`build_policy(kind, stats, instructions=..., **config)`: a fresh (untrained) policy of a kind."""

from __future__ import annotations

import importlib

from apo_ros.actions.statistics import ActionStatistics
from apo_ros.policies.base import TokenPolicy

# kind -> "module:Class"; the VLA classes import transformers, so they are loaded on demand.
POLICY_KINDS: dict[str, str] = {
    "small": "apo_ros.policies.small:SmallPolicy",
    "state": "apo_ros.policies.state:StatePolicy",
    "vla_bins": "apo_ros.policies.vla:VLABinsPolicy",
    "vla_fast": "apo_ros.policies.vla:VLAFastPolicy",
}


def policy_class(kind: str) -> type[TokenPolicy]:
    if kind not in POLICY_KINDS:
        raise KeyError(f"unknown policy kind {kind!r} (known: {sorted(POLICY_KINDS)})")
    module, name = POLICY_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def build_policy(kind: str, stats: ActionStatistics, *, instructions: list[str], **config) -> TokenPolicy:
    """A new policy of `kind` ("small", "state", "vla_bins", "vla_fast").

    small:    SmallPolicyConfig fields (cameras, chunk_size, channels, hidden, ...) + device.
    state:    StatePolicyConfig fields (n_objects, chunk_size, hidden, layers, ...) + device; proprio
              and object-state standardization from the statistics' extra "proprio" / "object_state".
    vla_*:    VLAConfig fields (pretrained=local transformers dir or None for the tiny PaliGemma,
              lora=dict or None, cameras, chunk_size, fast settings, ...) + device,
              fast_tokenizer / fit_chunks for vla_fast. See apo_ros.policies.vla.
    """
    if kind not in POLICY_KINDS:
        raise ValueError(f"unknown policy kind {kind!r} (known: {sorted(POLICY_KINDS)})")
    if kind in ("small", "state"):
        device = config.pop("device", None)
        extra = stats.extra if isinstance(stats.extra, dict) else {}
        standardization = [("proprio", "proprio")] + ([("object_state", "object")] if kind == "state" else [])
        for key, prefix in standardization:
            entry = extra.get(key)
            if isinstance(entry, dict) and "mean" in entry and "std" in entry:
                config.setdefault(f"{prefix}_mean", [float(v) for v in entry["mean"]])
                config.setdefault(f"{prefix}_std", [float(v) for v in entry["std"]])
        if kind == "state":
            from apo_ros.policies.state import POSE_DIM, StatePolicy, StatePolicyConfig

            mean = config.get("object_mean")
            if mean is not None and "n_objects" not in config:
                config["n_objects"] = max(1, len(mean) // POSE_DIM)
            config_cls, policy_cls = StatePolicyConfig, StatePolicy
        else:
            from apo_ros.policies.small import SmallPolicy, SmallPolicyConfig

            config_cls, policy_cls = SmallPolicyConfig, SmallPolicy
        try:
            cfg = config_cls(instructions=list(instructions), **config)
        except TypeError as err:
            raise ValueError(f"bad {kind} policy option: {err}") from None
        return policy_cls(cfg, stats, device=device)
    cls = policy_class(kind)
    return cls.build(stats, instructions=list(instructions), **config)  # type: ignore[attr-defined]
