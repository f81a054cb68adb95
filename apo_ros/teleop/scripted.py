"""A device that plays a timeline of states: stands in for the SpaceMouse in tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

from apo_ros.teleop.device import N_AXES, DeviceState, TeleopDevice


class ScriptedDevice(TeleopDevice):
    """Plays `(at_s, DeviceState)` keyframes against a clock the caller advances.

    `read(now_s)` returns the last keyframe at or before `now_s` with `t` = that keyframe's time (so
    a held keyframe looks like a device that stopped sending). Without `now_s` each read advances
    to the next keyframe. `disconnect()` simulates unplugging.
    """

    name = "scripted"

    def __init__(self, timeline: Sequence[tuple[float, DeviceState]] = ()):
        self.timeline = sorted(timeline, key=lambda kv: kv[0])
        self._cursor = -1
        self._connected = True
        self.reads = 0

    @staticmethod
    def state(axes: Sequence[float] = (0.0,) * N_AXES, buttons: Sequence[int] = (0, 0),
              t: float = 0.0, connected: bool = True) -> DeviceState:
        return DeviceState(t=t, axes=tuple(float(a) for a in axes),
                           buttons=tuple(int(b) for b in buttons), connected=connected)

    def disconnect(self) -> None:
        self._connected = False

    def reconnect(self) -> None:
        self._connected = True

    def read(self, now_s: float | None = None) -> DeviceState:
        self.reads += 1
        if now_s is None:
            self._cursor = min(self._cursor + 1, len(self.timeline) - 1)
        else:
            self._cursor = -1
            for i, (at, _) in enumerate(self.timeline):
                if at <= now_s:
                    self._cursor = i
        if self._cursor < 0:
            base = DeviceState(t=-1.0)
        else:
            at, st = self.timeline[self._cursor]
            base = DeviceState(t=at, axes=st.axes, buttons=st.buttons, connected=st.connected)
        if not self._connected:
            return DeviceState(t=base.t, connected=False)
        return base
