"""What the control loop runs: an `ActionSource` (anything that gives action chunks: a policy, the
scripted expert) and a `PolicySource`, the richer object `open_policy` returns for a checkpoint
directory (a `TokenPolicy`) or a policy server (a `RemotePolicy`). Callers use these attributes
instead of probing the object; both implementations declare every one of them."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from apo_ros.observation import Observation


class ActionSource(Protocol):
    """What `PolicyRunner` needs: one observation -> (raw chunk [T, 7], ok), and a reset between
    episodes."""

    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]: ...

    def reset(self) -> None: ...


class PolicySource(ActionSource, Protocol):
    """A policy opened by `apo_ros.serving.open_policy`: a loaded checkpoint or a policy server."""

    # the content-hash id bags record ("" / None before a checkpoint is saved or a server answers)
    policy_id: str | None
    # True when `policy_id` and `statistics_id` follow the source (a server that hot-swaps), so
    # the runner re-reads them per plan; False for a checkpoint loaded in this process
    reports_policy_id: bool
    # why the last `select_action` returned ok=False ("" when it did not, or for no reason given)
    failure_reason: str

    @property
    def statistics_id(self) -> str: ...  # the id of its action statistics

    @property
    def cameras(self) -> tuple[str, ...]: ...  # cameras it reads, in order (none: a state policy)

    @property
    def uses_object_state(self) -> bool: ...  # reads Observation.object_poses

    @property
    def instructions(self) -> list[str]: ...  # its fixed instruction list ([]: any text)

    def action_token_space(self) -> str | None: ...  # what its token ids mean (None: no tokens)

    def select_action_with_tokens(self, observation: Observation
                                  ) -> tuple[np.ndarray, bool, np.ndarray | None]: ...

    def eval(self) -> Any: ...  # inference mode (dropout off); a server's policy already is


def provenance(policy: ActionSource, policy_id: str) -> dict[str, str]:
    """What a bag records about the source that acted: its content-hash id and the id of its
    action statistics ("" for a source without statistics, e.g. the scripted expert). The
    in-process session and the ROS graph both write exactly this. A policy server's ids are the
    ones it last reported, so they follow a hot-swap on the server."""
    stats_id = str(getattr(policy, "statistics_id", "") or "")  # an expert has none
    if getattr(policy, "reports_policy_id", False) and getattr(policy, "policy_id", ""):
        policy_id = str(policy.policy_id)
    return {"policy_id": str(policy_id), "stats_id": stats_id}
