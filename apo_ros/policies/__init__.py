"""Token policies: the interface every objective uses, the small CPU policy, transformers VLAs
(OpenVLA-style bins and pi0-FAST-style), checkpoints and the frozen reference.

Names load on first use (torch and transformers are heavy), so `apo-ros --help` and the
`apo_ros.policies.cli` registration stay fast."""

from apo_ros.lazy import lazy_exports

_LAZY = {
    "TokenPolicy": "base", "concat_inputs": "base", "index_inputs": "base", "inputs_to": "base",
    "pick_device": "base",
    "CheckpointError": "errors", "PickleRefusedError": "errors",
    "RemoteCodeRefusedError": "errors", "load_policy": "checkpoint", "policy_id": "checkpoint",
    "save_policy": "checkpoint", "verify_policy_id": "checkpoint",
    "POLICY_KINDS": "factory", "PolicyKind": "factory", "build_policy": "factory",
    "policy_kinds": "factory",
    "ReferencePolicy": "reference", "make_reference": "reference",
}

__getattr__ = lazy_exports(__name__, {name: f"apo_ros.policies.{module}"
                                          for name, module in _LAZY.items()})


__all__ = sorted(_LAZY)
