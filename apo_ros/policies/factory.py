"""The policy kinds, one registration each, and `build_policy(kind, stats, instructions=...,
**options)`: a fresh (untrained) policy of a kind.

Adding a kind is one module (a `TokenPolicy` subclass with `kind = "name"` and a classmethod
`build(stats, *, instructions, **options)`) plus one `PolicyKind` entry below, naming its build
options class (`options.py`; a new kind with new options adds one there); the CLI's choices, the
trainer's `--init` and `--policy.*` options, `load_policy` and the docs read this table.
Importing it is cheap: the policy classes (torch, transformers) load on first use."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apo_ros.actions.statistics import ActionStatistics
from apo_ros.policies.options import (
    PolicyOptions,
    SmallOptions,
    StateOptions,
    VLABinsOptions,
    VLAFastOptions,
)

if TYPE_CHECKING:  # the classes import torch: loaded only when a policy is built or loaded
    from apo_ros.policies.base import TokenPolicy


@dataclass(frozen=True)
class PolicyKind:
    """One policy kind: what the CLI and the trainer may ask of it."""

    name: str
    target: str  # "module:Class" of its TokenPolicy subclass
    summary: str  # one line, for --help
    bin_head: bool = False  # per-dimension action bins with a fixed instruction list: `decode` applies
    reads_images: bool = True  # reads camera images (else only proprio and object poses)
    reads_object_poses: bool = False  # reads Observation.object_poses: `n_objects` applies
    pretrained: bool = False  # built on a transformers backbone: --pretrained, LoRA, remote code
    default_chunk_size: int = 1  # actions per prediction when none is given
    options: type[PolicyOptions] = PolicyOptions  # its build options (`apo-ros train --policy.*`)
    # fits its action tokenizer on the training actions when built fresh (FAST's BPE)
    fits_tokenizer: bool = False


POLICY_KINDS: dict[str, PolicyKind] = {k.name: k for k in (
    PolicyKind("small", "apo_ros.policies.small:SmallPolicy", "CPU, images", bin_head=True,
               options=SmallOptions),
    PolicyKind("state", "apo_ros.policies.state:StatePolicy", "CPU, object poses instead of images",
               bin_head=True, reads_images=False, reads_object_poses=True, options=StateOptions),
    PolicyKind("vla_bins", "apo_ros.policies.vla:VLABinsPolicy", "OpenVLA-style", pretrained=True,
               options=VLABinsOptions),
    PolicyKind("vla_fast", "apo_ros.policies.vla:VLAFastPolicy", "pi0-FAST-style", pretrained=True,
               default_chunk_size=8, options=VLAFastOptions, fits_tokenizer=True),
)}
for _kind in POLICY_KINDS.values():  # each kind's options class, filed under the kind's name
    PolicyOptions.register_subclass(_kind.name, _kind.options)


def policy_kinds() -> tuple[str, ...]:
    """The kind names, in registration order (the CLI's choices)."""
    return tuple(POLICY_KINDS)


def policy_kind(kind: str) -> PolicyKind:
    if kind not in POLICY_KINDS:
        raise ValueError(f"unknown policy kind {kind!r} (known: {', '.join(POLICY_KINDS)})")
    return POLICY_KINDS[kind]


def policy_class(kind: str) -> type[TokenPolicy]:
    module, name = policy_kind(kind).target.split(":")
    return getattr(importlib.import_module(module), name)


def build_policy(kind: str, stats: ActionStatistics, *, instructions: list[str], **options) -> TokenPolicy:
    """A new policy of `kind` (see POLICY_KINDS); `options` are its class's build options:

    small:    SmallPolicyConfig fields (cameras, chunk_size, channels, hidden, ...) + device.
    state:    StatePolicyConfig fields (n_objects, chunk_size, hidden, layers, ...) + device; proprio
              and object-state standardization from the statistics' extra "proprio" / "object_state".
    vla_*:    VLAConfig fields (pretrained=local transformers dir or None for the tiny PaliGemma,
              lora=dict or None, cameras, chunk_size, fast settings, ...) + device,
              fast_tokenizer / fit_chunks for vla_fast. See apo_ros.policies.vla.
    """
    return policy_class(kind).build(stats, instructions=list(instructions), **options)
