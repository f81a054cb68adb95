"""A 3Dconnexion SpaceMouse read directly over HID with pyspacemouse 2.1.

pyspacemouse's `read()` consumes ONE HID report per call and returns the library's single shared,
mutable state object. Each report carries either the translation, the rotation or the buttons, and
the device sends reports faster than a 10-50 Hz control loop reads them, so reading once per
control step lags further and further behind. `SpaceMouse.read()` therefore drains: it reads until
the state's timestamp stops changing (no report left), then copies the state into an immutable
`DeviceState`.

Needs the hidapi C library. pyspacemouse imports without it, and every device call then raises
RuntimeError; both that and "no device" become `DeviceUnavailable` with the fix in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apo_ros.teleop.device import N_AXES, DeviceState, DeviceUnavailable, TeleopDevice, condition_axes

# 3Dconnexion's USB vendor id (the older Logitech-made ones use 046d).
VENDOR_ID = "256f"
UDEV_RULE = ('KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0660", GROUP="plugdev", '
             'TAG+="uaccess"')
FIX_HIDAPI = (
    "the hidapi C library is missing: install it with `sudo apt install libhidapi-hidraw0` "
    "(or libhidapi-dev; macOS: `brew install hidapi`), then retry"
)
FIX_DEVICE = (
    "no SpaceMouse found: plug it in (3Dconnexion, USB vendor 256f); if it is plugged in, your user "
    "cannot open /dev/hidraw*: add the udev rule\n"
    f"    {UDEV_RULE}\n"
    "to /etc/udev/rules.d/99-spacemouse.rules, run `sudo udevadm control --reload-rules && "
    "sudo udevadm trigger`, add yourself to the plugdev group and replug the device. "
    "Stop spacenavd first if it owns the device (or use the `spacenav` ROS driver + JoyDevice)"
)

# At most this many reports are drained per read(): a device streaming faster than we can read
# must not pin the control loop.
MAX_DRAIN = 256


@dataclass
class SpaceMouseConfig:
    device: str | None = None  # pyspacemouse device name (None = the first connected SpaceMouse)
    device_index: int = 0  # which one when several of the same model are connected
    scale: tuple[float, ...] = field(default=(1.0,) * N_AXES)  # per-axis gain before clipping
    deadzone: float = 0.05  # |axis| below this reads as 0 (the puck never rests at exactly 0)
    sign: tuple[float, ...] = field(default=(1.0,) * N_AXES)  # per-axis sign flips (mounting)


def _import_pyspacemouse() -> Any:
    try:
        import pyspacemouse
    except ImportError as err:  # pragma: no cover - it is a dev dependency here
        raise DeviceUnavailable(
            "pyspacemouse is not installed: `pip install 'apo_ros[spacemouse]'` "
            "(or `pip install pyspacemouse>=2.1`)") from err
    return pyspacemouse


def _is_hidapi_missing(err: BaseException) -> bool:
    text = str(err).lower()
    return "hid api" in text or "hidapi" in text or "hid_enumerate" in text or isinstance(
        err.__cause__, AttributeError)


class SpaceMouse(TeleopDevice):
    """`TeleopDevice` over pyspacemouse (ROS axis convention)."""

    name = "spacemouse"

    def __init__(self, config: SpaceMouseConfig | None = None, *, _module: Any = None):
        self.config = config or SpaceMouseConfig()
        psm = _module or _import_pyspacemouse()
        try:
            connected = psm.get_connected_devices()
        except RuntimeError as err:
            raise DeviceUnavailable(f"SpaceMouse: {FIX_HIDAPI} (pyspacemouse said: {err})") from err
        if not connected and self.config.device is None:
            raise DeviceUnavailable(f"SpaceMouse: {FIX_DEVICE}")
        try:
            self._dev = psm.open(device=self.config.device, device_index=self.config.device_index,
                                 nonblocking=True, axis_convention=psm.AxisConvention.ROS)
        except RuntimeError as err:
            fix = FIX_HIDAPI if _is_hidapi_missing(err) else FIX_DEVICE
            raise DeviceUnavailable(f"SpaceMouse: {fix} (pyspacemouse said: {err})") from err
        self._last = DeviceState(t=-1.0, axes=(0.0,) * N_AXES, buttons=(), connected=True)

    def _drain(self) -> Any:
        state = self._dev.read()
        for _ in range(MAX_DRAIN):
            t = state.t
            state = self._dev.read()
            if state.t == t:
                break
        return state

    def read(self) -> DeviceState:
        if self._dev is None:
            return DeviceState(t=self._last.t, connected=False)
        try:
            state = self._drain()
        except (OSError, RuntimeError, ValueError):
            # Unplugged mid-run: report it (the arbiter goes to HOLD) instead of raising in the loop.
            self._last = DeviceState(t=self._last.t, connected=False)
            return self._last
        connected = bool(getattr(self._dev, "connected", True))
        raw = (state.x, state.y, state.z, state.roll, state.pitch, state.yaw)
        axes = condition_axes(raw, scale=self.config.scale, deadzone=self.config.deadzone,
                              sign=self.config.sign)
        # Copy: the library mutates `state` (and its buttons list) on the next read.
        self._last = DeviceState(t=float(state.t), axes=axes,
                                 buttons=tuple(int(b) for b in state.buttons), connected=connected)
        return self._last

    def close(self) -> None:
        if self._dev is not None:
            try:
                self._dev.close()
            finally:
                self._dev = None
