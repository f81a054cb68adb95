"""The operator's input device, as the arbiter sees it.

Every device (SpaceMouse over HID, `spacenav`'s sensor_msgs/Joy, a scripted timeline in tests, the
simulated operator in the in-process session) is read through one small interface:
`read() -> DeviceState` and `close()`.

Axes follow the ROS convention (REP 103, as `geometry_msgs/Twist`): `[vx, vy, vz, wx, wy, wz]`,
x forward, y left, z up, each in [-1, 1] (full deflection = +-1).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

AXIS_NAMES: tuple[str, ...] = ("vx", "vy", "vz", "wx", "wy", "wz")
N_AXES = len(AXIS_NAMES)


@dataclass(frozen=True)
class DeviceState:
    """One snapshot of the device (immutable: safe to keep and compare)."""

    t: float = -1.0  # time of the latest report on the device's clock, seconds; changes on every
    #                  new report, so a reader can tell a fresh state from a repeated one
    axes: tuple[float, ...] = field(default=(0.0,) * N_AXES)  # [vx, vy, vz, wx, wy, wz] in [-1, 1]
    buttons: tuple[int, ...] = ()  # 0/1 per button, device order (SpaceMouse: 0 = left, 1 = right)
    connected: bool = True  # False once the device is gone (unplugged, driver stopped)

    def __post_init__(self) -> None:
        if len(self.axes) != N_AXES:
            raise ValueError(f"DeviceState.axes needs {N_AXES} values {list(AXIS_NAMES)}, "
                             f"got {len(self.axes)}")

    def button(self, index: int | None) -> bool:
        """True when button `index` is pressed (False for a missing button or index None/-1)."""
        return index is not None and 0 <= index < len(self.buttons) and bool(self.buttons[index])

    def max_deflection(self) -> float:
        return max(abs(a) for a in self.axes)


DISCONNECTED = DeviceState(t=-1.0, connected=False)


class DeviceUnavailable(RuntimeError):
    """The device cannot be opened or read; the message says how to fix it."""


class TeleopDevice(abc.ABC):
    """An operator input device."""

    name: str = "device"

    @abc.abstractmethod
    def read(self) -> DeviceState:
        """The latest state (never blocks for long). A lost device returns `connected=False`."""

    def close(self) -> None:
        """Release the device (idempotent)."""
        return None

    def __enter__(self) -> TeleopDevice:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def apply_deadzone(value: float, deadzone: float) -> float:
    """Zero inside +-deadzone, rescaled outside so the output still spans [-1, 1] without a jump."""
    mag = abs(value)
    if mag <= deadzone:
        return 0.0
    out = (mag - deadzone) / (1.0 - deadzone) if deadzone < 1.0 else 0.0
    return min(out, 1.0) * (1.0 if value > 0 else -1.0)


def condition_axes(raw: tuple[float, ...] | list[float], *, scale: tuple[float, ...] | float = 1.0,
                   deadzone: float = 0.0, sign: tuple[float, ...] | None = None) -> tuple[float, ...]:
    """Scale, sign-flip, deadzone and clip six raw axes into [-1, 1]."""
    scales = (float(scale),) * N_AXES if isinstance(scale, (int, float)) else tuple(scale)
    signs = sign or (1.0,) * N_AXES
    out = []
    for value, s, g in zip(raw, scales, signs):
        v = float(value) * s * g
        if v != v:  # NaN from a broken report: treat as no deflection, never as motion
            v = 0.0
        v = max(-1.0, min(1.0, v))
        out.append(apply_deadzone(v, deadzone))
    return tuple(out)
