"""`open_policy(spec)`: the one place a policy argument becomes a policy to run.

`spec` is a checkpoint directory (loaded in this process) or a policy server URL
`ws://HOST:PORT` (`apo-ros serve`, or any openpi-protocol server; the policy runs there). Both
give a `PolicySource` (apo_ros.control.policy_source), so policy_node, `apo-ros session` and
`apo-ros sim eval` accept either. It lives with the serving client because it chooses between a
local checkpoint and a server.
"""

from __future__ import annotations

from apo_ros.control.policy_source import PolicySource
from apo_ros.control.policy_source import provenance as source_provenance
from apo_ros.policies.checkpoint import load_policy
from apo_ros.serving.client import RemotePolicy, is_remote


def open_policy(spec: str, *, device: str | None = None, trust_remote_code: bool = False) -> PolicySource:
    """A runnable policy for `spec`: a checkpoint directory or a ws:// server URL (query options:
    timeout_s, connect_timeout_s, backoff_s, max_backoff_s). Raises ValueError subclasses with a
    one-line message (CheckpointError, RemotePolicyError)."""
    if is_remote(spec):
        return RemotePolicy(spec)
    return load_policy(spec, device=device, trust_remote_code=trust_remote_code)


def provenance(policy: PolicySource) -> dict[str, str]:
    """{"policy_id", "stats_id"} of a policy as bags record them: a loaded checkpoint's ids, or
    the ones a policy server last reported (they change when the server hot-swaps)."""
    return source_provenance(policy, policy.policy_id or type(policy).__name__)
