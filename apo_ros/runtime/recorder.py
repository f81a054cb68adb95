"""Episode lifecycle on top of the recording core: one bag per episode in a directory.

`EpisodeRecorder` opens a bag on `start()`, writes observations, executed actions (with their
source and observation stamp), intervention events and raw serialized messages, and closes it on
`success()` / `failure()` / `abort()`. The lifecycle is driven by the caller: the in-process
session, the recorder node's std_srvs services, or the operator's device buttons (`on_device`).

Bag names: `<bags_dir>/<YYYYmmdd-HHMMSS>_<task>_<NNN>` (local wall time, a per-recorder counter
so two episodes started in the same second never collide).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apo_ros.actions.space import SOURCES
from apo_ros.observation import CAMERAS, Observation
from apo_ros.recording.writer import EpisodeWriter
from apo_ros.teleop.device import DeviceState

INTERVENTION_EVENTS = ("intervention_start", "intervention_end")


@dataclass
class RecorderConfig:
    bags_dir: str = "bags"  # one bag directory per episode is created in here
    task: str = "task"  # task name: in the bag name and in custom_data
    cameras: tuple[str, ...] = CAMERAS  # camera names recorded (topics camera/<name>/image_raw)
    image_format: str = "raw"  # "raw" (sensor_msgs/Image) or "jpeg" (CompressedImage)
    distro: str = "humble"  # message definitions embedded in the bag: humble or jazzy
    operator: str = ""  # who supervised (custom_data "operator")
    flush_interval_s: float = 1.0  # wall seconds between forced chunk flushes (crash safety)
    start_button: int = -1  # device button that starts an episode (-1 = none)
    success_button: int = -1  # device button that ends it as a success (-1 = none)
    failure_button: int = -1  # ... as a failure (-1 = none)
    abort_button: int = -1  # ... as aborted (-1 = none)


@dataclass
class EpisodeRecord:
    """What one finished episode was."""

    path: str
    outcome: str
    steps: int  # executed actions written
    human_steps: int  # of which the operator made
    interventions: int  # intervention_start events written
    metadata: dict = field(default_factory=dict)


def episode_name(task: str, index: int, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    safe_task = re.sub(r"[^A-Za-z0-9_.-]+", "-", task).strip("-") or "task"
    return f"{stamp}_{safe_task}_{index:03d}"


class EpisodeRecorder:
    def __init__(self, config: RecorderConfig | None = None,
                 writer_factory: Callable[..., Any] | None = None):
        self.config = config or RecorderConfig()
        if writer_factory is None:
            writer_factory = EpisodeWriter
        self._factory = writer_factory
        self._writer: Any = None
        self._prev_buttons: tuple[int, ...] = ()
        self._in_intervention = False
        self._steps = self._human_steps = self._interventions = 0
        self._last_stamp = 0
        self.index = 0
        self.records: list[EpisodeRecord] = []
        Path(self.config.bags_dir).mkdir(parents=True, exist_ok=True)

    @property
    def active(self) -> bool:
        return self._writer is not None

    @property
    def interventions(self) -> int:
        """Interventions in the episode being recorded so far."""
        return self._interventions

    @property
    def path(self) -> str | None:
        return self._writer.path if self._writer is not None else None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, stamp_ns: int, *, instruction: str = "", policy_id: str = "",
              metadata: dict | None = None) -> str:
        """Open a new bag and write the `start` event. Raises if an episode is already open."""
        if self._writer is not None:
            raise RuntimeError(f"an episode is already being recorded ({self._writer.path}); "
                               "end it with success, failure or abort first")
        cfg = self.config
        self.index += 1
        path = Path(cfg.bags_dir) / episode_name(cfg.task, self.index)
        while path.exists():  # a previous run in the same second
            self.index += 1
            path = Path(cfg.bags_dir) / episode_name(cfg.task, self.index)
        meta = {"task": cfg.task, "instruction": instruction, "policy_id": policy_id,
                "operator": cfg.operator}
        meta.update(metadata or {})
        self._writer = self._factory(str(path), metadata=meta, cameras=tuple(cfg.cameras),
                                     image_format=cfg.image_format, distro=cfg.distro,
                                     flush_interval_s=cfg.flush_interval_s)
        self._in_intervention = False
        self._steps = self._human_steps = self._interventions = 0
        self._last_stamp = int(stamp_ns)
        self._writer.write_event(int(stamp_ns), "start")
        return str(path)

    def finish(self, outcome: str, stamp_ns: int | None = None,
               metadata: dict | None = None) -> EpisodeRecord:
        """End the episode: close an open intervention, write the terminal event, close the bag.
        `metadata` adds custom_data keys known only at the end (e.g. why it failed)."""
        if self._writer is None:
            raise RuntimeError("no episode is being recorded; start one first")
        stamp = self._last_stamp if stamp_ns is None else int(stamp_ns)
        writer, self._writer = self._writer, None
        if metadata and hasattr(writer, "metadata"):
            writer.metadata.update(metadata)
        try:
            if self._in_intervention:
                writer.write_event(stamp, "intervention_end")
                self._in_intervention = False
            if outcome in ("success", "failure", "abort"):
                writer.write_event(stamp, outcome)
        finally:
            writer.close(outcome)
        record = EpisodeRecord(writer.path, outcome, self._steps, self._human_steps,
                               self._interventions, dict(getattr(writer, "metadata", {})))
        self.records.append(record)
        return record

    def success(self, stamp_ns: int | None = None) -> EpisodeRecord:
        return self.finish("success", stamp_ns)

    def failure(self, stamp_ns: int | None = None) -> EpisodeRecord:
        return self.finish("failure", stamp_ns)

    def abort(self, stamp_ns: int | None = None) -> EpisodeRecord:
        return self.finish("abort", stamp_ns)

    def close(self) -> None:
        """Shutdown: an episode still open is closed as aborted (the bag stays readable)."""
        if self._writer is not None:
            self.abort()

    # ---- writing -----------------------------------------------------------------------------
    def _w(self) -> Any:
        if self._writer is None:
            raise RuntimeError("no episode is being recorded; start one first")
        return self._writer

    def record_observation(self, obs: Observation) -> None:
        self._w().write_observation(obs)
        self._last_stamp = max(self._last_stamp, int(obs.stamp_ns))

    def record_action(self, stamp_ns: int, action: np.ndarray, source: str, obs_stamp_ns: int,
                      proposed: np.ndarray | None = None, tokens: np.ndarray | None = None,
                      token_space: str = "", chunk: Any = None) -> None:
        """An executed action. Sources outside policy|human|expert (e.g. "none": a zero twist
        because nothing fresh was there) are not actions anyone chose and are not written.
        `chunk`: the policy action's provenance (recording.chunks.ChunkInfo), if any."""
        if source not in SOURCES:
            return
        if proposed is not None and not np.all(np.isfinite(proposed)):
            proposed = None  # a NaN proposal is logged by the filter counts, not in the bag
        extra = {"chunk": chunk} if chunk is not None else {}
        self._w().write_action(int(stamp_ns), action, source, int(obs_stamp_ns), proposed=proposed,
                               tokens=tokens if token_space else None, token_space=token_space, **extra)
        self._steps += 1
        self._human_steps += source == "human"
        self._last_stamp = max(self._last_stamp, int(stamp_ns))

    def record_event(self, stamp_ns: int, kind: str) -> None:
        """Episode events; intervention events are de-duplicated (start only when not in one)."""
        if kind == "intervention_start":
            if self._in_intervention:
                return
            self._in_intervention = True
            self._interventions += 1
        elif kind == "intervention_end":
            if not self._in_intervention:
                return
            self._in_intervention = False
        self._w().write_event(int(stamp_ns), kind)
        self._last_stamp = max(self._last_stamp, int(stamp_ns))

    def record_arbiter(self, stamp_ns: int, output: Any, source: str | None = None) -> None:
        """One arbiter tick: its intervention events, then the executed action. `source`
        overrides the arbiter's (the session records an expert's actions as "expert")."""
        for event in output.events:
            if event.kind in INTERVENTION_EVENTS:
                self.record_event(event.stamp_ns, event.kind)
        self.record_action(stamp_ns, output.action, source or output.source, output.obs_stamp_ns,
                           proposed=output.proposed)

    def record_serialized(self, topic: str, msgtype: str, stamp_ns: int, cdr: bytes) -> None:
        """Bytes serialized by rclpy go to the bag as they are (the recorder node)."""
        self._w().write_serialized(topic, msgtype, int(stamp_ns), cdr)
        self._last_stamp = max(self._last_stamp, int(stamp_ns))

    # ---- buttons -----------------------------------------------------------------------------
    def on_device(self, state: DeviceState, stamp_ns: int) -> str | None:
        """Lifecycle from device buttons (rising edges). Returns what happened, if anything."""
        cfg = self.config
        prev, self._prev_buttons = self._prev_buttons, state.buttons

        def pressed(i: int) -> bool:
            return i >= 0 and state.button(i) and not (i < len(prev) and prev[i])

        if not self.active and pressed(cfg.start_button):
            self.start(stamp_ns)
            return "start"
        if self.active:
            for outcome, button in (("success", cfg.success_button), ("failure", cfg.failure_button),
                                    ("abort", cfg.abort_button)):
                if pressed(button):
                    self.finish(outcome, stamp_ns)
                    return outcome
        return None
