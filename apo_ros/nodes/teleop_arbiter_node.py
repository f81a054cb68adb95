"""teleop_arbiter_node: decides, once per control step, whether the policy or the operator drives.

Core: apo_ros.teleop.TeleopArbiter (modes, take-over / hand-back, device loss) and a final
SafetyFilter on whatever is executed. The SpaceMouse is read directly (pyspacemouse,
device:=spacemouse) or through the `spacenav` driver's Joy messages (device:=joy).
Timing: a new ee_pose (the arm's observation) opens a control step, decided once: on the
policy's command for that step (the tick its provenance names, recording/chunks.py; one that came
before the ee_pose waits for it), at once when the operator drives or the arm holds, or after
decision_deadline_s without a command (no twist). A command runs at most once, late ones never.
Subscribes  policy/command, ee_pose, gripper/state, spacenav/joy (sensor_msgs/Joy, device:=joy)
Publishes   arm/delta_twist_cmds (TwistStamped, current stamp: MoveIt Servo's input), gripper/command
            (Float64, 0 closed .. 1 open), action/executed (frame_id = source, header.stamp =
            observation), action/human, episode/events (intervention_start | intervention_end |
            hold | resume), teleop/mode (autonomous | intervention | hold)
Services    teleop/hold, teleop/resume (std_srvs/Trigger); parameters: config/teleop_arbiter_node.yaml
"""

from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from apo_ros.actions.space import SOURCES
from apo_ros.nodes.common import EVENTS_QOS, RECORD_QOS, STREAM_QOS, ApoNode, StartupError, run, trigger_reply
from apo_ros.recording import chunks
from apo_ros.recording import messages as M
from apo_ros.runtime.config import load_safety_filter
from apo_ros.runtime.ros_io import ControlSteps, action_to_twist
from apo_ros.teleop.arbiter import ArbiterConfig, ArbiterEvent, Mode, PolicyCommand, TeleopArbiter
from apo_ros.teleop.device import TeleopDevice
from apo_ros.teleop.joy import JoyConfig, JoyDevice

ARBITER_PARAMS = {"max_delta": [0.01, 0.01, 0.01, 0.05, 0.05, 0.05], "takeover_on_motion": True,
                  "takeover_deadzone": 0.15, "takeover_button": -1, "handback_button": -1,
                  "idle_handback_s": 1.0, "gripper_close_button": 0, "gripper_open_button": 1,
                  "gripper_takes_over": True, "policy_timeout_s": 0.25, "device_timeout_s": 0.25,
                  "hold_on_device_loss": True}
RECORDED_EVENTS = ("intervention_start", "intervention_end", "hold", "resume")


class TeleopArbiterNode(ApoNode):
    def __init__(self) -> None:
        super().__init__("teleop_arbiter_node")
        p = self.declare({"control_hz": 10.0, "device": "spacemouse", "deadzone": 0.05,
                          "axis_scale": [1.0] * 6, "axis_sign": [1.0] * 6, "safety_config": "",
                          "frame_id": "base_link", "decision_deadline_s": 0.06, **ARBITER_PARAMS})
        self.control_hz = float(p["control_hz"])
        self.frame_id = str(p["frame_id"])
        self.steps = ControlSteps(float(p["decision_deadline_s"]))
        self.types = M.rclpy_types()
        self.arbiter = TeleopArbiter(ArbiterConfig(**{k: p[k] for k in ARBITER_PARAMS}))
        self.safety = load_safety_filter(p["safety_config"])
        self.ee: Any = None
        self.gripper = 1.0
        self.device: TeleopDevice
        self.joy: JoyDevice | None = None
        if p["device"] == "joy":
            self.joy = self.device = JoyDevice(JoyConfig(scale=tuple(p["axis_scale"]),
                                                         deadzone=float(p["deadzone"]),
                                                         sign=tuple(p["axis_sign"])))
            self.subscribe(Joy, "spacenav/joy", self.on_joy, STREAM_QOS)
        elif p["device"] == "spacemouse":
            from apo_ros.teleop.spacemouse import SpaceMouse, SpaceMouseConfig

            self.device = SpaceMouse(SpaceMouseConfig(scale=tuple(p["axis_scale"]),
                                                      deadzone=float(p["deadzone"]),
                                                      sign=tuple(p["axis_sign"])))
        else:
            raise StartupError(f"device must be 'spacemouse' or 'joy', got {p['device']!r}")
        self.twist_pub = self.create_publisher(TwistStamped, "arm/delta_twist_cmds", RECORD_QOS)
        self.gripper_pub = self.create_publisher(Float64, "gripper/command", RECORD_QOS)
        self.executed_pub = self.create_publisher(JointState, "action/executed", RECORD_QOS)
        self.human_pub = self.create_publisher(JointState, "action/human", RECORD_QOS)
        self.events_pub = self.create_publisher(String, "episode/events", EVENTS_QOS)
        self.mode_pub = self.create_publisher(String, "teleop/mode", RECORD_QOS)
        self.subscribe(JointState, "policy/command", self.on_policy, STREAM_QOS)
        self.subscribe(PoseStamped, "ee_pose", self.on_ee_pose, STREAM_QOS)
        self.subscribe(JointState, "gripper/state", self.on_gripper, STREAM_QOS)
        self.create_service(Trigger, "teleop/hold", self.on_hold)
        self.create_service(Trigger, "teleop/resume", self.on_resume)
        self.create_timer(0.01, self.on_deadline)

    # callbacks run on the single-threaded executor: the arbiter needs no lock
    def on_ee_pose(self, msg: Any) -> None:
        pose = M.pose_stamped_to_array(msg)
        if not np.all(np.isfinite(pose)):
            raise ValueError("pose has non-finite values")
        if not self.steps.observe(M.stamp_to_ns(msg.header), self.now_ns()):
            self.count("ee_pose", "a control step ended undecided")
        self.ee = pose[:3]
        if self.arbiter.mode is not Mode.AUTONOMOUS:
            self.decide(None)  # the operator drives (or the arm holds): no policy to wait for
        elif (early := self.steps.take_early()) is not None:
            self.on_command(*early)  # the command for this step came before its observation

    def on_policy(self, msg: Any) -> None:
        action, _source, obs_stamp = M.joint_state_to_action(msg)
        tick, chunk = chunks.command_tick(*M.joint_state_arrays(msg), obs_stamp)
        if not self.steps.early(tick, (PolicyCommand(action, obs_stamp), chunk)):
            self.on_command(tick, (PolicyCommand(action, obs_stamp), chunk))

    def on_command(self, tick: int, command: tuple[PolicyCommand, Any]) -> None:
        if not self.steps.accept(tick, self.now_ns()):
            self.count("policy/command", "late or repeated command dropped")
            return
        self.decide(*command)

    def on_deadline(self) -> None:
        if self.steps.expired(self.now_ns()):
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
            if event.kind in ("device_lost", "hold", "human_stale"):
                self.get_logger().warning(f"{event.kind}: {event.detail}")

    def on_hold(self, request: Any, response: Any) -> Any:
        self.publish_events(self.arbiter.hold(self.now_ns(), "teleop/hold service"))
        return trigger_reply(response, True, "holding: no motion until teleop/resume")

    def on_resume(self, request: Any, response: Any) -> Any:
        events = self.arbiter.resume(self.now_ns())
        self.publish_events(events)
        return trigger_reply(response, bool(events), "resumed" if events else "was not holding")

    def close(self) -> None:
        self.device.close()


def main(args: list[str] | None = None) -> int:
    return run(TeleopArbiterNode, "teleop_arbiter_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
