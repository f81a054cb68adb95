"""What the simulated arm does with the twists it receives (the sim arm node's input), as a servo
driver would: a queue that never falls behind, speed limits, and the command's frame.

- `TwistQueue`: each twist is applied once, for one control period, then expires. When more than
  one waits at a tick, the arm is behind (the sender stalled, then sent a burst, or a twist
  arrived just after its tick): the newest is applied and the older ones are superseded (counted),
  so the delay from command to motion returns to one period at the next tick instead of staying
  longer for good. Late commands are dropped, never shifted. A twist older than `timeout_s` (from
  receipt) is never applied (MoveIt Servo's incoming_command_timeout).
- `limit_speed`: a twist faster than the limits is scaled down along its direction (a corrupt
  1e6 m/s command moves the tool at most max_linear / control_hz in one period).
- `to_base_frame`: twists come in the base frame (frame_id "" or the base's name) or in the tool
  frame (rotated into the base by the tool's orientation); any other frame is refused.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

NS = 1_000_000_000


class TwistQueue:
    def __init__(self, timeout_s: float, capacity: int = 4):
        self.timeout_ns = int(timeout_s * NS)
        self.capacity = int(capacity)
        self._queue: deque[tuple[Any, int]] = deque()
        self._lock = threading.Lock()
        self.applied = self.superseded = self.expired = 0

    def put(self, value: Any, now_ns: int) -> None:
        with self._lock:
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self.superseded += 1
            self._queue.append((value, now_ns))

    def take(self, now_ns: int) -> Any:
        """The twist to apply this tick (None: no motion)."""
        with self._lock:
            fresh = [(v, rx) for v, rx in self._queue if now_ns - rx <= self.timeout_ns]
            self.expired += len(self._queue) - len(fresh)
            self._queue.clear()
            if not fresh:
                return None
            self.superseded += len(fresh) - 1
            self.applied += 1
            return fresh[-1][0]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def set_timeout(self, timeout_s: float) -> None:
        self.timeout_ns = int(timeout_s * NS)


def limit_speed(linear: ArrayLike, angular: ArrayLike, max_linear: float,
                max_angular: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """(linear, angular, limited): each part scaled down to its limit along its direction."""
    lin = np.asarray(linear, dtype=np.float64).reshape(3)
    ang = np.asarray(angular, dtype=np.float64).reshape(3)
    if not (np.all(np.isfinite(lin)) and np.all(np.isfinite(ang))):
        raise ValueError("twist has non-finite values")
    limited = False
    for vec, limit in ((lin, max_linear), (ang, max_angular)):
        norm = float(np.linalg.norm(vec))
        if norm > limit:
            vec *= limit / norm
            limited = True
    return lin, ang, limited


def quat_to_matrix(q: ArrayLike) -> np.ndarray:
    """Rotation matrix of a quaternion [qx, qy, qz, qw]."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def to_base_frame(frame_id: str, linear: ArrayLike, angular: ArrayLike, base_frame: str,
                  tool_frame: str, tool_quat: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """A twist given in `frame_id`, expressed in the base frame."""
    lin = np.asarray(linear, dtype=np.float64).reshape(3)
    ang = np.asarray(angular, dtype=np.float64).reshape(3)
    if frame_id in ("", base_frame):
        return lin, ang
    if frame_id == tool_frame:
        rot = quat_to_matrix(tool_quat)
        return rot @ lin, rot @ ang
    raise ValueError(f"twist in frame {frame_id!r}: this arm takes {base_frame!r} or {tool_frame!r}")


class ServoInput:
    """The sim arm's command input: twists in the base or tool frame, speed-limited, queued
    (`TwistQueue`). Values are (stamp_ns, linear, angular) in the base frame. The attributes may
    change at run time (the node's parameters)."""

    def __init__(self, timeout_s: float, base_frame: str, tool_frame: str, max_linear: float,
                 max_angular: float):
        self.queue = TwistQueue(timeout_s)
        self.base_frame, self.tool_frame = base_frame, tool_frame
        self.max_linear, self.max_angular = max_linear, max_angular
        self.tool_quat = np.array([0.0, 0.0, 0.0, 1.0])  # the tool's orientation, [qx, qy, qz, qw]
        self.limited = 0  # twists scaled down to the limits

    def put(self, stamp_ns: int, frame_id: str, linear: ArrayLike, angular: ArrayLike,
            now_ns: int) -> bool:
        """Queue a received twist; True when it was scaled down to the limits. ValueError (not
        queued) for a non-finite twist or an unknown frame."""
        lin, ang = to_base_frame(frame_id, linear, angular, self.base_frame, self.tool_frame,
                                 self.tool_quat)
        lin, ang, limited = limit_speed(lin, ang, self.max_linear, self.max_angular)
        self.limited += limited
        self.queue.put((int(stamp_ns), lin, ang), now_ns)
        return limited

    def take(self, now_ns: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        return self.queue.take(now_ns)

    SETTINGS = ("command_timeout_s", "frame_id", "tool_frame_id", "max_linear_speed",
                "max_angular_speed")

    def set(self, name: str, value: Any) -> None:
        """Change one setting (a parameter of the node) at run time; ValueError refuses it."""
        if name == "command_timeout_s":
            self.queue.set_timeout(float(value))
        elif name in ("frame_id", "tool_frame_id"):
            if not str(value):
                raise ValueError("a frame needs a name")
            setattr(self, "base_frame" if name == "frame_id" else "tool_frame", str(value))
        elif name in ("max_linear_speed", "max_angular_speed"):
            setattr(self, "max_linear" if name == "max_linear_speed" else "max_angular", float(value))
        else:
            raise ValueError(f"no setting {name!r}")
