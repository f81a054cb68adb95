"""The cores behind the ROS nodes' message handling (no rclpy here; tested with rosbags classes).

- `action_to_twist` / `twist_to_action`: the action space is a delta per control step; MoveIt
  Servo (and the sim arm node) take velocities, so twist = delta * control_hz.
- `cdr_header_stamp_ns`: the header stamp of a serialized stamped message, read from its CDR bytes,
  so the recorder node writes raw bytes at their observation time without deserializing images.
- `ObservationAssembler`: the latest camera images, joint state, end-effector pose, gripper state
  and instruction -> one `Observation` once every part is there and they belong together.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from apo_ros.actions.space import ACTION_DIM, GRIPPER_INDEX
from apo_ros.observation import CAMERAS, Observation
from apo_ros.recording import messages as M
from apo_ros.teleop.stamp_gate import StampGate

NS = 1_000_000_000


def action_to_twist(action: ArrayLike, control_hz: float) -> tuple[np.ndarray, np.ndarray, float]:
    """7-D action (delta per step) -> (linear m/s (3,), angular rad/s (3,), gripper 0..1)."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"action must have {ACTION_DIM} values, got {a.shape}")
    return a[:3] * control_hz, a[3:6] * control_hz, float(a[GRIPPER_INDEX])


def twist_to_action(linear: ArrayLike, angular: ArrayLike, gripper: float,
                    control_hz: float) -> np.ndarray:
    """(linear m/s, angular rad/s, gripper) -> 7-D action (delta per control step)."""
    out = np.empty(ACTION_DIM)
    out[:3] = np.asarray(linear, dtype=np.float64).reshape(3) / control_hz
    out[3:6] = np.asarray(angular, dtype=np.float64).reshape(3) / control_hz
    out[GRIPPER_INDEX] = float(gripper)
    return out


def cdr_header_stamp_ns(cdr: bytes | memoryview) -> int:
    """Header stamp of a serialized message whose first field is std_msgs/Header (Image,
    CompressedImage, JointState, PoseStamped, TwistStamped, Joy, ...). CDR = 4-byte encapsulation
    header (byte 1: 0 big-endian, 1 little-endian), then int32 sec, uint32 nanosec."""
    buf = bytes(cdr[:12])
    if len(buf) < 12 or buf[0] != 0 or buf[1] not in (0, 1):
        raise ValueError("not a CDR-serialized stamped message (bad encapsulation header)")
    sec, nanosec = struct.unpack("<iI" if buf[1] == 1 else ">iI", buf[4:12])
    return sec * NS + nanosec


@dataclass
class AssemblerConfig:
    cameras: tuple[str, ...] = CAMERAS  # cameras the policy needs
    max_skew_s: float = 0.1  # parts whose stamps differ by more than this do not belong together
    instruction: str = ""  # used until an instruction message arrives
    object_poses: bool = False  # the policy reads object poses: an observation needs them


class ObservationAssembler:
    """Latest-message store for the policy node's subscriptions (callbacks may run on other
    threads). `observation()` returns None until every part has arrived."""

    def __init__(self, config: AssemblerConfig | None = None):
        self.config = config or AssemblerConfig()
        self._lock = threading.Lock()
        self._images: dict[str, tuple[int, np.ndarray]] = {}
        self._joints: tuple[int, np.ndarray, tuple[str, ...]] | None = None
        self._ee: tuple[int, np.ndarray] | None = None
        self._gripper: tuple[int, float] | None = None
        self._objects: tuple[int, np.ndarray] | None = None
        self._instruction = self.config.instruction
        self._last_stamp = -1

    def on_image(self, camera: str, msg: Any) -> None:
        img = M.image_to_numpy(msg)
        with self._lock:
            self._images[camera] = (M.stamp_to_ns(msg.header), img)

    def on_joint_state(self, msg: Any) -> None:
        names, pos = M.joint_state_arrays(msg)
        with self._lock:
            self._joints = (M.stamp_to_ns(msg.header), pos, tuple(names))

    def on_ee_pose(self, msg: Any) -> None:
        with self._lock:
            self._ee = (M.stamp_to_ns(msg.header), M.pose_stamped_to_array(msg))

    def on_gripper(self, msg: Any) -> None:
        _, pos = M.joint_state_arrays(msg)
        if pos.size < 1:
            raise ValueError("gripper state message has no position")
        with self._lock:
            self._gripper = (M.stamp_to_ns(msg.header), float(pos[0]))

    def on_object_poses(self, msg: Any) -> None:
        poses = M.pose_array_to_array(msg)
        with self._lock:
            self._objects = (M.stamp_to_ns(msg.header), poses)

    def on_instruction(self, msg: Any) -> None:
        self.set_instruction(str(msg.data))

    def set_instruction(self, text: str) -> None:
        with self._lock:
            self._instruction = str(text)

    def observation(self, fresh_only: bool = True) -> Observation | None:
        """The newest complete observation (stamp = the oldest part's stamp, so its age is never
        understated); None if a part is missing, parts are too far apart, or (fresh_only) it is
        the same observation as last time."""
        with self._lock:
            missing = [c for c in self.config.cameras if c not in self._images]
            if missing or self._joints is None or self._ee is None or self._gripper is None:
                return None
            stamps = [self._images[c][0] for c in self.config.cameras]
            stamps += [self._joints[0], self._ee[0], self._gripper[0]]
            if self.config.object_poses:
                if self._objects is None:
                    return None
                stamps.append(self._objects[0])
            if max(stamps) - min(stamps) > self.config.max_skew_s * NS:
                return None
            stamp = min(stamps)
            if fresh_only and stamp == self._last_stamp:
                return None
            self._last_stamp = stamp
            extra = {"object_poses": self._objects[1]} if self.config.object_poses and self._objects else {}
            return Observation(images={c: self._images[c][1] for c in self.config.cameras},
                               joint_positions=self._joints[1], ee_pose=self._ee[1],
                               gripper=self._gripper[1], instruction=self._instruction,
                               stamp_ns=stamp, joint_names=self._joints[2], **extra)

    def missing(self) -> list[str]:
        """What has not arrived yet (for a 'waiting for ...' log line)."""
        with self._lock:
            out = [f"camera/{c}" for c in self.config.cameras if c not in self._images]
            out += [n for n, v in (("joint_states", self._joints), ("ee_pose", self._ee),
                                   ("gripper/state", self._gripper)) if v is None]
            if self.config.object_poses and self._objects is None:
                out.append("object_poses")
        return out


class CommandOnce:
    """Each command is executed once, then expires (the sim arm's input): `put` queues a command,
    `take` (once per control period) returns the oldest one not yet executed. Nothing queued, or
    only commands older than `timeout_s` (from receive time), reads as None: no motion, never a
    repeated command. A command that arrives just after a tick, followed by the next one before
    the following tick, is executed one period late instead of being lost (`late` counts them);
    at most `capacity` wait, the oldest beyond that is dropped (`dropped`), and `expired` counts
    commands too old when their turn came."""

    def __init__(self, timeout_s: float, capacity: int = 4):
        self.timeout_ns = int(timeout_s * NS)
        self.capacity = int(capacity)
        self._queue: deque[tuple[Any, int]] = deque()
        self._lock = threading.Lock()
        self.late = self.dropped = self.expired = 0

    def put(self, value: Any, now_ns: int) -> None:
        with self._lock:
            if self._queue:
                self.late += 1
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((value, now_ns))

    def take(self, now_ns: int) -> Any:
        with self._lock:
            while self._queue:
                value, rx_ns = self._queue.popleft()
                if now_ns - rx_ns <= self.timeout_ns:
                    return value
                self.expired += 1
            return None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()


class ControlSteps:
    """The arbiter node's clock: the arm's observations open control steps, and each step is
    decided exactly once.

    - `observe(stamp, now)`: a new observation opens a step; returns False when the previous step
      was still open (it ends undecided). Its stamp must be newer than the last, and not more
      than `tolerance_s` ahead of `now` (a future stamp would make every real observation after
      it look old, and stop the arm and the operator's take-over with it): ValueError otherwise.
      A stamp back near `now` after the last one drifted away (the sender's clock stepped back:
      a restarted driver, a reset simulation) starts the steps over (`StampGate`).
    - `accept(obs_stamp, now)`: a policy command decides the open step when it is for this step's
      observation window (newer than the previous step's observation and than the last command
      accepted: never the same command twice) and arrives within `deadline_s` of the step opening.
      Otherwise it is late or repeated and must be dropped.
    - `expired(now)`: the open step's deadline passed without a command.
    - `close()`: the step was decided.
    - `early(obs_stamp, command)`: a command for a step not yet open (it overtook its own
      observation on the way: a queued action is published the moment the observation is
      complete) is kept, the newest one only, and `take_early()` hands it over once `observe()`
      opened its step.
    """

    def __init__(self, deadline_s: float, tolerance_s: float = 0.5):
        self.deadline_ns = int(deadline_s * NS)
        self.gate = StampGate(tolerance_s)  # which stamps open a step; counts what was refused
        self.stamp = 0  # observation of the current step
        self._previous = 0  # observation of the step before
        self._opened_ns = 0
        self._last_command = 0
        self._early: tuple[int, Any] | None = None
        self.open = False

    def observe(self, stamp_ns: int, now_ns: int) -> bool:
        verdict = self.gate.check(int(stamp_ns), int(now_ns))
        if verdict == "future":
            raise ValueError(f"stamp {stamp_ns / NS:.3f} is {(stamp_ns - now_ns) / NS:.3f} s ahead of "
                             f"this node's clock (tolerance {self.gate.tolerance_s} s): not a step")
        if verdict == "old":
            raise ValueError(f"stamp {stamp_ns} is not newer than the last observation's ({self.stamp})")
        if verdict == "reset":  # the clock stepped back: what was before belongs to another time
            self.stamp = self._last_command = 0
            self._early = None
        was_closed = not self.open
        self._previous, self.stamp, self._opened_ns, self.open = self.stamp, int(stamp_ns), now_ns, True
        return was_closed

    def accept(self, obs_stamp_ns: int, now_ns: int) -> bool:
        if (not self.open or now_ns - self._opened_ns > self.deadline_ns
                or obs_stamp_ns <= max(self._previous, self._last_command)):
            return False
        self._last_command = int(obs_stamp_ns)
        return True

    def expired(self, now_ns: int) -> bool:
        return self.open and now_ns - self._opened_ns > self.deadline_ns

    def close(self) -> None:
        self.open = False

    def early(self, obs_stamp_ns: int, command: Any) -> bool:
        if obs_stamp_ns <= self.stamp:
            return False
        self._early = (int(obs_stamp_ns), command)
        return True

    def take_early(self) -> tuple[int, Any] | None:
        kept, self._early = self._early, None
        if kept is not None and kept[0] > self.stamp:
            self._early = kept  # for a step still to come
            return None
        return kept if kept is not None and kept[0] == self.stamp else None
