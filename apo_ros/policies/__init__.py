"""Token policies: the interface every objective uses, the small CPU policy, transformers VLAs
(OpenVLA-style bins and pi0-FAST-style), checkpoints and the frozen reference."""

from apo_ros.policies.base import TokenPolicy, concat_inputs, index_inputs, inputs_to, pick_device
from apo_ros.policies.checkpoint import (
    CheckpointError,
    PickleRefusedError,
    RemoteCodeRefusedError,
    load_policy,
    policy_id,
    save_policy,
    verify_policy_id,
)
from apo_ros.policies.factory import POLICY_KINDS, build_policy
from apo_ros.policies.reference import ReferencePolicy, make_reference

__all__ = [
    "POLICY_KINDS", "CheckpointError", "PickleRefusedError", "ReferencePolicy", "RemoteCodeRefusedError",
    "TokenPolicy", "build_policy", "concat_inputs", "index_inputs", "inputs_to", "load_policy",
    "make_reference", "pick_device", "policy_id", "save_policy", "verify_policy_id",
]
