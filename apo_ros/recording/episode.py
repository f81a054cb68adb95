"""Episodes as read back from bags: the unit the labeler and the trainer work on."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Episode:
    path: str  # the bag directory
    steps: list[Step]
    metadata: dict = field(default_factory=dict)  # custom_data: task, instruction, policy_id, ...
    outcome: str = "unknown"  # one of OUTCOMES
    truncated: bool = False  # True when the bag was salvaged by `apo-ros bags repair`

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
