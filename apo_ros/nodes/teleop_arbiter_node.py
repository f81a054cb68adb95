"""teleop_arbiter_node: decides, every control step, whether the policy or the operator drives.

Core: apo_ros.teleop.TeleopArbiter (modes, take-over / hand-back, timeouts, device loss) and a
final SafetyFilter on whatever is executed. The SpaceMouse is read directly (pyspacemouse,
device:=spacemouse) or through the `spacenav` driver's Joy messages (device:=joy).
Subscribes  policy/command (JointState action), ee_pose (PoseStamped), gripper/state (JointState),
            spacenav/joy (sensor_msgs/Joy, device:=joy)
Publishes   arm/delta_twist_cmds (TwistStamped, current stamp: MoveIt Servo's input),
            gripper/command (std_msgs/Float64, 0 closed .. 1 open),
            action/executed (JointState action: frame_id = source, header.stamp = observation),
            action/human (the operator's command), episode/events (String: intervention_start|end),
            teleop/mode (String: autonomous | intervention | hold)
Services    teleop/hold, teleop/resume (std_srvs/Trigger)
Parameters  config/teleop_arbiter_node.yaml
"""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from apo_ros.actions.space import SOURCES
from apo_ros.nodes.common import EVENTS_QOS, STREAM_QOS, declare, now_ns, run, trigger_reply
from apo_ros.recording import messages as M
from apo_ros.runtime.config import load_safety_filter
from apo_ros.runtime.ros_io import action_to_twist
from apo_ros.teleop.arbiter import ArbiterConfig, PolicyCommand, TeleopArbiter
from apo_ros.teleop.device import TeleopDevice
from apo_ros.teleop.joy import JoyConfig, JoyDevice
from apo_ros.teleop.spacemouse import SpaceMouse, SpaceMouseConfig

ARBITER_PARAMS = {"max_delta": [0.01, 0.01, 0.01, 0.05, 0.05, 0.05], "takeover_on_motion": True,
                  "takeover_deadzone": 0.15, "takeover_button": -1, "handback_button": -1,
                  "idle_handback_s": 1.0, "gripper_close_button": 0, "gripper_open_button": 1,
                  "gripper_takes_over": True, "policy_timeout_s": 0.25, "device_timeout_s": 0.25,
                  "hold_on_device_loss": True}


class TeleopArbiterNode(Node):
    def __init__(self) -> None:
        super().__init__("teleop_arbiter_node")
        p = declare(self, {"control_hz": 10.0, "device": "spacemouse", "deadzone": 0.05,
                           "axis_scale": [1.0] * 6, "axis_sign": [1.0] * 6, "safety_config": "",
                           "frame_id": "base_link", **ARBITER_PARAMS})
        self.control_hz = float(p["control_hz"])
        self.frame_id = str(p["frame_id"])
        self.types = M.rclpy_types()
        self.arbiter = TeleopArbiter(ArbiterConfig(**{k: p[k] for k in ARBITER_PARAMS}))
        self.safety = load_safety_filter(p["safety_config"])
        self.ee: Any = None
        self.obs_stamp = 0  # stamp of the latest ee pose: what the operator's command reacts to
        self.gripper = 1.0
        self.joy: JoyDevice | None = None
        self.device: TeleopDevice
        if p["device"] == "joy":
            self.joy = self.device = JoyDevice(JoyConfig(scale=tuple(p["axis_scale"]),
                                                         deadzone=float(p["deadzone"]),
                                                         sign=tuple(p["axis_sign"])))
            self.create_subscription(Joy, "spacenav/joy", self.on_joy, STREAM_QOS)
        elif p["device"] == "spacemouse":
            self.device = SpaceMouse(SpaceMouseConfig(scale=tuple(p["axis_scale"]),
                                                      deadzone=float(p["deadzone"]),
                                                      sign=tuple(p["axis_sign"])))
        else:
            raise ValueError(f"device must be 'spacemouse' or 'joy', got {p['device']!r}")
        self.twist_pub = self.create_publisher(TwistStamped, "arm/delta_twist_cmds", STREAM_QOS)
        self.gripper_pub = self.create_publisher(Float64, "gripper/command", STREAM_QOS)
        self.executed_pub = self.create_publisher(JointState, "action/executed", STREAM_QOS)
        self.human_pub = self.create_publisher(JointState, "action/human", STREAM_QOS)
        self.events_pub = self.create_publisher(String, "episode/events", EVENTS_QOS)
        self.mode_pub = self.create_publisher(String, "teleop/mode", STREAM_QOS)
        self.create_subscription(JointState, "policy/command", self.on_policy, STREAM_QOS)
        self.create_subscription(PoseStamped, "ee_pose", self.on_ee_pose, STREAM_QOS)
        self.create_subscription(JointState, "gripper/state", self.on_gripper, STREAM_QOS)
        self.create_service(Trigger, "teleop/hold", self.on_hold)
        self.create_service(Trigger, "teleop/resume", self.on_resume)
        self.create_timer(1.0 / self.control_hz, self.tick)

    # callbacks run on the single-threaded executor, like tick(): the arbiter needs no lock
    def on_policy(self, msg: Any) -> None:
        action, _source, obs_stamp = M.joint_state_to_action(msg)
        self.arbiter.on_policy(PolicyCommand(action, obs_stamp), now_ns(self))

    def on_joy(self, msg: Any) -> None:
        if self.joy is not None:
            self.joy.on_joy(msg, now_ns(self) / 1e9)

    def on_ee_pose(self, msg: Any) -> None:
        self.ee = M.pose_stamped_to_array(msg)[:3]
        self.obs_stamp = M.stamp_to_ns(msg.header)

    def on_gripper(self, msg: Any) -> None:
        _names, pos = M.joint_state_arrays(msg)
        if len(pos):
            self.gripper = float(pos[0])

    def tick(self) -> None:
        now = now_ns(self)
        out = self.arbiter.update(now, device=self.device.read(), obs_stamp_ns=self.obs_stamp)
        # The last check before the arm: an unknown ee pose means no motion at all.
        safe = self.safety.filter(out.action, self.ee, self.gripper).action
        linear, angular, gripper = action_to_twist(safe, self.control_hz)
        self.twist_pub.publish(M.make_twist_stamped(self.types, now, linear, angular, self.frame_id))
        self.gripper_pub.publish(Float64(data=gripper))
        for event in out.events:
            self.events_pub.publish(String(data=event.kind))
            if event.kind in ("device_lost", "hold", "human_stale", "policy_stale"):
                self.get_logger().warn(f"{event.kind}: {event.detail}")
        if out.source in SOURCES:
            self.executed_pub.publish(M.make_action(self.types, out.obs_stamp_ns, safe, out.source))
        if out.source == "human":
            self.human_pub.publish(M.make_action(self.types, out.obs_stamp_ns, out.action, "human"))
        self.mode_pub.publish(String(data=out.mode.value))

    def on_hold(self, request: Any, response: Any) -> Any:
        self.arbiter.hold(now_ns(self), "service")
        return trigger_reply(response, True, "holding: no motion until teleop/resume")

    def on_resume(self, request: Any, response: Any) -> Any:
        events = self.arbiter.resume(now_ns(self))
        return trigger_reply(response, bool(events), "resumed" if events else "was not holding")

    def close(self) -> None:
        self.device.close()


def main(args: list[str] | None = None) -> int:
    return run(TeleopArbiterNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
