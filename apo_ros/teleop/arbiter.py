"""Who drives the arm: the policy or the operator.

`TeleopArbiter` is a small state machine ticked once per control step with the policy's latest
command and the operator's device state. It returns the command to execute and who made it.

Modes
- AUTONOMOUS: the policy's command is executed.
- INTERVENTION: the operator's device is executed (axes x per-axis max delta, gripper on buttons).
- HOLD: nothing moves (zero twist). Entered when the device is lost or on `hold()`; left only by an
  explicit `resume()` (-> AUTONOMOUS) or the take-over button on a connected device
  (-> INTERVENTION): a robot that stopped because something broke does not restart by itself.

Transitions
- AUTONOMOUS -> INTERVENTION: deflection above `takeover_deadzone` (if `takeover_on_motion`), a
  press of `takeover_button`, or a gripper button (if `gripper_takes_over`).
- INTERVENTION -> AUTONOMOUS: a press of `handback_button` (or `takeover_button` again: it
  toggles), or `idle_handback_s` without deflection or buttons.
- any -> HOLD: device disconnected (an error event `device_lost`) or `hold()`.

Staleness (as twist_mux: ages measured from the arbiter's receive time, not the message stamp):
a policy command older than `policy_timeout_s`, or a deflection not refreshed by the device for
`device_timeout_s`, gives a zero twist; an old command is never repeated past its timeout.
The gripper is absolute, so a zero twist keeps the last executed gripper command.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from apo_ros.actions.space import ACTION_DIM, GRIPPER_INDEX
from apo_ros.teleop.device import N_AXES, DeviceState

NS = 1_000_000_000


class Mode(str, enum.Enum):
    AUTONOMOUS = "autonomous"
    INTERVENTION = "intervention"
    HOLD = "hold"


# Event kinds. intervention_start / intervention_end go into the bags; the others are for logs.
EVENT_KINDS = ("intervention_start", "intervention_end", "device_lost", "device_restored", "hold",
               "resume", "policy_stale", "human_stale")


@dataclass
class ArbiterConfig:
    max_delta: tuple[float, ...] = (0.01, 0.01, 0.01, 0.05, 0.05, 0.05)  # action at full
    #   deflection per axis [dx, dy, dz, droll, dpitch, dyaw] (metres / radians per control step)
    takeover_on_motion: bool = True  # a deflection above takeover_deadzone takes over
    takeover_deadzone: float = 0.15  # |axis| in [0, 1] that counts as "the operator moved it"
    takeover_button: int = -1  # press toggles AUTONOMOUS <-> INTERVENTION (-1 = no such button)
    handback_button: int = -1  # press hands back to the policy (-1 = none)
    idle_handback_s: float = 1.0  # hand back after this long without deflection/buttons (0 = never)
    gripper_close_button: int = 0  # SpaceMouse left button closes the gripper (-1 = none)
    gripper_open_button: int = 1  # right button opens it (-1 = none)
    gripper_takes_over: bool = True  # pressing a gripper button in AUTONOMOUS takes over
    gripper_closed: float = 0.0  # gripper command for "closed" (action space: 0 closed, 1 open)
    gripper_open: float = 1.0  # gripper command for "open"
    policy_timeout_s: float = 0.25  # policy command older than this -> zero twist
    device_timeout_s: float = 0.25  # deflection not refreshed for this long -> zero twist
    hold_on_device_loss: bool = True  # device disconnected -> HOLD (else: back to AUTONOMOUS)

    def __post_init__(self) -> None:
        if len(self.max_delta) != N_AXES:
            raise ValueError(f"ArbiterConfig.max_delta needs {N_AXES} values, got {self.max_delta}")
        if not 0.0 <= self.takeover_deadzone < 1.0:
            raise ValueError(f"ArbiterConfig.takeover_deadzone must be in [0, 1), "
                             f"got {self.takeover_deadzone}")
        for name in ("policy_timeout_s", "device_timeout_s", "idle_handback_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"ArbiterConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class PolicyCommand:
    action: np.ndarray  # (7,) raw action, already through the safety filter
    obs_stamp_ns: int  # stamp of the observation it was computed from
    stamp_ns: int = 0  # when the policy produced it (informational; staleness uses receive time)
    proposed: np.ndarray | None = None  # (7,) what the model proposed before filtering (optional)


@dataclass
class ArbiterEvent:
    kind: str  # one of EVENT_KINDS
    stamp_ns: int
    detail: str = ""


@dataclass
class ArbiterOutput:
    action: np.ndarray  # (7,) command to execute
    source: str  # "policy" | "human" | "none" (a zero twist: stale input, HOLD, nothing yet)
    mode: Mode
    obs_stamp_ns: int  # observation the command belongs to (0 if unknown)
    events: list[ArbiterEvent] = field(default_factory=list)
    proposed: np.ndarray | None = None  # the policy's command at this step, when there was one


class TeleopArbiter:
    """See the module docstring. Not thread-safe: call from one loop (the node's timer)."""

    def __init__(self, config: ArbiterConfig | None = None, initial_gripper: float = 1.0):
        self.config = config or ArbiterConfig()
        self._max_delta = np.asarray(self.config.max_delta, dtype=np.float64)
        self.mode = Mode.AUTONOMOUS
        self._policy: PolicyCommand | None = None
        self._policy_rx_ns: int | None = None
        self._device = DeviceState(t=-1.0)
        self._device_rx_ns: int | None = None  # when the device last produced a NEW report
        self._device_connected = True
        self._prev_buttons: tuple[int, ...] = ()
        self._last_active_ns = 0  # last time the operator deflected / pressed (idle hand-back)
        self._gripper = float(initial_gripper)  # last executed gripper command
        self._human_gripper = float(initial_gripper)
        self._obs_stamp_ns = 0
        self._policy_stale_reported = False
        self._human_stale_reported = False
        self.interventions = 0

    # ---- inputs ------------------------------------------------------------------------------
    def on_policy(self, command: PolicyCommand, now_ns: int) -> None:
        action = np.asarray(command.action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"policy command must be a {ACTION_DIM}-D action, got {action.shape}")
        self._policy = PolicyCommand(action, int(command.obs_stamp_ns), int(command.stamp_ns),
                                     command.proposed)
        self._policy_rx_ns = now_ns
        self._policy_stale_reported = False

    def expire_policy(self) -> None:
        """Forget the policy's command. An event-driven caller (the arbiter node) hands each
        command to exactly one update() and expires it after, so it is never executed twice."""
        self._policy = None
        self._policy_rx_ns = None

    def on_device(self, state: DeviceState, now_ns: int) -> None:
        if state.connected and state.t != self._device.t:
            self._device_rx_ns = now_ns
            self._human_stale_reported = False
        self._device = state

    def hold(self, now_ns: int, reason: str = "requested") -> list[ArbiterEvent]:
        events: list[ArbiterEvent] = []
        self._enter_hold(now_ns, reason, events)
        return events

    def resume(self, now_ns: int) -> list[ArbiterEvent]:
        """Leave HOLD for AUTONOMOUS (an operator's explicit decision)."""
        if self.mode is not Mode.HOLD:
            return []
        self.mode = Mode.AUTONOMOUS
        return [ArbiterEvent("resume", now_ns)]

    # ---- the tick ----------------------------------------------------------------------------
    def update(self, now_ns: int, policy: PolicyCommand | None = None,
               device: DeviceState | None = None, obs_stamp_ns: int | None = None) -> ArbiterOutput:
        """Feed the inputs that arrived since the last tick (None = nothing new) and decide."""
        if policy is not None:
            self.on_policy(policy, now_ns)
        if device is not None:
            self.on_device(device, now_ns)
        if obs_stamp_ns is not None:
            self._obs_stamp_ns = int(obs_stamp_ns)
        return self.step(now_ns)

    def step(self, now_ns: int) -> ArbiterOutput:
        cfg = self.config
        events: list[ArbiterEvent] = []
        dev = self._device
        pressed = self._rising_edges(dev)

        # Device connection.
        if not dev.connected:
            if self._device_connected:
                self._device_connected = False
                events.append(ArbiterEvent("device_lost", now_ns, "operator device disconnected"))
                if cfg.hold_on_device_loss:
                    self._enter_hold(now_ns, "device lost", events)
                elif self.mode is Mode.INTERVENTION:
                    self._end_intervention(now_ns, events)
        elif not self._device_connected:
            self._device_connected = True
            events.append(ArbiterEvent("device_restored", now_ns))

        human_axes = self._fresh_axes(now_ns, events)
        active = bool(np.any(human_axes != 0.0)) or any(dev.buttons)
        if active:
            self._last_active_ns = now_ns

        # Mode transitions.
        if dev.connected:
            if self.mode is Mode.AUTONOMOUS:
                moved = cfg.takeover_on_motion and float(np.max(np.abs(human_axes))) > cfg.takeover_deadzone
                gripper_press = cfg.gripper_takes_over and (
                    self._btn(pressed, cfg.gripper_close_button)
                    or self._btn(pressed, cfg.gripper_open_button))
                if moved or self._btn(pressed, cfg.takeover_button) or gripper_press:
                    self._start_intervention(now_ns, events)
            elif self.mode is Mode.INTERVENTION:
                if self._btn(pressed, cfg.takeover_button) or self._btn(pressed, cfg.handback_button):
                    self._end_intervention(now_ns, events)
                elif cfg.idle_handback_s > 0 and now_ns - self._last_active_ns > cfg.idle_handback_s * NS:
                    self._end_intervention(now_ns, events, detail="idle")
            elif self.mode is Mode.HOLD and self._btn(pressed, cfg.takeover_button):
                self._start_intervention(now_ns, events)

        proposed = self._fresh_policy_action(now_ns, events)
        if self.mode is Mode.INTERVENTION:
            if dev.button(cfg.gripper_close_button):
                self._human_gripper = cfg.gripper_closed
            elif dev.button(cfg.gripper_open_button):
                self._human_gripper = cfg.gripper_open
            action = np.zeros(ACTION_DIM)
            action[:GRIPPER_INDEX] = human_axes * self._max_delta
            action[GRIPPER_INDEX] = self._human_gripper
            out = ArbiterOutput(action, "human", self.mode, self._obs_stamp_ns, events, proposed)
        elif self.mode is Mode.AUTONOMOUS and proposed is not None and self._policy is not None:
            out = ArbiterOutput(proposed.copy(), "policy", self.mode, self._policy.obs_stamp_ns,
                                events, proposed)
        else:
            out = ArbiterOutput(self.zero_twist(), "none", self.mode, self._obs_stamp_ns, events,
                                proposed)
        self._gripper = float(out.action[GRIPPER_INDEX])
        return out

    def zero_twist(self) -> np.ndarray:
        """No motion; the gripper keeps its last command."""
        action = np.zeros(ACTION_DIM)
        action[GRIPPER_INDEX] = self._gripper
        return action

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _btn(pressed: set[int], index: int) -> bool:
        return index >= 0 and index in pressed

    def _rising_edges(self, dev: DeviceState) -> set[int]:
        prev = self._prev_buttons
        pressed = {i for i, b in enumerate(dev.buttons) if b and not (i < len(prev) and prev[i])}
        self._prev_buttons = dev.buttons if dev.connected else ()
        return pressed

    def _fresh_axes(self, now_ns: int, events: list[ArbiterEvent]) -> np.ndarray:
        dev = self._device
        axes = np.asarray(dev.axes, dtype=np.float64)
        if not dev.connected:
            return np.zeros(N_AXES)
        if np.any(axes != 0.0) and (self._device_rx_ns is None or
                                    now_ns - self._device_rx_ns > self.config.device_timeout_s * NS):
            if not self._human_stale_reported and self.mode is Mode.INTERVENTION:
                events.append(ArbiterEvent("human_stale", now_ns, "device stopped reporting"))
                self._human_stale_reported = True
            return np.zeros(N_AXES)
        return np.clip(axes, -1.0, 1.0)

    def _fresh_policy_action(self, now_ns: int, events: list[ArbiterEvent]) -> np.ndarray | None:
        if self._policy is None or self._policy_rx_ns is None:
            return None
        if now_ns - self._policy_rx_ns > self.config.policy_timeout_s * NS:
            if not self._policy_stale_reported and self.mode is Mode.AUTONOMOUS:
                events.append(ArbiterEvent("policy_stale", now_ns, "no fresh policy command"))
                self._policy_stale_reported = True
            return None
        action = self._policy.action
        if not np.all(np.isfinite(action)):  # belt and braces: the runner filters already
            return None
        return action

    def _start_intervention(self, now_ns: int, events: list[ArbiterEvent]) -> None:
        self.mode = Mode.INTERVENTION
        self._human_gripper = self._gripper  # take over without moving the gripper
        self._last_active_ns = now_ns
        self.interventions += 1
        events.append(ArbiterEvent("intervention_start", now_ns))

    def _end_intervention(self, now_ns: int, events: list[ArbiterEvent], detail: str = "") -> None:
        self.mode = Mode.AUTONOMOUS
        events.append(ArbiterEvent("intervention_end", now_ns, detail))

    def _enter_hold(self, now_ns: int, reason: str, events: list[ArbiterEvent]) -> None:
        if self.mode is Mode.HOLD:
            return
        if self.mode is Mode.INTERVENTION:
            events.append(ArbiterEvent("intervention_end", now_ns, reason))
        self.mode = Mode.HOLD
        events.append(ArbiterEvent("hold", now_ns, reason))
