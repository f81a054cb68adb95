"""sim_arm_node: the MuJoCo arm speaking the same topics as a real arm (core: apo_ros.sim.make_env,
apo_ros.sim.twists). The graph's clock: every 1 / control_hz it applies the newest twist received
since the last tick (once; older waiting ones are superseded, so it never runs behind), speed-
limited, in the base or tool frame; steps; publishes /clock (simulated time) and the observation
stamped with ROS time (simulated time under use_sim_time). No twist = no motion.
Subscribes  arm/delta_twist_cmds (TwistStamped), gripper/command (Float64, 0 closed .. 1 open)
Publishes   camera/<name>/image_raw (rgb8, frame <name>_camera_optical_frame), joint_states, ee_pose,
            gripper/state, object_poses, instruction (latched), task/success, sim/applied (each
            twist as applied), /clock, /diagnostics.  Services: sim/reset (next seed)
Parameters  config/sim_arm_node.yaml (seed, timeout, frames, speed limits, clock: at run time too)
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped, TwistStamped
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from apo_ros.nodes.common import (
    LATCHED_QOS,
    RECORD_QOS,
    STREAM_QOS,
    ApoNode,
    Param,
    run,
    trigger_reply,
)
from apo_ros.recording import messages as M
from apo_ros.runtime.ros_io import twist_to_action
from apo_ros.sim.env import make_env
from apo_ros.sim.tasks import TASKS
from apo_ros.sim.twists import ServoInput

NS = 1_000_000_000


class SimArmNode(ApoNode):
    def __init__(self) -> None:
        super().__init__("sim_arm_node")
        # descriptions: the comments in config/sim_arm_node.yaml
        p = self.declare({
            "task": Param("lemon_on_plate", choices=tuple(TASKS)),
            "control_hz": Param(10.0, low=0.1, high=1000.0),
            "image_size": Param(64, low=8, high=1024), "cameras": ["front", "wrist"], "seed": 0,
            "command_timeout_s": Param(1.0, low=0.001, high=60.0), "frame_id": "base_link",
            "tool_frame_id": "tool0", "max_linear_speed": Param(0.25, low=0.0, high=10.0),
            "max_angular_speed": Param(1.5, low=0.0, high=100.0), "publish_clock": True,
        }, appliers={"seed": self.setter("seed", lambda v: int(v) - 1),  # the next reset's
                     "publish_clock": self.setter("publish_clock", bool),
                     **{k: functools.partial(self.set_servo, k) for k in ServoInput.SETTINGS}})

        self.control_hz = float(p["control_hz"])
        self.cameras = tuple(p["cameras"])
        self.publish_clock = bool(p["publish_clock"])
        self.seed = int(p["seed"])
        self.env = make_env(str(p["task"]), image_size=int(p["image_size"]), cameras=self.cameras,
                            control_hz=self.control_hz)
        self.types = M.rclpy_types()
        self.servo = ServoInput(float(p["command_timeout_s"]), str(p["frame_id"]),
                                str(p["tool_frame_id"]), float(p["max_linear_speed"]),
                                float(p["max_angular_speed"]))
        self.gripper_cmd = 1.0
        # The simulated time: starts at the wall clock (bags carry real dates) and advances by
        # exactly one control period per tick, however slow the machine is.
        self.sim_time = bool(self.get_parameter("use_sim_time").value)
        self.sim_ns = time.time_ns()
        self.image_pubs = {c: self.create_publisher(Image, f"camera/{c}/image_raw", RECORD_QOS)
                           for c in self.cameras}
        self.pub = {topic: self.create_publisher(t, topic, RECORD_QOS) for topic, t in (
            ("joint_states", JointState), ("ee_pose", PoseStamped), ("gripper/state", JointState),
            ("object_poses", PoseArray), ("task/success", Bool), ("sim/applied", TwistStamped))}
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED_QOS)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.subscribe(TwistStamped, "arm/delta_twist_cmds", self.on_twist, STREAM_QOS)
        self.subscribe(Float64, "gripper/command", self.on_gripper, STREAM_QOS)
        self.create_service(Trigger, "sim/reset", self.on_reset)
        self.publish_time()
        self.new_episode(self.env.reset(self.seed))
        # a steady timer: the arm drives the simulated clock, so it cannot wait on it
        self.create_timer(1.0 / self.control_hz, self.tick, clock=self.steady)
        self.start_diagnostics()

    def set_servo(self, name: str, value: Any) -> None:
        self.servo.set(name, value)

    def stamp_ns(self) -> int:
        """Now: the simulated time under use_sim_time (this node is the clock), else ROS time."""
        return self.sim_ns if self.sim_time else self.now_ns()

    def on_twist(self, msg: Any) -> None:
        linear, angular = M.twist_stamped_to_arrays(msg)
        if self.servo.put(M.stamp_to_ns(msg.header), str(msg.header.frame_id), linear, angular,
                          self.stamp_ns()):
            self.count("arm/delta_twist_cmds", f"a twist beyond the speed limits ({self.servo.max_linear}"
                       f" m/s, {self.servo.max_angular} rad/s) was scaled down", "limited")

    def on_gripper(self, msg: Any) -> None:
        value = float(msg.data)
        if not np.isfinite(value):
            raise ValueError(f"gripper command {value} is not finite")
        self.gripper_cmd = float(np.clip(value, 0.0, 1.0))

    def tick(self) -> None:
        queue = self.servo.queue
        superseded, expired = queue.superseded, queue.expired
        twist = self.servo.take(self.stamp_ns())
        if queue.superseded > superseded:
            self.count("superseded twists", "more than one twist waited at a tick: the newest was "
                                            "applied, the older dropped (the sender is catching up)")
        if queue.expired > expired:
            self.count("expired twists", "a twist waited longer than command_timeout_s: not applied")
        linear, angular = twist[1:] if twist is not None else ([0.0] * 3,) * 2
        obs, _reward, _terminated, _truncated, info = self.env.step(
            twist_to_action(linear, angular, self.gripper_cmd, self.control_hz))
        self.sim_ns += int(NS / self.control_hz)
        self.publish_time()
        if twist is not None:
            self.pub["sim/applied"].publish(M.make_twist_stamped(self.types, twist[0], linear, angular,
                                                          frame_id=self.servo.base_frame))
        self.publish(obs)
        self.pub["task/success"].publish(Bool(data=bool(info["success"])))

    def publish_time(self) -> None:
        if self.publish_clock:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(self.sim_ns, NS)
            self.clock_pub.publish(msg)

    def publish(self, obs: Any) -> None:
        stamp = self.stamp_ns()  # one clock for the whole graph, so ages downstream are right
        self.servo.tool_quat = np.asarray(obs.ee_pose, dtype=np.float64)[3:7]
        frame = self.servo.base_frame
        for cam, pub in self.image_pubs.items():
            pub.publish(M.make_image(self.types, stamp, obs.images[cam],
                                     frame_id=f"{cam}_camera_optical_frame"))
        self.pub["joint_states"].publish(M.make_joint_state(self.types, stamp, obs.joint_names,
                                                   obs.joint_positions))
        self.pub["gripper/state"].publish(M.make_gripper_state(self.types, stamp, obs.gripper))
        self.pub["object_poses"].publish(M.make_pose_array(self.types, stamp, obs.object_poses, frame))
        # ee_pose last: the arbiter starts a control step when it arrives
        self.pub["ee_pose"].publish(M.make_pose_stamped(self.types, stamp, obs.ee_pose, frame))

    def new_episode(self, obs: Any) -> None:
        self.instruction_pub.publish(String(data=obs.instruction))  # latched: once per episode
        self.publish(obs)

    def on_reset(self, request: Any, response: Any) -> Any:
        self.seed += 1
        self.servo.queue.clear()  # a command for the old episode is not applied to the new
        self.new_episode(self.env.reset(self.seed))
        return trigger_reply(response, True, f"episode reset with seed {self.seed}")

    def diagnostic_values(self) -> dict[str, Any]:
        q = self.servo.queue
        return {"control_hz": self.control_hz, "seed": self.seed, "twists applied": q.applied,
                "twists superseded": q.superseded, "twists expired": q.expired,
                "twists limited": self.servo.limited, "sim time (s)": f"{self.sim_ns / NS:.3f}"}

    def close(self) -> None:
        self.env.close()


def main(args: list[str] | None = None) -> int:
    return run(SimArmNode, "sim_arm_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
