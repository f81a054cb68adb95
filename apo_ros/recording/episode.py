"""Episodes as read back from bags: the unit the labeler and the trainer work on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apo_ros.observation import Observation

OUTCOMES = ("success", "failure", "abort", "unknown")


@dataclass
class Step:
    """One executed control step."""

    observation: Observation  # the exact observation the action was computed from
    action: np.ndarray  # (7,) executed action, raw units (after the safety filter)
    source: str  # "policy" | "human" | "expert"
    stamp_ns: int  # when the action was executed
    proposed: np.ndarray | None = None  # (7,) what the policy proposed at this step, if it ran
    human: np.ndarray | None = None  # (7,) the operator's command for this observation, if recorded
    # the token ids the policy produced for `proposed` (one per action dimension for bin
    # tokenizers), and what they mean (TokenPolicy.action_token_space); None / "" when the bag
    # has none (recorded before tokens were, by an expert, or by a policy without per-step ids)
    tokens: np.ndarray | None = None
    token_space: str = ""
    # chunk provenance of a policy action (recording/chunks.py ChunkInfo: index in its chunk,
    # inference latency, merge rule, the tick it ran at); None for human / expert / older bags
    chunk: Any = None


@dataclass
class Episode:
    path: str  # the bag directory
    steps: list[Step]
    metadata: dict = field(default_factory=dict)  # custom_data: task, instruction, policy_id, ...
    outcome: str = "unknown"  # one of OUTCOMES
    truncated: bool = False  # True when the bag was salvaged by `apo-ros bags repair`
    events: list[tuple[int, str]] = field(default_factory=list)  # (bag time ns, kind), time order
    dropped_steps: int = 0  # executed actions whose observation is not in the bag (not in steps)

    @property
    def sources(self) -> list[str]:
        return [s.source for s in self.steps]

    def interventions(self) -> list[tuple[int, int]]:
        """[start, end) step index ranges of consecutive human steps."""
        spans, start = [], None
        for i, src in enumerate(self.sources):
            if src == "human" and start is None:
                start = i
            elif src != "human" and start is not None:
                spans.append((start, i))
                start = None
        if start is not None:
            spans.append((start, len(self.steps)))
        return spans

    @property
    def duration_ns(self) -> int:
        """From the first to the last executed action."""
        return self.steps[-1].stamp_ns - self.steps[0].stamp_ns if self.steps else 0

    def actions(self) -> np.ndarray:
        """(N, 7) executed actions."""
        return np.asarray([s.action for s in self.steps], dtype=np.float64).reshape(-1, 7)

