"""SpaceMouse (drain-to-latest over a fake pyspacemouse; the real missing-hidapi error), Joy from
the spacenav driver (rosbags message class), the scripted device."""

import types
from dataclasses import dataclass, field

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from apo_ros.teleop.device import DeviceState, DeviceUnavailable, apply_deadzone, condition_axes
from apo_ros.teleop.joy import JoyConfig, JoyDevice, joy_to_state
from apo_ros.teleop.scripted import ScriptedDevice
from apo_ros.teleop.spacemouse import SpaceMouse, SpaceMouseConfig


@dataclass
class _State:  # pyspacemouse.SpaceMouseState: ONE shared mutable object
    t: float = -1.0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0
    buttons: list = field(default_factory=lambda: [0, 0])


class _FakeHid:
    """Consumes one queued report per read(), mutating the shared state like pyspacemouse 2.1."""

    def __init__(self, reports):
        self.reports = list(reports)
        self.state = _State()
        self.reads = 0
        self.closed = False
        self.connected = True

    def read(self):
        self.reads += 1
        if self.reports:
            report = self.reports.pop(0)
            if report == "unplug":
                raise OSError("device disconnected")
            for k, v in report.items():
                if k == "buttons":
                    self.state.buttons[:] = v
                else:
                    setattr(self.state, k, v)
            self.state.t += 1.0  # every processed report bumps t
        return self.state

    def close(self):
        self.closed = True


def fake_module(hid=None, connected=("SpaceMouse Compact",), enum_error=None):
    calls = {}

    def get_connected_devices():
        if enum_error:
            raise RuntimeError(enum_error)
        return list(connected)

    def open_(**kwargs):
        calls.update(kwargs)
        if hid is None:
            raise RuntimeError("No connected or supported devices found.")
        return hid

    mod = types.SimpleNamespace(get_connected_devices=get_connected_devices, open=open_,
                                AxisConvention=types.SimpleNamespace(ROS="ros"))
    return mod, calls


def test_spacemouse_drains_to_latest_and_copies():
    hid = _FakeHid([{"x": 0.2}, {"x": 0.5, "y": -0.3}, {"roll": 0.4}, {"buttons": [1, 0]}])
    mod, calls = fake_module(hid)
    sm = SpaceMouse(SpaceMouseConfig(deadzone=0.0), _module=mod)
    assert calls["axis_convention"] == "ros" and calls["nonblocking"] is True
    s1 = sm.read()
    # all four queued reports consumed in ONE read: the latest translation, rotation and buttons
    assert s1.axes == pytest.approx((0.5, -0.3, 0.0, 0.4, 0.0, 0.0))
    assert s1.buttons == (1, 0) and s1.connected
    assert hid.reads == 5  # 4 reports + 1 read that found nothing new
    # the returned state is a copy: later reports do not change it
    hid.reports = [{"x": -1.0, "buttons": [0, 1]}]
    s2 = sm.read()
    assert s1.axes[0] == 0.5 and s1.buttons == (1, 0)
    assert s2.axes[0] == -1.0 and s2.buttons == (0, 1) and s2.t > s1.t
    # nothing new: same t, same values (the arbiter then knows it is not fresh)
    s3 = sm.read()
    assert s3.t == s2.t
    sm.close()
    assert hid.closed and not sm.read().connected


def test_spacemouse_deadzone_scale_sign():
    hid = _FakeHid([{"x": 0.04, "y": 0.5, "z": 2.0, "yaw": float("nan")}])
    mod, _ = fake_module(hid)
    cfg = SpaceMouseConfig(deadzone=0.05, scale=(1, 1, 1, 1, 1, 1), sign=(1, -1, 1, 1, 1, 1))
    s = SpaceMouse(cfg, _module=mod).read()
    assert s.axes[0] == 0.0  # inside the deadzone
    assert s.axes[1] == pytest.approx(-(0.5 - 0.05) / 0.95)  # sign flip, rescaled past deadzone
    assert s.axes[2] == 1.0  # clipped
    assert s.axes[5] == 0.0  # NaN never becomes motion


def test_spacemouse_unplugged_reports_disconnected():
    hid = _FakeHid([{"x": 0.5}, "unplug"])
    mod, _ = fake_module(hid)
    sm = SpaceMouse(_module=mod)
    s = sm.read()
    assert not s.connected


def test_missing_hidapi_error_names_the_package():
    mod, _ = fake_module(enum_error="HID API is probably not installed. See "
                                    "https://spacemouse.kubaandrysek.cz for details.")
    with pytest.raises(DeviceUnavailable, match="libhidapi-hidraw0"):
        SpaceMouse(_module=mod)


def test_no_device_error_gives_udev_rule():
    mod, _ = fake_module(hid=None, connected=())
    with pytest.raises(DeviceUnavailable) as err:
        SpaceMouse(_module=mod)
    text = str(err.value)
    assert 'ATTRS{idVendor}=="256f"' in text and "udevadm" in text and "plugdev" in text


def _hidapi_loadable() -> bool:
    """What pyspacemouse (through easyhid) needs: the hidapi-hidraw C library."""
    import ctypes.util

    return ctypes.util.find_library("hidapi-hidraw") is not None


def _spacemouse_plugged_in() -> bool:
    """A 3Dconnexion HID device (vendor 256f, or the older Logitech-made 046d) in sysfs."""
    import glob

    for uevent in glob.glob("/sys/class/hidraw/*/device/uevent"):
        with open(uevent) as f:
            text = f.read().upper()
        if "0000256F" in text or "0000046D" in text:
            return True
    return False


def test_real_pyspacemouse_opens_or_explains():
    """The real pyspacemouse on this machine, with the outcome this machine calls for (told from
    the library and sysfs, not from the code under test): no hidapi -> the apt package to install;
    hidapi but no SpaceMouse -> the udev rule; a SpaceMouse -> a conditioned read. Never a bare
    RuntimeError / AttributeError."""
    if not _hidapi_loadable():
        with pytest.raises(DeviceUnavailable, match="libhidapi-hidraw0") as err:
            SpaceMouse()
        assert "udev" not in str(err.value)
    elif not _spacemouse_plugged_in():
        with pytest.raises(DeviceUnavailable, match="udevadm") as err:
            SpaceMouse()
        assert "libhidapi" not in str(err.value)
    else:
        with SpaceMouse() as device:
            state = device.read()
        assert state.connected and len(state.axes) == 6 and all(-1.0 <= a <= 1.0 for a in state.axes)


def test_deadzone_continuity():
    assert apply_deadzone(0.1, 0.1) == 0.0
    assert apply_deadzone(0.1 + 1e-9, 0.1) == pytest.approx(0.0, abs=1e-8)
    assert apply_deadzone(-1.0, 0.1) == -1.0
    assert condition_axes([2, -2, 0, 0, 0, 0]) == (1.0, -1.0, 0.0, 0.0, 0.0, 0.0)


TS = get_typestore(Stores.ROS2_HUMBLE)


def joy_msg(axes, buttons):
    Joy, Header, Time = (TS.types[n] for n in ("sensor_msgs/msg/Joy", "std_msgs/msg/Header",
                                                 "builtin_interfaces/msg/Time"))
    return Joy(header=Header(stamp=Time(sec=1, nanosec=0), frame_id="spacenav"),
               axes=np.asarray(axes, dtype=np.float32), buttons=np.asarray(buttons, dtype=np.int32))


def test_joy_from_spacenav_rosbags_class():
    # spacenav: axes = raw / 512 (full deflection ~ +-0.68), then buttons [left, right]
    msg = joy_msg([350 / 512, 0, -0.01, 0, 0, 0.5], [0, 1])
    s = joy_to_state(msg, 12.5, JoyConfig(deadzone=0.02, scale=(512 / 350,) * 6))
    assert s.t == 12.5 and s.buttons == (0, 1) and s.connected
    assert s.axes[0] == pytest.approx(1.0) and s.axes[2] == 0.0
    assert s.axes[5] == pytest.approx((0.5 * 512 / 350 - 0.02) / 0.98, rel=1e-5)


def test_joy_device_latest_and_lost_timeout():
    d = JoyDevice(JoyConfig(lost_timeout_s=1.0))
    assert d.read(0.0).t == -1.0
    d.on_joy(joy_msg([0.5, 0, 0, 0, 0, 0], [0, 0]), 1.0)
    d.on_joy(joy_msg([0.2, 0, 0, 0, 0, 0], [1, 0]), 1.1)
    s = d.read(1.5)
    assert s.axes[0] == pytest.approx((0.2 - 0.05) / 0.95) and s.buttons == (1, 0)
    assert not d.read(2.2).connected
    with pytest.raises(ValueError, match="axes"):
        joy_to_state(joy_msg([0.1, 0.2], []), 0.0)


def test_scripted_device_timeline_and_disconnect():
    d = ScriptedDevice([(0.0, ScriptedDevice.state()),
                        (1.0, ScriptedDevice.state(axes=(1, 0, 0, 0, 0, 0), buttons=(1, 0)))])
    assert d.read(0.5).axes[0] == 0.0
    s = d.read(1.5)
    assert s.axes[0] == 1.0 and s.t == 1.0 and s.buttons == (1, 0)
    d.disconnect()
    assert not d.read(2.0).connected
    d.reconnect()
    assert d.read(2.0).connected
    assert DeviceState().max_deflection() == 0.0
    with pytest.raises(ValueError):
        DeviceState(axes=(1.0,))


def test_spacemouse_imports_pyspacemouse_module(monkeypatch):
    import sys

    hid = _FakeHid([{"z": 0.7, "buttons": [0, 1]}])
    mod, calls = fake_module(hid)
    monkeypatch.setitem(sys.modules, "pyspacemouse", mod)
    state = SpaceMouse(SpaceMouseConfig(deadzone=0.0)).read()
    assert state.axes[2] == pytest.approx(0.7) and state.buttons == (0, 1)
    assert calls["axis_convention"] == "ros"
