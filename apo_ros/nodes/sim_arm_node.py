"""sim_arm_node: the MuJoCo arm speaking the same topics as a real arm.

Core: apo_ros.sim.make_env (tabletop task, differential IK, cameras). Like MoveIt Servo, it takes
velocity commands and stops when they stop (command_timeout_s), so the stack above it cannot tell
it from the robot.
Subscribes  arm/delta_twist_cmds (TwistStamped, base frame, m/s and rad/s),
            gripper/command (std_msgs/Float64, 0 closed .. 1 open)
Publishes   camera/<name>/image_raw (Image rgb8), joint_states (JointState), ee_pose (PoseStamped),
            gripper/state (JointState), instruction (String, latched), task/success (std_msgs/Bool)
Services    sim/reset (std_srvs/Trigger: next seed, new episode)
Parameters  config/sim_arm_node.yaml
"""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from apo_ros.nodes.common import LATCHED_QOS, STREAM_QOS, declare, now_ns, run, trigger_reply
from apo_ros.recording import messages as M
from apo_ros.runtime.ros_io import CommandTimeout, twist_to_action


class SimArmNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_arm_node")
        p = declare(self, {"task": "lemon_on_plate", "control_hz": 10.0, "image_size": 64,
                           "cameras": ["front", "wrist"], "seed": 0, "command_timeout_s": 0.2,
                           "frame_id": "base_link"})
        from apo_ros.sim.env import make_env  # mujoco: imported once the parameters are known

        self.control_hz = float(p["control_hz"])
        self.cameras = tuple(p["cameras"])
        self.frame_id = str(p["frame_id"])
        self.seed = int(p["seed"])
        self.env = make_env(str(p["task"]), image_size=int(p["image_size"]), cameras=self.cameras,
                            control_hz=self.control_hz)
        self.types = M.rclpy_types()
        self.twist = CommandTimeout(float(p["command_timeout_s"]))
        self.gripper_cmd = 1.0
        self.image_pubs = {c: self.create_publisher(Image, f"camera/{c}/image_raw", STREAM_QOS)
                           for c in self.cameras}
        self.joints_pub = self.create_publisher(JointState, "joint_states", STREAM_QOS)
        self.ee_pub = self.create_publisher(PoseStamped, "ee_pose", STREAM_QOS)
        self.gripper_pub = self.create_publisher(JointState, "gripper/state", STREAM_QOS)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED_QOS)
        self.success_pub = self.create_publisher(Bool, "task/success", STREAM_QOS)
        self.create_subscription(TwistStamped, "arm/delta_twist_cmds", self.on_twist, STREAM_QOS)
        self.create_subscription(Float64, "gripper/command", self.on_gripper, STREAM_QOS)
        self.create_service(Trigger, "sim/reset", self.on_reset)
        self.publish(self.env.reset(self.seed))
        self.create_timer(1.0 / self.control_hz, self.tick)

    def on_twist(self, msg: Any) -> None:
        self.twist.set(M.twist_stamped_to_arrays(msg), now_ns(self))

    def on_gripper(self, msg: Any) -> None:
        self.gripper_cmd = float(msg.data)

    def tick(self) -> None:
        latest = self.twist.get(now_ns(self))
        linear, angular = latest if latest is not None else ([0.0] * 3, [0.0] * 3)
        action = twist_to_action(linear, angular, self.gripper_cmd, self.control_hz)
        obs, _reward, success, _truncated, _info = self.env.step(action)
        self.publish(obs)
        self.success_pub.publish(Bool(data=bool(success)))

    def publish(self, obs: Any) -> None:
        stamp = now_ns(self)  # ROS time, so ages downstream are measured on one clock
        for cam, pub in self.image_pubs.items():
            pub.publish(M.make_image(self.types, stamp, obs.images[cam], frame_id=cam))
        self.joints_pub.publish(M.make_joint_state(self.types, stamp, obs.joint_names,
                                                   obs.joint_positions))
        self.ee_pub.publish(M.make_pose_stamped(self.types, stamp, obs.ee_pose, self.frame_id))
        self.gripper_pub.publish(M.make_gripper_state(self.types, stamp, obs.gripper))
        self.instruction_pub.publish(String(data=obs.instruction))

    def on_reset(self, request: Any, response: Any) -> Any:
        self.seed += 1
        self.publish(self.env.reset(self.seed))
        return trigger_reply(response, True, f"episode reset with seed {self.seed}")

    def close(self) -> None:
        self.env.close()


def main(args: list[str] | None = None) -> int:
    return run(SimArmNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
