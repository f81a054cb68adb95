"""`open_policy(spec)`: the one place a policy argument becomes a policy to run.

`spec` is a checkpoint directory (loaded in this process) or a policy server URL
`ws://HOST:PORT` (`apo-ros serve`, or any openpi-protocol server; the policy runs there). Both
give an object with `select_action(observation) -> (chunk [T, 7], ok)`, `reset()`, `policy_id`
and a statistics id (`provenance`), so policy_node, `apo-ros session` and `apo-ros sim eval`
accept either.
"""

from __future__ import annotations

from typing import Any


def open_policy(spec: str, *, device: str | None = None, trust_remote_code: bool = False) -> Any:
    """A runnable policy for `spec`: a checkpoint directory or a ws:// server URL (query options:
    timeout_s, connect_timeout_s, backoff_s, max_backoff_s). Raises ValueError subclasses with a
    one-line message (CheckpointError, RemotePolicyError)."""
    from apo_ros.serving.client import RemotePolicy, is_remote

    if is_remote(spec):
        return RemotePolicy(spec)
    from apo_ros.policies.checkpoint import load_policy

    return load_policy(spec, device=device, trust_remote_code=trust_remote_code)


def provenance(policy: Any) -> dict[str, str]:
    """{"policy_id", "stats_id"} of a policy as bags record them: a loaded checkpoint's ids, or
    the ones a policy server last reported (they change when the server hot-swaps)."""
    from apo_ros.runtime.policy_runner import provenance as runner_provenance

    return runner_provenance(policy, getattr(policy, "policy_id", None) or type(policy).__name__)
