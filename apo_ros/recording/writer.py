"""EpisodeWriter: one rosbag2 bag (MCAP, zstd chunks, metadata version 8) per episode.

Message objects (the simulator session) and already-serialized CDR (the ROS recorder node) take
one path: objects are serialized, then everything goes through `write_serialized`.

Crash safety: the bag is written in chunks; `flush()` closes the pending chunk and hands it to
the OS, and the writer flushes by itself every `flush_interval_s` of wall time and at every
episode event, so a `kill -9` loses at most that much (repair with `apo-ros bags repair`).
SIGINT / SIGTERM close the episode cleanly with outcome "abort" when `close_on_signals=True`
(or after `install_signal_handlers(writer)`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from apo_ros import __version__
from apo_ros.actions.space import ACTION_DIM, ACTION_NAMES, SOURCES
from apo_ros.observation import CAMERAS, Observation
from apo_ros.recording import messages as M
from apo_ros.recording import schema
from apo_ros.recording.chunks import make_policy_action
from apo_ros.recording.episode import OUTCOMES

log = logging.getLogger(__name__)

METADATA_KEYS = ("task", "instruction", "policy_id", "operator", "stats_id")


class StampOutsideEpisode(ValueError):
    """A message stamped before the episode began (a zero or uninitialised stamp, a clock from
    another machine): it is not written, or the bag would start decades early."""


def _to_custom_str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


class EpisodeWriter:
    """Write one episode as one rosbag2 bag.

    Usage:
        with EpisodeWriter("bags/ep_0001", metadata={"task": "lift", "instruction": "lift the cube",
                                                     "policy_id": "ckpt-3"}) as w:
            w.write_event(t0, "start")
            w.write_observation(obs)
            w.write_action(t_exec, action, "policy", obs.stamp_ns, proposed=action)
            ...
            w.close("success")
    Leaving the `with` block without close() closes with outcome "unknown" (or "abort" on an
    exception).
    """

    def __init__(
        self,
        path: str,
        *,
        metadata: dict | None = None,  # task, instruction, policy_id, operator, stats_id, ... (any keys)
        cameras: tuple[str, ...] = CAMERAS,  # camera names: topics camera/<name>/image_raw[/compressed]
        image_format: str = "raw",  # "raw" (sensor_msgs/Image rgb8) or "jpeg" (CompressedImage)
        distro: str = "humble",  # typestore for message definitions / hashes: "humble" or "jazzy"
        jpeg_quality: int = 90,  # OpenCV JPEG quality when image_format == "jpeg"
        flush_interval_s: float = 1.0,  # wall seconds between forced chunk flushes (0 = only at 1 MiB)
        close_on_signals: bool = False,  # install SIGINT/SIGTERM handlers that close with "abort"
        stamp_tolerance_s: float = 1.0,  # stamps this much before the first one are still written
    ) -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        if image_format not in schema.IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {schema.IMAGE_FORMATS}, got {image_format!r}")
        self.path = str(path)
        self.metadata = dict(metadata or {})
        self.cameras = tuple(cameras)
        self.image_format = image_format
        self.distro = distro
        self.jpeg_quality = int(jpeg_quality)
        self.flush_interval_s = float(flush_interval_s)
        self.types = M.rosbags_types(distro)
        self.typestore = self.types.typestore
        self.closed = False
        self.outcome: str | None = None
        self.counts: dict[str, int] = {}
        self.events: list[tuple[int, str]] = []

        if Path(self.path).exists():
            raise FileExistsError(f"{self.path}: already exists; an episode bag is never overwritten")
        self._writer = Writer(self.path, version=8, storage_plugin=StoragePlugin.MCAP)
        self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self._msgtypes: dict[str, str] = {}
        for spec in schema.topics(self.cameras, self.image_format):
            self._add_connection(spec.topic, spec.msgtype, spec.qos)

        self._lock = threading.RLock()
        self._owner: int | None = None  # thread inside a guarded call (signal deferral)
        self._depth = 0
        self._pending_signal: int | None = None
        self._restore_signals: Callable[[], None] | None = None
        self._started = False
        self._first_stamp = 0
        self._last_stamp = 0
        self.stamp_tolerance_ns = int(stamp_tolerance_s * 1e9)
        self.rejected: dict[str, int] = {}  # messages not written per topic: stamp outside the episode
        self._last_instruction: str | None = None
        self._last_flush = time.monotonic()
        if close_on_signals:
            self._restore_signals = install_signal_handlers(self)

    # --- connections ------------------------------------------------------------------------------

    def _add_connection(self, topic: str, msgtype: str, qos=None):
        conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                           offered_qos_profiles=[qos or schema.QOS_DEFAULT])
        self._connections[topic] = conn
        self._msgtypes[topic] = msgtype
        self.counts[topic] = 0
        return conn

    # --- the one write path -----------------------------------------------------------------------

    def write_serialized(self, topic: str, msgtype: str, stamp_ns: int, cdr: bytes | memoryview,
                         *, qos=None) -> None:
        """Write one CDR-serialized message (4-byte encapsulation header included, as rclpy's
        `serialize_message` gives it) at bag time `stamp_ns`. Topics outside the schema are
        added on first use (the type must be a standard one known to the typestore)."""
        with self._guard():
            if self.closed:
                raise RuntimeError(f"{self.path}: episode already closed")
            conn = self._connections.get(topic)
            if conn is None:
                if msgtype not in self.typestore.types:
                    raise ValueError(f"{topic}: message type {msgtype!r} is not a standard type "
                                     f"known to the {self.distro} typestore")
                conn = self._add_connection(topic, msgtype, qos)
            elif self._msgtypes[topic] != msgtype:
                raise ValueError(f"{topic}: expected {self._msgtypes[topic]}, got {msgtype}")
            stamp_ns = int(stamp_ns)
            self._check_stamp(topic, stamp_ns)
            self._ensure_started(stamp_ns)
            self._writer.write(conn, stamp_ns, cdr)
            self.counts[topic] += 1
            self._last_stamp = max(self._last_stamp, stamp_ns)
            if self.flush_interval_s > 0 and time.monotonic() - self._last_flush > self.flush_interval_s:
                self._flush_locked()

    def _check_stamp(self, topic: str, stamp_ns: int) -> None:
        """The episode begins at the first stamp written (the recorder's start event); a message
        stamped more than stamp_tolerance_s before it (or negative) is rejected, counted in
        `rejected` and in custom_data, and reported once per topic."""
        earliest = self._first_stamp - self.stamp_tolerance_ns if self._started else 0
        if stamp_ns >= max(earliest, 0):
            return
        n = self.rejected[topic] = self.rejected.get(topic, 0) + 1
        problem = (f"{topic}: stamp {stamp_ns / 1e9:.3f} s is before the episode began "
                   f"({self._first_stamp / 1e9:.3f} s); not written")
        if n == 1:
            log.warning("%s: %s", self.path, problem)
        raise StampOutsideEpisode(problem)

    @contextlib.contextmanager
    def _guard(self):
        """Hold the writer lock; a signal arriving meanwhile on this thread is deferred until the
        outermost guarded call returns (closing in the middle of a write would corrupt the chunk)."""
        with self._lock:
            self._depth += 1
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
        if (self._pending_signal is not None and self._depth == 0
                and threading.current_thread() is threading.main_thread()):
            signum, self._pending_signal = self._pending_signal, None
            self._close_from_signal(signum)

    def write_message(self, topic: str, msg: Any, stamp_ns: int) -> None:
        """Serialize a rosbags message object and write it (same path as CDR input)."""
        msgtype = msg.__msgtype__
        self.write_serialized(topic, msgtype, stamp_ns, self.typestore.serialize_cdr(msg, msgtype))

    def _ensure_started(self, stamp_ns: int) -> None:
        # Latched facts go first, at the first stamp, so a crashed bag still carries them.
        if self._started:
            return
        self._started = True
        self._first_stamp = stamp_ns
        info = {k: _to_custom_str(v) for k, v in self._custom_data("unknown").items()}
        self._write_msg_nolock(schema.EPISODE_INFO, M.make_string(self.types, json.dumps(info)), stamp_ns)
        instruction = self.metadata.get("instruction")
        if instruction:
            self._write_instruction_nolock(str(instruction), stamp_ns)

    def _write_msg_nolock(self, topic: str, msg: Any, stamp_ns: int) -> None:
        conn = self._connections[topic]
        self._writer.write(conn, stamp_ns, self.typestore.serialize_cdr(msg, msg.__msgtype__))
        self.counts[topic] += 1

    def _write_instruction_nolock(self, text: str, stamp_ns: int) -> None:
        self._last_instruction = text
        self._write_msg_nolock(schema.INSTRUCTION, M.make_string(self.types, text), stamp_ns)

    # --- observations -----------------------------------------------------------------------------

    def write_image(self, camera: str, stamp_ns: int, image: np.ndarray) -> None:
        if camera not in self.cameras:
            raise ValueError(f"unknown camera {camera!r}; this episode records {self.cameras}")
        if self.image_format == "jpeg":
            msg = M.make_compressed_image(self.types, stamp_ns, image, frame_id=camera,
                                          quality=self.jpeg_quality)
        else:
            msg = M.make_image(self.types, stamp_ns, image, frame_id=camera)
        self.write_message(schema.image_topic(camera, self.image_format), msg, stamp_ns)

    def write_joint_state(self, stamp_ns: int, positions, names=()) -> None:
        self.write_message(schema.JOINT_STATES, M.make_joint_state(self.types, stamp_ns, names, positions),
                           stamp_ns)

    def write_ee_pose(self, stamp_ns: int, pose) -> None:
        self.write_message(schema.EE_POSE, M.make_pose_stamped(self.types, stamp_ns, pose), stamp_ns)

    def write_object_poses(self, stamp_ns: int, poses) -> None:
        self.write_message(schema.OBJECT_POSES, M.make_pose_array(self.types, stamp_ns, poses), stamp_ns)

    def write_gripper(self, stamp_ns: int, opening: float) -> None:
        self.write_message(schema.GRIPPER_STATE, M.make_gripper_state(self.types, stamp_ns, opening),
                           stamp_ns)

    def write_instruction(self, stamp_ns: int, text: str) -> None:
        self.write_message(schema.INSTRUCTION, M.make_string(self.types, text), stamp_ns)
        self._last_instruction = text

    def write_observation(self, obs: Observation) -> None:
        """Cameras, joint states, end-effector pose, gripper and object poses (when known), all
        stamped obs.stamp_ns (header stamp and bag time); the instruction too when it changed."""
        stamp = int(obs.stamp_ns)
        missing = [c for c in self.cameras if c not in obs.images]
        if missing:
            raise ValueError(f"observation at {stamp} lacks camera images {missing}")
        if obs.instruction and not self._started:
            self.metadata.setdefault("instruction", obs.instruction)
        with self._guard():
            self._ensure_started(stamp)
        if obs.instruction and obs.instruction != self._last_instruction:
            self.write_instruction(stamp, obs.instruction)
        for camera in self.cameras:
            self.write_image(camera, stamp, obs.images[camera])
        joints = np.asarray(obs.joint_positions, dtype=np.float64).reshape(-1)
        names = list(obs.joint_names) or [f"joint_{i}" for i in range(joints.shape[0])]
        self.write_joint_state(stamp, joints, names)
        self.write_ee_pose(stamp, obs.ee_pose)
        self.write_gripper(stamp, float(obs.gripper))
        if len(obs.object_poses):
            self.write_object_poses(stamp, obs.object_poses)

    # --- actions ----------------------------------------------------------------------------------

    def write_action(self, stamp_ns: int, action, source: str, obs_stamp_ns: int,
                     proposed=None, tokens=None, token_space: str = "", chunk=None) -> None:
        """The executed action (after the safety filter) at its execution time `stamp_ns`, naming
        its source and the stamp of the observation it was computed from. `proposed`: what the
        policy proposed for that observation (also when the human overrode it); `tokens`: the
        token ids the policy produced for that proposal, in `token_space` (written only with a
        proposal, see schema.ACTION_TOKENS). `chunk`: a recording.chunks.ChunkInfo (index in its
        chunk, latency, merge rule, executing tick)."""
        action = _check_action(action, "action")
        if source not in SOURCES:
            raise ValueError(f"action source must be one of {SOURCES}, got {source!r}")
        if proposed is not None:
            self.write_proposed(stamp_ns, proposed, obs_stamp_ns)
            if tokens is not None:
                self.write_tokens(stamp_ns, tokens, obs_stamp_ns, token_space)
        # chunk provenance (recording/chunks.py): appended names, None = the plain action message
        self.write_message(schema.ACTION_EXECUTED,
                           make_policy_action(self.types, obs_stamp_ns, action, source, chunk),
                           stamp_ns)

    def write_proposed(self, stamp_ns: int, proposed, obs_stamp_ns: int) -> None:
        proposed = _check_action(proposed, "proposed action")
        self.write_message(schema.ACTION_PROPOSED,
                           M.make_action(self.types, obs_stamp_ns, proposed, "policy"), stamp_ns)

    def write_tokens(self, stamp_ns: int, tokens, obs_stamp_ns: int, token_space: str) -> None:
        """The token ids of the proposal just written for `obs_stamp_ns` (schema.ACTION_TOKENS)."""
        self.write_message(schema.ACTION_TOKENS,
                           M.make_action_tokens(self.types, obs_stamp_ns, tokens, token_space), stamp_ns)

    def write_human_command(self, stamp_ns: int, action, obs_stamp_ns: int) -> None:
        """The operator's command (e.g. the SpaceMouse mapped to the action space), recorded
        whether or not the arbiter executed it."""
        action = _check_action(action, "human command")
        self.write_message(schema.ACTION_HUMAN, M.make_action(self.types, obs_stamp_ns, action, "human"),
                           stamp_ns)

    # --- events -----------------------------------------------------------------------------------

    def write_event(self, stamp_ns: int, kind: str) -> None:
        """start | success | failure | abort | intervention_start | intervention_end. Flushes the
        pending chunk so the event survives a crash."""
        if kind not in schema.EVENT_KINDS:
            raise ValueError(f"event kind must be one of {schema.EVENT_KINDS}, got {kind!r}")
        self.write_message(schema.EPISODE_EVENTS, M.make_string(self.types, kind), stamp_ns)
        self.events.append((int(stamp_ns), kind))
        self.flush()

    # --- flushing / closing -----------------------------------------------------------------------

    def flush(self) -> None:
        """Close the pending MCAP chunk and hand the file's buffer to the OS: what was written so
        far survives a kill -9 (repairable)."""
        with self._guard():
            if not self.closed:
                self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        storage = self._writer.storage
        # rosbags' MCAP writer keeps the pending chunk in memory until it passes 1 MiB; closing
        # it early is the only way to bound what a crash loses. Guarded: if a future rosbags
        # changes these internals, flushing degrades to the 1 MiB chunks.
        chunk = getattr(storage, "chunk", None)
        close_chunk = getattr(storage, "close_chunk", None)
        try:
            if chunk is not None and close_chunk is not None and chunk.msgs:
                close_chunk()
            bio = getattr(storage, "bio", None)
            if bio is not None:
                bio.flush()
        except (AttributeError, TypeError) as err:  # pragma: no cover - rosbags internals changed
            log.warning("cannot flush MCAP chunk early (%s); relying on 1 MiB chunks", err)
            self.flush_interval_s = 0.0

    def _custom_data(self, outcome: str) -> dict[str, str]:
        data = {k: _to_custom_str(v) for k, v in self.metadata.items()}
        for key in METADATA_KEYS:
            data.setdefault(key, "")
        data.update({
            "outcome": outcome,
            "apo_ros_version": __version__,
            "cameras": ",".join(self.cameras),
            "image_format": self.image_format,
            "truncated": "false",
            "schema_version": schema.SCHEMA_VERSION,
            "action_names": ",".join(ACTION_NAMES),
            "distro": self.distro,
        })
        if self.rejected:
            data["rejected_stamps"] = json.dumps(self.rejected, sort_keys=True)
        return data

    def close(self, outcome: str = "unknown") -> None:
        """Write a terminal event (if the outcome is success / failure / abort and none was
        written), custom_data, the MCAP summary and metadata.yaml. Idempotent."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        with self._guard():
            if self.closed:
                return
            try:
                if outcome in schema.TERMINAL_EVENTS and not any(
                        k in schema.TERMINAL_EVENTS for _, k in self.events):
                    stamp = self._last_stamp
                    self._ensure_started(stamp)
                    self._write_msg_nolock(schema.EPISODE_EVENTS, M.make_string(self.types, outcome), stamp)
                    self.events.append((stamp, outcome))
                for key, value in self._custom_data(outcome).items():
                    self._writer.set_custom_data(str(key), value)
                self._writer.close()
            except BaseException:
                self._writer.abort()
                raise
            finally:
                self.closed = True
                self.outcome = outcome
                if self._restore_signals is not None:
                    self._restore_signals()
                    self._restore_signals = None

    def abort(self) -> None:
        """Stop without a summary (what a crash leaves; `apo-ros bags repair` salvages it)."""
        with self._guard():
            if not self.closed:
                self.closed = True
                self._writer.abort()

    # --- signals ----------------------------------------------------------------------------------

    def close_from_signal(self, signum: int) -> bool:
        """Called by the signal handler: close with "abort" now, or, when the signal arrived in
        the middle of a write on this thread, right after that write. Returns True if closed now."""
        if self._owner == threading.get_ident():
            self._pending_signal = signum
            return False
        self._close_from_signal(signum, raise_after=False)
        return True

    def _close_from_signal(self, signum: int, raise_after: bool = True) -> None:
        self.close("abort")
        log.warning("%s: closed on %s (outcome abort)", self.path, signal.Signals(signum).name)
        if raise_after:
            _raise_for_signal(signum)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.closed:
            self.close("abort" if exc_type is not None else "unknown")


def _check_action(values, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.shape[0] != ACTION_DIM:
        raise ValueError(f"{name} must have {ACTION_DIM} values {list(ACTION_NAMES)}, got shape "
                         f"{np.shape(values)}")
    return a


def _raise_for_signal(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_handlers(target: Any, signals=(signal.SIGINT, signal.SIGTERM)) -> Callable[[], None]:
    """Make SIGINT / SIGTERM close `target` (an EpisodeWriter or any object with
    `close(outcome)`) with outcome "abort", then interrupt the program as the signal would
    (KeyboardInterrupt for SIGINT, SystemExit(128 + signum) otherwise). Returns a function that
    restores the previous handlers. Must be called from the main thread (Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal handlers can only be installed from the main thread")
    previous = {s: signal.getsignal(s) for s in signals}

    def restore() -> None:
        for s, handler in previous.items():
            if signal.getsignal(s) is _handler:
                signal.signal(s, handler)

    def _handler(signum, frame) -> None:
        closer = getattr(target, "close_from_signal", None)
        if closer is not None:
            if not closer(signum):
                return  # deferred: the interrupted write closes and raises when it finishes
        else:
            target.close("abort")
        restore()
        _raise_for_signal(signum)

    for s in signals:
        signal.signal(s, _handler)
    return restore
