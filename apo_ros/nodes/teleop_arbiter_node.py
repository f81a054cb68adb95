"""teleop_arbiter_node: decides, once per control step, whether the policy or the operator drives
(core: apo_ros.teleop.TeleopArbiter, a final SafetyFilter; the SpaceMouse over HID or the
spacenav driver's Joy). A new ee_pose opens a control step (ControlSteps: a stamp too far ahead
or old is refused, a clock that steps back starts over), decided once: on the policy's command
for that step (recording/chunks.py), at once when the operator drives or the arm holds, or after
decision_deadline_s (no twist). A policy silent for policy_watchdog_s holds the arm until it
answers (teleop/watchdog.py).
Subscribes  policy/command, ee_pose, gripper/state, spacenav/joy (device:=joy)
Publishes   arm/delta_twist_cmds (TwistStamped, MoveIt Servo's input), gripper/command (Float64),
            action/executed (frame_id = source, stamp = observation), action/human, episode/events
            (intervention_start|intervention_end|hold|resume), teleop/mode, /diagnostics
Services    teleop/hold, teleop/resume; parameters: config/teleop_arbiter_node.yaml
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from apo_ros.actions.space import SOURCES
from apo_ros.nodes.common import EVENTS_QOS, RECORD_QOS, STREAM_QOS, ApoNode, Param, run, trigger_reply
from apo_ros.recording import chunks
from apo_ros.recording import messages as M
from apo_ros.runtime.config import load_safety_filter
from apo_ros.runtime.ros_io import ControlSteps, action_to_twist
from apo_ros.teleop.arbiter import ArbiterConfig, ArbiterEvent, Mode, PolicyCommand, TeleopArbiter
from apo_ros.teleop.devices import open_device
from apo_ros.teleop.joy import JoyDevice
from apo_ros.teleop.watchdog import WatchdogHold

ARBITER_PARAMS = {"max_delta": [0.01, 0.01, 0.01, 0.05, 0.05, 0.05], "takeover_on_motion": True,
                  "takeover_deadzone": 0.15, "takeover_button": -1, "handback_button": -1,
                  "idle_handback_s": 1.0, "gripper_close_button": 0, "gripper_open_button": 1,
                  "gripper_takes_over": True, "policy_timeout_s": 0.25, "device_timeout_s": 0.25,
                  "hold_on_device_loss": True}
RECORDED_EVENTS = ("intervention_start", "intervention_end", "hold", "resume")


class TeleopArbiterNode(ApoNode):
    def __init__(self) -> None:
        super().__init__("teleop_arbiter_node")
        p = self.declare({  # descriptions: the comments in config/teleop_arbiter_node.yaml
            "control_hz": Param(10.0, low=0.1, high=1000.0), "device": "spacemouse",
            "deadzone": Param(0.05, low=0.0, high=0.99), "axis_scale": [1.0] * 6,
            "axis_sign": [1.0] * 6, "safety_config": "", "frame_id": "base_link",
            "decision_deadline_s": Param(0.06, low=0.001, high=10.0),
            "stamp_tolerance_s": Param(0.5, low=0.0, high=3600.0),
            "policy_watchdog_s": Param(1.0, low=0.0, high=3600.0), **ARBITER_PARAMS,
        }, appliers={"control_hz": self.setter("control_hz", float), "frame_id": self.setter("frame_id", str),
                     "decision_deadline_s": lambda v: setattr(self.steps, "deadline_ns", int(v * 1e9)),
                     "stamp_tolerance_s": lambda v: setattr(self.steps.gate, "tolerance_s", float(v)),
                     "policy_watchdog_s": lambda v: setattr(self.watchdog.dog, "timeout_s", float(v)),
                     **{k: functools.partial(self.set_arbiter, k) for k in ARBITER_PARAMS}})
        self.control_hz, self.frame_id = float(p["control_hz"]), str(p["frame_id"])
        self.steps = ControlSteps(float(p["decision_deadline_s"]), float(p["stamp_tolerance_s"]))
        self.types = M.rclpy_types()
        self.arbiter = TeleopArbiter(ArbiterConfig(**{k: p[k] for k in ARBITER_PARAMS}))
        self.watchdog = WatchdogHold(self.arbiter, float(p["policy_watchdog_s"]))
        self.safety = load_safety_filter(p["safety_config"])
        self.ee: Any = None
        self.gripper = 1.0
        self.device = open_device(str(p["device"]), scale=tuple(p["axis_scale"]),
                                  deadzone=float(p["deadzone"]), sign=tuple(p["axis_sign"]))
        self.joy = self.device if isinstance(self.device, JoyDevice) else None
        if self.joy is not None:
            self.subscribe(Joy, "spacenav/joy", self.on_joy, STREAM_QOS)
        self.twist_pub, self.gripper_pub, self.executed_pub, self.human_pub, self.mode_pub = (
            self.create_publisher(t, topic, RECORD_QOS) for topic, t in (
                ("arm/delta_twist_cmds", TwistStamped), ("gripper/command", Float64),
                ("action/executed", JointState), ("action/human", JointState), ("teleop/mode", String)))
        self.events_pub = self.create_publisher(String, "episode/events", EVENTS_QOS)
        self.sensor_inputs("auto")
        self.subscribe(JointState, "policy/command", self.on_policy, STREAM_QOS)
        self.subscribe(PoseStamped, "ee_pose", self.on_ee_pose, STREAM_QOS, sensor=True)
        self.subscribe(JointState, "gripper/state", self.on_gripper, STREAM_QOS, sensor=True)
        self.expect(["ee_pose", "gripper/state"])
        self.create_service(Trigger, "teleop/hold", self.on_hold)
        self.create_service(Trigger, "teleop/resume", self.on_resume)
        # one wake-up per step, at its deadline (a 100 Hz poll cost 8% of a core with no input)
        self.deadline_timer = self.create_timer(float(p["decision_deadline_s"]) + 0.002, self.on_deadline)
        self.deadline_timer.cancel()
        self.start_diagnostics()

    def set_arbiter(self, name: str, value: Any) -> None:  # validated as at start (ValueError: refused)
        self.arbiter.config = dataclasses.replace(self.arbiter.config, **{name: value})

    # callbacks run on the single-threaded executor: the arbiter needs no lock
    def on_ee_pose(self, msg: Any) -> None:
        pose, now = M.pose_stamped_to_array(msg), self.now_ns()
        if not np.all(np.isfinite(pose)):
            raise ValueError("pose has non-finite values")
        if not self.steps.observe(M.stamp_to_ns(msg.header), now):  # ValueError: not a step
            self.count("ee_pose", "a control step ended undecided")
        self.deadline_timer.reset()
        self.ee = pose[:3]
        self.publish_events(self.watchdog.on_step(now))  # a silent policy: hold
        if self.arbiter.mode is not Mode.AUTONOMOUS:
            self.decide(None)  # the operator drives (or the arm holds): no policy to wait for
        elif (early := self.steps.take_early()) is not None:
            self.on_command(*early)  # the command for this step came before its observation

    def on_policy(self, msg: Any) -> None:
        action, _source, obs_stamp = M.joint_state_to_action(msg)
        self.publish_events(self.watchdog.on_answer(self.now_ns()))  # back after a hold: resume
        tick, chunk = chunks.command_tick(*M.joint_state_arrays(msg), obs_stamp)
        if not self.steps.early(tick, (PolicyCommand(action, obs_stamp), chunk)):
            self.on_command(tick, (PolicyCommand(action, obs_stamp), chunk))

    def on_command(self, tick: int, command: tuple[PolicyCommand, Any]) -> None:
        if not self.steps.accept(tick, self.now_ns()):
            self.count("policy/command", "late or repeated command dropped")
            return
        self.decide(*command)

    def on_deadline(self) -> None:
        if not self.steps.open:
            self.deadline_timer.cancel()
        elif self.steps.expired(self.now_ns()):
            if self.arbiter.mode is Mode.AUTONOMOUS:
                self.count("policy/command", "no command for the observation in time: no motion")
            self.decide(None)

    def on_joy(self, msg: Any) -> None:
        if self.joy is not None:
            self.joy.on_joy(msg, self.now_ns() / 1e9)

    def on_gripper(self, msg: Any) -> None:
        _names, pos = M.joint_state_arrays(msg)
        if pos.size < 1 or not np.isfinite(pos[0]):
            raise ValueError("gripper state has no finite position")
        self.gripper = float(pos[0])

    def decide(self, command: PolicyCommand | None, chunk: chunks.ChunkInfo | None = None) -> None:
        """The control step's one decision: a twist and the executed action when the policy or
        the operator acts, a zero twist when the arm holds, nothing when no one acted in time
        (the arm applies nothing for that step: a twist is never sent for a step already past)."""
        self.steps.close()
        now = self.now_ns()
        out = self.arbiter.update(now, policy=command, device=self.device.read(),
                                  obs_stamp_ns=self.steps.stamp)
        self.arbiter.expire_policy()
        # The last check before the arm: an unknown ee pose means no motion at all.
        safe = self.safety.filter(out.action, self.ee, self.gripper).action
        linear, angular, gripper = action_to_twist(safe, self.control_hz)
        if out.source in SOURCES or out.mode is Mode.HOLD:
            self.twist_pub.publish(M.make_twist_stamped(self.types, now, linear, angular, self.frame_id))
            self.gripper_pub.publish(Float64(data=gripper))
        self.publish_events(out.events)
        if out.source in SOURCES:
            # a policy action keeps its provenance, naming the step that executed it
            info = chunks.at_tick(chunk, self.steps.stamp) if out.source == "policy" else None
            self.executed_pub.publish(chunks.make_policy_action(self.types, out.obs_stamp_ns, safe,
                                                                out.source, info))
        if out.source == "human":
            self.human_pub.publish(M.make_action(self.types, out.obs_stamp_ns, out.action, "human"))
        self.mode_pub.publish(String(data=out.mode.value))

    def publish_events(self, events: list[ArbiterEvent]) -> None:
        for event in events:
            if event.kind in RECORDED_EVENTS:
                self.events_pub.publish(String(data=event.kind))
            if event.kind in ("device_lost", "hold", "human_stale", "resume"):
                self.get_logger().warning(f"{event.kind}: {event.detail}")

    def on_hold(self, request: Any, response: Any) -> Any:
        self.publish_events(self.arbiter.hold(self.now_ns(), "teleop/hold service"))
        return trigger_reply(response, True, "holding: no motion until teleop/resume")

    def on_resume(self, request: Any, response: Any) -> Any:
        self.watchdog.operator_decided()
        events = self.arbiter.resume(self.now_ns())
        self.publish_events(events)
        return trigger_reply(response, bool(events), "resumed" if events else "was not holding")

    def diagnostic_values(self) -> dict[str, Any]:
        return {"mode": self.arbiter.mode.value, "watchdog holds": self.watchdog.dog.losses,
                "policy silent (s)": f"{self.watchdog.dog.silent_for(self.now_ns()):.2f}",
                **{f"ee_pose stamps {k}": n for k, n in self.steps.gate.counts.items()}}

    def diagnostic_status(self) -> tuple[int, str]:
        return (2 if self.watchdog.holding else int(self.arbiter.mode is Mode.HOLD),
                "holding: the policy does not answer" if self.watchdog.holding else self.arbiter.mode.value)

    def close(self) -> None:
        self.device.close()


def main(args: list[str] | None = None) -> int:
    return run(TeleopArbiterNode, "teleop_arbiter_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
