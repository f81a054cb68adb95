"""sim_arm_node: the MuJoCo arm speaking the same topics as a real arm.

Core: apo_ros.sim.make_env (tabletop task, differential IK, cameras). The arm is the graph's
clock: every 1 / control_hz it applies the next twist received (for exactly one control period;
each twist is executed once, in order, and then expires), steps, and publishes the new observation
stamped with the current ROS time. No new twist = no motion.
Subscribes  arm/delta_twist_cmds (TwistStamped, base frame, m/s and rad/s),
            gripper/command (std_msgs/Float64, 0 closed .. 1 open)
Publishes   camera/<name>/image_raw (Image rgb8), joint_states (JointState), ee_pose (PoseStamped),
            gripper/state (JointState), object_poses (PoseArray: task object and target),
            instruction (String, latched: once per episode),
            task/success (std_msgs/Bool), sim/applied (TwistStamped: each twist as it was applied)
Services    sim/reset (std_srvs/Trigger: next seed, new episode)
Parameters  config/sim_arm_node.yaml
"""

from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped, TwistStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from apo_ros.nodes.common import (
    LATCHED_QOS,
    RECORD_QOS,
    STREAM_QOS,
    ApoNode,
    StartupError,
    run,
    trigger_reply,
)
from apo_ros.recording import messages as M
from apo_ros.runtime.ros_io import CommandOnce, twist_to_action


class SimArmNode(ApoNode):
    def __init__(self) -> None:
        super().__init__("sim_arm_node")
        p = self.declare({"task": "lemon_on_plate", "control_hz": 10.0, "image_size": 64,
                          "cameras": ["front", "wrist"], "seed": 0, "command_timeout_s": 1.0,
                          "frame_id": "base_link"})
        from apo_ros.sim.env import make_env  # mujoco: imported once the parameters are known

        self.control_hz = float(p["control_hz"])
        if self.control_hz <= 0:
            raise StartupError(f"control_hz must be > 0, got {self.control_hz}")
        self.cameras = tuple(p["cameras"])
        self.frame_id = str(p["frame_id"])
        self.seed = int(p["seed"])
        try:
            self.env = make_env(str(p["task"]), image_size=int(p["image_size"]),
                                cameras=self.cameras, control_hz=self.control_hz)
        except KeyError as err:  # unknown task
            raise StartupError(str(err.args[0])) from None
        self.types = M.rclpy_types()
        self.twist = CommandOnce(float(p["command_timeout_s"]))
        self.gripper_cmd = 1.0
        self.image_pubs = {c: self.create_publisher(Image, f"camera/{c}/image_raw", RECORD_QOS)
                           for c in self.cameras}
        self.joints_pub = self.create_publisher(JointState, "joint_states", RECORD_QOS)
        self.ee_pub = self.create_publisher(PoseStamped, "ee_pose", RECORD_QOS)
        self.gripper_pub = self.create_publisher(JointState, "gripper/state", RECORD_QOS)
        self.objects_pub = self.create_publisher(PoseArray, "object_poses", RECORD_QOS)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED_QOS)
        self.success_pub = self.create_publisher(Bool, "task/success", RECORD_QOS)
        self.applied_pub = self.create_publisher(TwistStamped, "sim/applied", RECORD_QOS)
        self.subscribe(TwistStamped, "arm/delta_twist_cmds", self.on_twist, STREAM_QOS)
        self.subscribe(Float64, "gripper/command", self.on_gripper, STREAM_QOS)
        self.create_service(Trigger, "sim/reset", self.on_reset)
        self.new_episode(self.env.reset(self.seed))
        self.create_timer(1.0 / self.control_hz, self.tick)

    def on_twist(self, msg: Any) -> None:
        linear, angular = M.twist_stamped_to_arrays(msg)
        if not (np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))):
            raise ValueError("twist has non-finite values")
        counts = (self.twist.late, self.twist.dropped)
        self.twist.put(msg, self.now_ns())
        if self.twist.late > counts[0]:
            self.count("late twists", "a twist arrived before the previous one was applied: it "
                                      "runs one control period late")
        if self.twist.dropped > counts[1]:
            self.count("dropped twists", "twists arrive faster than control_hz: oldest dropped")

    def on_gripper(self, msg: Any) -> None:
        value = float(msg.data)
        if not np.isfinite(value):
            raise ValueError(f"gripper command {value} is not finite")
        self.gripper_cmd = float(np.clip(value, 0.0, 1.0))

    def tick(self) -> None:
        expired = self.twist.expired
        twist = self.twist.take(self.now_ns())
        if self.twist.expired > expired:
            self.count("expired twists", "a twist waited longer than command_timeout_s: not applied")
        linear, angular = M.twist_stamped_to_arrays(twist) if twist is not None else ([0.0] * 3,) * 2
        action = twist_to_action(linear, angular, self.gripper_cmd, self.control_hz)
        obs, _reward, _terminated, _truncated, info = self.env.step(action)
        if twist is not None:
            self.applied_pub.publish(twist)
        self.publish(obs)
        self.success_pub.publish(Bool(data=bool(info["success"])))

    def publish(self, obs: Any) -> None:
        stamp = self.now_ns()  # ROS time, so ages downstream are measured on one clock
        for cam, pub in self.image_pubs.items():
            pub.publish(M.make_image(self.types, stamp, obs.images[cam], frame_id=cam))
        self.joints_pub.publish(M.make_joint_state(self.types, stamp, obs.joint_names,
                                                   obs.joint_positions))
        self.gripper_pub.publish(M.make_gripper_state(self.types, stamp, obs.gripper))
        self.objects_pub.publish(M.make_pose_array(self.types, stamp, obs.object_poses, self.frame_id))
        # ee_pose last: the arbiter starts a control step when it arrives
        self.ee_pub.publish(M.make_pose_stamped(self.types, stamp, obs.ee_pose, self.frame_id))

    def new_episode(self, obs: Any) -> None:
        self.instruction_pub.publish(String(data=obs.instruction))  # latched: once per episode
        self.publish(obs)

    def on_reset(self, request: Any, response: Any) -> Any:
        self.seed += 1
        self.twist.clear()  # a command for the old episode is not applied to the new
        self.new_episode(self.env.reset(self.seed))
        return trigger_reply(response, True, f"episode reset with seed {self.seed}")

    def close(self) -> None:
        self.env.close()


def main(args: list[str] | None = None) -> int:
    return run(SimArmNode, "sim_arm_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
