"""The SpaceMouse through the `spacenav` ROS driver: sensor_msgs/Joy on `spacenav/joy`.

spacenav publishes axes `[vx, vy, vz, wx, wy, wz]` already divided by its `full_scale` parameter
(512 by default; a full deflection reads about +-0.7), then the buttons. It publishes on events
only (and zeros after a static period), so a missing message means "nothing changed", not "lost".
`JoyDevice` keeps the latest message and serves it through the `TeleopDevice` interface; the node
feeds it from its subscription callback. Works with rclpy and rosbags Joy classes (same fields).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from apo_ros.teleop.device import N_AXES, DeviceState, TeleopDevice, condition_axes


@dataclass
class JoyConfig:
    axis_map: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # Joy axis index for [vx, vy, vz, wx, wy, wz]
    scale: tuple[float, ...] = field(default=(1.0,) * N_AXES)  # per-axis gain (1/0.7 = full range)
    deadzone: float = 0.05  # |axis| below this reads as 0
    sign: tuple[float, ...] = field(default=(1.0,) * N_AXES)  # per-axis sign flips
    lost_timeout_s: float = 0.0  # > 0: no message for this long = device lost (needs a driver that
    #                              publishes periodically); 0 = never (spacenav publishes on events)


def joy_to_state(msg: Any, t: float, config: JoyConfig | None = None) -> DeviceState:
    """sensor_msgs/Joy -> DeviceState (t = when it was received, seconds)."""
    cfg = config or JoyConfig()
    axes_in = list(msg.axes)
    if max(cfg.axis_map) >= len(axes_in):
        raise ValueError(f"Joy message has {len(axes_in)} axes, the axis map needs index "
                         f"{max(cfg.axis_map)} (spacenav publishes 6)")
    raw = [float(axes_in[i]) for i in cfg.axis_map]
    if not all(math.isfinite(a) for a in raw):  # NaN would read as "no deflection"
        raise ValueError(f"Joy axes {raw} are not all finite")
    axes = condition_axes(raw, scale=cfg.scale, deadzone=cfg.deadzone, sign=cfg.sign)
    return DeviceState(t=float(t), axes=axes, buttons=tuple(int(b) for b in msg.buttons),
                       connected=True)


class JoyDevice(TeleopDevice):
    """Latest Joy message as a device. `on_joy` may be called from another thread."""

    name = "joy"

    def __init__(self, config: JoyConfig | None = None):
        self.config = config or JoyConfig()
        self._lock = threading.Lock()
        self._state = DeviceState(t=-1.0, connected=True)
        self._received_at: float | None = None

    def on_joy(self, msg: Any, now_s: float) -> DeviceState:
        state = joy_to_state(msg, now_s, self.config)
        with self._lock:
            self._state = state
            self._received_at = now_s
        return state

    def read(self, now_s: float | None = None) -> DeviceState:
        with self._lock:
            state, received = self._state, self._received_at
        lost = self.config.lost_timeout_s
        if lost > 0 and now_s is not None and received is not None and now_s - received > lost:
            return DeviceState(t=state.t, connected=False)
        return state
