"""Where a policy action came from, carried inside its action message (standard messages only).

A chunked policy plans several actions from one observation, and with an action queue (see
apo_ros.control.action_queue) an action may run several ticks after that observation and be a blend
of two chunks. A policy action message (sensor_msgs/JointState, see recording/schema.py) keeps
`header.stamp` = the observation its chunk was computed from, and appends these names after the
seven action names, with their values in `position`:

    chunk_index          the action's index in its chunk (0 = planned for the chunk's own tick)
    inference_latency_s  observation -> chunk ready (seconds; simulated latency in the session)
    merge_rule           0 one chunk planned it, 1 replace, 2 ensemble (ACT), 3 crossfade
    tick_stamp_sec       the observation of the control tick the action was planned for and
    tick_stamp_nanosec   executed at (builtin_interfaces/Time's two fields, exact in float64)

Readers that match action values by name (`messages.joint_state_to_action`) read the action as
before; `split` returns the provenance too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from apo_ros.actions.space import ACTION_DIM, ACTION_NAMES, SOURCES
from apo_ros.recording import messages as M

CHUNK_NAMES: tuple[str, ...] = ("chunk_index", "inference_latency_s", "merge_rule",
                                "tick_stamp_sec", "tick_stamp_nanosec")
# The merge rule as a number (apo_ros.control.action_queue names the rules).
MERGE_CODES: dict[str, int] = {"": 0, "replace": 1, "ensemble": 2, "crossfade": 3}
MERGE_NAMES: dict[int, str] = {code: name for name, code in MERGE_CODES.items()}
NS = 1_000_000_000


@dataclass(frozen=True)
class ChunkInfo:
    chunk_index: int
    latency_ns: int
    merge: str  # "" | replace | ensemble | crossfade
    tick_stamp_ns: int  # the observation of the tick the action ran at (0 = not known)

    def values(self) -> list[float]:
        return [float(self.chunk_index), self.latency_ns / NS, float(MERGE_CODES.get(self.merge, 0)),
                float(self.tick_stamp_ns // NS), float(self.tick_stamp_ns % NS)]


def of_step(step: Any) -> ChunkInfo:
    """The provenance of a PolicyRunner step (apo_ros.control.policy_runner.RunnerStep)."""
    return ChunkInfo(int(step.chunk_index), int(step.latency_ns), str(step.merge),
                     int(step.tick_stamp_ns))


def names_and_values(action: Any, chunk: ChunkInfo | None) -> tuple[list[str], np.ndarray]:
    """The JointState names and positions of an action, with its provenance when given."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape[0] != ACTION_DIM:
        raise ValueError(f"action must have {ACTION_DIM} values {list(ACTION_NAMES)}, got {a.shape[0]}")
    if chunk is None:
        return list(ACTION_NAMES), a
    return list(ACTION_NAMES) + list(CHUNK_NAMES), np.concatenate([a, chunk.values()])


def split(names: Any, positions: Any) -> ChunkInfo | None:
    """The provenance in an action message's names / positions, None when it has none (a human
    action, an expert's, a bag written before it existed)."""
    names = list(names)
    tail = slice(ACTION_DIM, ACTION_DIM + len(CHUNK_NAMES))
    if tuple(names[tail]) != CHUNK_NAMES:
        index = {n: i for i, n in enumerate(names)}
        if not all(n in index for n in CHUNK_NAMES):
            return None
        values = [float(positions[index[n]]) for n in CHUNK_NAMES]
    else:
        values = [float(v) for v in positions[tail]]
    if not all(np.isfinite(values)):
        return None
    index_f, latency_s, merge_code, sec, nanosec = values
    return ChunkInfo(int(index_f), int(round(latency_s * NS)), MERGE_NAMES.get(int(merge_code), ""),
                     int(sec) * NS + int(nanosec))


def make_policy_action(types: Any, obs_stamp_ns: int, action: Any, source: str,
                       chunk: ChunkInfo | None):
    """An action message (see recording/schema.py) with its chunk provenance appended."""
    if chunk is None:
        return M.make_action(types, obs_stamp_ns, action, source)

    if source not in SOURCES:
        raise ValueError(f"action source must be one of {SOURCES}, got {source!r}")
    names, values = names_and_values(action, chunk)
    return M.make_joint_state(types, obs_stamp_ns, names, values, frame_id=source)


def at_tick(chunk: ChunkInfo | None, tick_stamp_ns: int) -> ChunkInfo | None:
    """The same provenance, naming the tick that executed the action."""
    if chunk is None:
        return None
    return ChunkInfo(chunk.chunk_index, chunk.latency_ns, chunk.merge, int(tick_stamp_ns))


def command_tick(names: Any, positions: Any, obs_stamp_ns: int) -> tuple[int, ChunkInfo | None]:
    """The tick a policy command is for (its provenance's tick stamp, else its header stamp: a
    command without provenance is for its own observation's tick) and the provenance."""
    chunk = split(names, positions)
    return (chunk.tick_stamp_ns if chunk is not None and chunk.tick_stamp_ns else obs_stamp_ns), chunk
