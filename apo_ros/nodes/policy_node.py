"""policy_node: runs a policy checkpoint on the live observation stream.

Core: apo_ros.runtime.PolicyRunner (chunks, SafetyFilter, hot-swap) fed by an ObservationAssembler.
Subscribes  camera/<name>/image_raw (sensor_msgs/Image), joint_states (JointState),
            ee_pose (PoseStamped), gripper/state (JointState), instruction (String, latched),
            policy/checkpoint (String, latched: a checkpoint dir to hot-swap to)
Publishes   policy/command (JointState action: header.stamp = observation stamp, frame_id policy)
            action/proposed (the same, before the safety filter)
Services    policy/replan (std_srvs/Trigger)
Parameters  config/policy_node.yaml
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from apo_ros.nodes.common import LATCHED_QOS, STREAM_QOS, declare, now_ns, run, trigger_reply
from apo_ros.recording import messages as M
from apo_ros.runtime.config import load_safety_filter
from apo_ros.runtime.policy_runner import PolicyRunner, RunnerConfig
from apo_ros.runtime.ros_io import AssemblerConfig, ObservationAssembler


def _load(checkpoint: str, device: str) -> tuple[Any, str]:
    from apo_ros.policies import load_policy, policy_id

    return load_policy(checkpoint, device=device), policy_id(checkpoint)


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        p = declare(self, {"checkpoint": "", "device": "cpu", "rate_hz": 10.0, "replan_every": 0,
                           "cameras": ["front", "wrist"], "max_skew_s": 0.1, "safety_config": ""})
        if not p["checkpoint"]:
            raise ValueError("policy_node: set the 'checkpoint' parameter to a checkpoint directory")
        self.device = str(p["device"])
        cameras = tuple(p["cameras"])
        self.types = M.rclpy_types()
        self.assembler = ObservationAssembler(AssemblerConfig(cameras, float(p["max_skew_s"])))
        policy, pid = _load(p["checkpoint"], self.device)
        self.runner = PolicyRunner(policy, load_safety_filter(p["safety_config"]),
                                   RunnerConfig(rate_hz=float(p["rate_hz"]),
                                                replan_every=int(p["replan_every"])), policy_id=pid)
        self.command_pub = self.create_publisher(JointState, "policy/command", STREAM_QOS)
        self.proposed_pub = self.create_publisher(JointState, "action/proposed", STREAM_QOS)
        for cam in cameras:
            self.create_subscription(Image, f"camera/{cam}/image_raw",
                                     functools.partial(self.assembler.on_image, cam), STREAM_QOS)
        self.create_subscription(JointState, "joint_states", self.assembler.on_joint_state, STREAM_QOS)
        self.create_subscription(PoseStamped, "ee_pose", self.assembler.on_ee_pose, STREAM_QOS)
        self.create_subscription(JointState, "gripper/state", self.assembler.on_gripper, STREAM_QOS)
        self.create_subscription(String, "instruction", self.assembler.on_instruction, LATCHED_QOS)
        self.create_subscription(String, "policy/checkpoint", self.on_checkpoint, LATCHED_QOS)
        self.create_service(Trigger, "policy/replan", self.on_replan)
        self.create_timer(1.0 / float(p["rate_hz"]), self.tick)
        self.get_logger().info(f"policy {pid} at {p['rate_hz']} Hz on {cameras}")

    def tick(self) -> None:
        obs = self.assembler.observation()
        if obs is None:
            return
        step = self.runner.step(obs, now_ns=now_ns(self))
        if not step.ok:
            self.get_logger().warn(f"action rejected: {step.reasons}", throttle_duration_sec=1.0)
        self.command_pub.publish(M.make_action(self.types, step.obs_stamp_ns, step.action, "policy"))
        if bool(np.all(np.isfinite(step.proposed))):
            self.proposed_pub.publish(M.make_action(self.types, step.obs_stamp_ns, step.proposed, "policy"))

    def on_checkpoint(self, msg: Any) -> None:
        path = str(msg.data)
        if not path or path == self.runner.policy_id:
            return

        def load_and_swap() -> None:  # loading takes seconds: off the control loop
            try:
                policy, pid = _load(path, self.device)
            except (OSError, ValueError, RuntimeError) as err:
                self.get_logger().error(f"cannot load {path}: {err}")
                return
            self.runner.swap_policy(policy, pid)
            self.get_logger().info(f"hot-swapped to {pid} ({path})")

        threading.Thread(target=load_and_swap, daemon=True).start()

    def on_replan(self, request: Any, response: Any) -> Any:
        self.runner.request_replan()
        return trigger_reply(response, True, "re-planning at the next step")


def main(args: list[str] | None = None) -> int:
    return run(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
