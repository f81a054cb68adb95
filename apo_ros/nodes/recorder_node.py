"""recorder_node: records the stack's topics into one rosbag2 bag per episode (core:
apo_ros.runtime.EpisodeRecorder). Stream topics are subscribed raw: the bytes go to the bag at
the message's header stamp. Raw images go in as rgb8: bgr8 / rgba8 / bgra8 / mono8 converted (as
cv_bridge would), anything else (depth, empty, oversized, bad step) not written, counted and
logged per kind (apo_ros.recording.images). A message stamped before the episode began or more
than stamp_tolerance_s in the future is not written. Sensor inputs follow best-effort drivers
(sensor_qos). Ctrl-C / SIGTERM close an open episode as "abort" (the bag is finalized).
Records     camera/<name>/image_raw, joint_states, ee_pose, gripper/state, object_poses,
            action/executed, action/proposed, action/human (raw); instruction; episode/events
Provenance  policy/active (String JSON from policy_node): policy_id and stats_id of the next bags
Lifecycle   services episode/start|success|failure|abort (std_srvs/Trigger); device buttons on
            spacenav/joy (*_button); task/success ends the episode when end_on_task_success
Parameters  config/recorder_node.yaml (cameras, image_format, auto_start, sensor_qos: at start;
            the rest at run time too: bags_dir, task, operator from the next episode)
"""

from __future__ import annotations

import functools
import json
from typing import Any

from geometry_msgs.msg import PoseArray, PoseStamped
from sensor_msgs.msg import CompressedImage, Image, JointState, Joy
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from apo_ros.nodes.common import (
    EVENTS_QOS,
    LATCHED_QOS,
    RECORD_QOS,
    SENSOR_QOS_CHOICES,
    STREAM_QOS,
    ApoNode,
    Param,
    run,
    trigger_reply,
)
from apo_ros.recording import images, schema
from apo_ros.runtime.recorder import EpisodeRecorder, RecorderConfig
from apo_ros.runtime.ros_io import cdr_header_stamp_ns
from apo_ros.teleop.joy import joy_to_state

MSG_CLASSES = {schema.IMAGE: Image, schema.COMPRESSED_IMAGE: CompressedImage,
               schema.JOINT_STATE: JointState, schema.POSE_STAMPED: PoseStamped,
               schema.POSE_ARRAY: PoseArray}
RAW_SKIP = (schema.INSTRUCTION, schema.EPISODE_INFO, schema.EPISODE_EVENTS)  # handled by the core
RECORDED_EVENTS = ("intervention_start", "intervention_end", "hold", "resume")
SENSORS = (schema.JOINT_STATES, schema.EE_POSE, schema.GRIPPER_STATE)  # + cameras; object_poses: sim only


class RecorderNode(ApoNode):
    def __init__(self) -> None:
        super().__init__("recorder_node")
        config_fields = ("bags_dir", "task", "operator", "start_button", "success_button",
                         "failure_button", "abort_button")
        button = Param(-1, low=-1, high=63)
        p = self.declare({"bags_dir": "bags", "task": "task", "cameras": ["front", "wrist"],
                          "image_format": Param("raw", choices=("raw", "jpeg")), "operator": "",
                          "start_button": button, "success_button": button,
                          "failure_button": button, "abort_button": button,
                          "end_on_task_success": True, "auto_start": False,
                          "stamp_tolerance_s": Param(1.0, low=0.0, high=3600.0),
                          "max_image_pixels": Param(images.MAX_PIXELS, low=1, high=2**31 - 1),
                          "sensor_qos": Param("auto", choices=SENSOR_QOS_CHOICES)},
                         appliers={**{f: functools.partial(self.set_config, f) for f in config_fields},
                                   "end_on_task_success": self.setter("end_on_success", bool),
                                   "stamp_tolerance_s": self.setter("tolerance_ns", _ns),
                                   "max_image_pixels": self.setter("max_pixels", int)})
        cfg = RecorderConfig(**{f: p[f] for f in config_fields}, cameras=tuple(p["cameras"]),
                             image_format=str(p["image_format"]))
        self.recorder = EpisodeRecorder(cfg)
        self.tolerance_ns = _ns(p["stamp_tolerance_s"])
        self.max_pixels = int(p["max_image_pixels"])
        self.provenance = {"policy_id": "", "stats_id": ""}  # from policy/active
        self.end_on_success = bool(p["end_on_task_success"])
        self.instruction = ""
        self.sensor_inputs(str(p["sensor_qos"]))
        for spec in schema.topics(cfg.cameras, cfg.image_format):
            if spec.topic in RAW_SKIP:
                continue
            self.subscribe(MSG_CLASSES[spec.msgtype], spec.topic,
                           functools.partial(self.on_raw, spec.topic, spec.msgtype), RECORD_QOS,
                           raw=True, sensor=spec.topic in SENSORS or spec.topic.startswith("camera/")
                           or spec.topic == schema.OBJECT_POSES)
        self.expect([t.topic for t in schema.topics(cfg.cameras, cfg.image_format)
                     if t.topic in SENSORS or t.topic.startswith("camera/")])
        self.subscribe(String, "instruction", self.on_instruction, LATCHED_QOS)
        self.subscribe(String, "episode/events", self.on_event, EVENTS_QOS)
        self.subscribe(String, "policy/active", self.on_policy_active, LATCHED_QOS)
        self.subscribe(Joy, "spacenav/joy", self.on_joy, STREAM_QOS)
        self.subscribe(Bool, "task/success", self.on_task_success, STREAM_QOS)
        for name in ("start", "success", "failure", "abort"):
            self.create_service(Trigger, f"episode/{name}", functools.partial(self.on_service, name))
        if p["auto_start"]:
            self.start_episode()
        self.start_diagnostics()

    def set_config(self, field: str, value: Any) -> None:
        setattr(self.recorder.config, field, value)  # the buttons at once, the rest from the next episode

    def start_episode(self) -> str:
        path = self.recorder.start(self.now_ns(), instruction=self.instruction,
                                   policy_id=self.provenance["policy_id"],
                                   metadata={"stats_id": self.provenance["stats_id"]})
        self.get_logger().info(f"recording {path} (policy {self.provenance['policy_id'] or '?'})")
        return path

    def on_raw(self, topic: str, msgtype: str, cdr: bytes) -> None:
        if self.recorder.active:
            if msgtype == schema.IMAGE:
                try:
                    cdr, encoding = images.as_rgb8_cdr(cdr, self.max_pixels)
                except images.ImageProblem as err:
                    self.count(topic, f"image not recorded: {err}", err.kind)
                    return
                if encoding != "rgb8":
                    self.count(topic, f"{encoding} images are recorded as rgb8", f"convert {encoding}")
            stamp = cdr_header_stamp_ns(cdr)
            if stamp > self.now_ns() + self.tolerance_ns:
                raise ValueError(f"stamp {stamp / 1e9:.3f} s is in the future; not written")
            self.recorder.record_serialized(topic, msgtype, stamp, cdr)

    def on_instruction(self, msg: Any) -> None:
        self.instruction = str(msg.data)

    def on_policy_active(self, msg: Any) -> None:
        info = json.loads(msg.data)
        if not isinstance(info, dict) or not isinstance(info.get("policy_id"), str):
            raise ValueError("policy/active must be a JSON object with a policy_id")
        self.provenance = {"policy_id": info["policy_id"], "stats_id": str(info.get("stats_id", ""))}

    def on_event(self, msg: Any) -> None:
        if msg.data not in RECORDED_EVENTS:
            raise ValueError(f"unknown event {msg.data!r} (expected one of {RECORDED_EVENTS})")
        if self.recorder.active:
            self.recorder.record_event(self.now_ns(), str(msg.data))

    def on_joy(self, msg: Any) -> None:
        now = self.now_ns()
        happened = self.recorder.on_device(joy_to_state(msg, now / 1e9), now)
        if happened:
            self.get_logger().info(f"episode {happened} (device button)")

    def on_task_success(self, msg: Any) -> None:
        if msg.data and self.end_on_success and self.recorder.active:
            record = self.recorder.success(self.now_ns())
            self.get_logger().info(f"success: {record.path} ({record.interventions} interventions)")

    def on_service(self, name: str, request: Any, response: Any) -> Any:
        try:
            if name == "start":
                return trigger_reply(response, True, self.start_episode())
            record = self.recorder.finish(name, self.now_ns())
        except RuntimeError as err:  # no episode open / one already open
            return trigger_reply(response, False, str(err))
        return trigger_reply(response, True, f"{record.path}: {name}, "
                                             f"{record.interventions} interventions")

    def diagnostic_values(self) -> dict[str, Any]:
        return {"recording": self.recorder.path or "(no episode)"}

    def close(self) -> None:
        path = self.recorder.path
        self.recorder.close()
        if path:
            self.get_logger().info(f"{path}: closed as abort (shutdown)")


def _ns(seconds: Any) -> int:
    return int(float(seconds) * 1e9)


def main(args: list[str] | None = None) -> int:
    return run(RecorderNode, "recorder_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
