"""The operator's device by name, as the arbiter node's `device` parameter gives it."""

from __future__ import annotations

from apo_ros.teleop.device import TeleopDevice
from apo_ros.teleop.joy import JoyConfig, JoyDevice
from apo_ros.teleop.spacemouse import SpaceMouse, SpaceMouseConfig


def open_device(kind: str, *, scale: tuple[float, ...], deadzone: float,
                sign: tuple[float, ...]) -> TeleopDevice:
    """The operator's device by name: "spacemouse" (pyspacemouse over HID; raises
    DeviceUnavailable with the fix when there is none) or "joy" (the spacenav driver's
    sensor_msgs/Joy, fed by the node's subscription)."""
    if kind == "joy":
        return JoyDevice(JoyConfig(scale=tuple(scale), deadzone=float(deadzone), sign=tuple(sign)))
    if kind == "spacemouse":
        return SpaceMouse(SpaceMouseConfig(scale=tuple(scale), deadzone=float(deadzone), sign=tuple(sign)))
    raise ValueError(f"device must be 'spacemouse' or 'joy', got {kind!r}")
