"""recorder_node: records the stack's topics into one rosbag2 bag per episode.

Core: apo_ros.runtime.EpisodeRecorder over the recording core's EpisodeWriter. Stream topics are
subscribed raw: the serialized bytes rclpy receives go to the bag as they are, written at the
message's header stamp (read from the CDR bytes: no image is deserialized).
Records     camera/<name>/image_raw, joint_states, ee_pose, gripper/state, action/executed,
            action/proposed, action/human (raw); instruction (String); episode/events
            (intervention_start | intervention_end from the arbiter)
Lifecycle   services episode/start, episode/success, episode/failure, episode/abort
            (std_srvs/Trigger); device buttons on spacenav/joy (parameters *_button);
            task/success (std_msgs/Bool) ends the episode as a success when end_on_task_success
Parameters  config/recorder_node.yaml
"""

from __future__ import annotations

import functools
from typing import Any

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState, Joy
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from apo_ros.nodes.common import EVENTS_QOS, LATCHED_QOS, STREAM_QOS, declare, now_ns, run, trigger_reply
from apo_ros.recording import schema
from apo_ros.runtime.recorder import INTERVENTION_EVENTS, EpisodeRecorder, RecorderConfig
from apo_ros.runtime.ros_io import cdr_header_stamp_ns
from apo_ros.teleop.joy import joy_to_state

MSG_CLASSES = {schema.IMAGE: Image, schema.COMPRESSED_IMAGE: CompressedImage,
               schema.JOINT_STATE: JointState, schema.POSE_STAMPED: PoseStamped}
RAW_SKIP = (schema.INSTRUCTION, schema.EPISODE_INFO, schema.EPISODE_EVENTS)  # handled by the core


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder_node")
        p = declare(self, {"bags_dir": "bags", "task": "task", "cameras": ["front", "wrist"],
                           "image_format": "raw", "operator": "", "policy_id": "",
                           "start_button": -1, "success_button": -1, "failure_button": -1,
                           "abort_button": -1, "end_on_task_success": True, "auto_start": False})
        cfg = RecorderConfig(bags_dir=str(p["bags_dir"]), task=str(p["task"]),
                             cameras=tuple(p["cameras"]), image_format=str(p["image_format"]),
                             operator=str(p["operator"]), start_button=int(p["start_button"]),
                             success_button=int(p["success_button"]),
                             failure_button=int(p["failure_button"]),
                             abort_button=int(p["abort_button"]))
        self.recorder = EpisodeRecorder(cfg)
        self.policy_id = str(p["policy_id"])
        self.end_on_success = bool(p["end_on_task_success"])
        self.instruction = ""
        for spec in schema.topics(cfg.cameras, cfg.image_format):
            if spec.topic in RAW_SKIP:
                continue
            self.create_subscription(MSG_CLASSES[spec.msgtype], spec.topic,
                                     functools.partial(self.on_raw, spec.topic, spec.msgtype),
                                     STREAM_QOS, raw=True)
        self.create_subscription(String, "instruction", self.on_instruction, LATCHED_QOS)
        self.create_subscription(String, "episode/events", self.on_event, EVENTS_QOS)
        self.create_subscription(String, "policy/checkpoint", self.on_checkpoint, LATCHED_QOS)
        self.create_subscription(Joy, "spacenav/joy", self.on_joy, STREAM_QOS)
        self.create_subscription(Bool, "task/success", self.on_task_success, STREAM_QOS)
        for name in ("start", "success", "failure", "abort"):
            self.create_service(Trigger, f"episode/{name}", functools.partial(self.on_service, name))
        if p["auto_start"]:
            self.start_episode()

    def start_episode(self) -> str:
        path = self.recorder.start(now_ns(self), instruction=self.instruction, policy_id=self.policy_id)
        self.get_logger().info(f"recording {path}")
        return path

    def on_raw(self, topic: str, msgtype: str, cdr: bytes) -> None:
        if self.recorder.active:
            self.recorder.record_serialized(topic, msgtype, cdr_header_stamp_ns(cdr), cdr)

    def on_instruction(self, msg: Any) -> None:
        self.instruction = str(msg.data)

    def on_checkpoint(self, msg: Any) -> None:
        self.policy_id = str(msg.data)  # the next episode names the checkpoint that ran it

    def on_event(self, msg: Any) -> None:
        if self.recorder.active and msg.data in INTERVENTION_EVENTS:
            self.recorder.record_event(now_ns(self), str(msg.data))

    def on_joy(self, msg: Any) -> None:
        now = now_ns(self)
        happened = self.recorder.on_device(joy_to_state(msg, now / 1e9), now)
        if happened:
            self.get_logger().info(f"episode {happened} (device button)")

    def on_task_success(self, msg: Any) -> None:
        if msg.data and self.end_on_success and self.recorder.active:
            record = self.recorder.success(now_ns(self))
            self.get_logger().info(f"success: {record.path} ({record.interventions} interventions)")

    def on_service(self, name: str, request: Any, response: Any) -> Any:
        try:
            if name == "start":
                return trigger_reply(response, True, self.start_episode())
            record = self.recorder.finish(name, now_ns(self))
        except RuntimeError as err:  # no episode open / one already open
            return trigger_reply(response, False, str(err))
        return trigger_reply(response, True, f"{record.path}: {name}, "
                                             f"{record.interventions} interventions")

    def close(self) -> None:
        self.recorder.close()


def main(args: list[str] | None = None) -> int:
    return run(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
