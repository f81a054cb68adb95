"""recorder_node: one rosbag2 bag per episode (core: apo_ros.runtime.EpisodeRecorder). Stream topics
are subscribed raw and written at their header stamp; raw images as rgb8 (bgr8 / rgba8 / bgra8 /
mono8 converted as cv_bridge would; the rest counted per kind, not written: recording.images);
nothing stamped before the episode or beyond stamp_tolerance_s ahead. Intervention events get the
stamp of their step (recording.event_stamps). Sensor inputs follow best-effort drivers
(sensor_qos). Ctrl-C / SIGTERM close an open episode as "abort" (the bag is finalized).
Records     camera/<name>/image_raw, joint_states, ee_pose, gripper/state, object_poses,
            action/executed|proposed|human (raw); instruction; episode/events
Provenance  policy/active (JSON from policy_node): policy_id and stats_id of the next bags
Lifecycle   episode/start|success|failure|abort (Trigger); spacenav/joy buttons; task/success
Parameters  config/recorder_node.yaml (cameras, image_format, auto_start, sensor_qos: at start)
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
from apo_ros.recording.intake import RawIntake
from apo_ros.runtime.recorder import EpisodeRecorder, RecorderConfig
from apo_ros.teleop.joy import joy_to_state

MSG_CLASSES = {schema.IMAGE: Image, schema.COMPRESSED_IMAGE: CompressedImage, schema.JOINT_STATE:
               JointState, schema.POSE_STAMPED: PoseStamped, schema.POSE_ARRAY: PoseArray}
RAW_SKIP = (schema.INSTRUCTION, schema.EPISODE_INFO, schema.EPISODE_EVENTS)  # handled by the core
RECORDED_EVENTS = ("intervention_start", "intervention_end", "hold", "resume")
SENSORS = (schema.JOINT_STATES, schema.EE_POSE, schema.GRIPPER_STATE, schema.OBJECT_POSES)  # + cameras


class RecorderNode(ApoNode):
    def __init__(self) -> None:
        super().__init__("recorder_node")
        config_fields = ("bags_dir", "task", "operator", "start_button", "success_button",
                         "failure_button", "abort_button")
        button = Param(-1, low=-1, high=63)
        cfg, self.intake = RecorderConfig(), RawIntake()
        p = self.declare({"bags_dir": "bags", "task": "task", "cameras": ["front", "wrist"],
                          "image_format": Param("raw", choices=("raw", "jpeg")), "operator": "",
                          "start_button": button, "success_button": button,
                          "failure_button": button, "abort_button": button,
                          "end_on_task_success": True, "auto_start": False,
                          "stamp_tolerance_s": Param(1.0, low=0.0, high=3600.0),
                          "max_image_pixels": Param(images.MAX_PIXELS, low=1, high=2**31 - 1),
                          "sensor_qos": Param("auto", choices=SENSOR_QOS_CHOICES)},
                         appliers={  # buttons at once; bags_dir, task, operator: from the next episode
                             **{f: functools.partial(setattr, cfg, f) for f in config_fields},
                             **{k: functools.partial(self.intake.set, k) for k in RawIntake.SETTINGS},
                             "end_on_task_success": self.setter("end_on_success", bool)})
        for f in config_fields:
            setattr(cfg, f, p[f])
        cfg.cameras, cfg.image_format = tuple(p["cameras"]), str(p["image_format"])
        self.recorder = EpisodeRecorder(cfg)
        for k in RawIntake.SETTINGS:
            self.intake.set(k, p[k])
        self.provenance = {"policy_id": "", "stats_id": ""}  # from policy/active
        self.end_on_success, self.instruction = bool(p["end_on_task_success"]), ""
        self.sensor_inputs(str(p["sensor_qos"]))
        for spec in schema.topics(cfg.cameras, cfg.image_format):
            if spec.topic in RAW_SKIP:
                continue
            self.subscribe(MSG_CLASSES[spec.msgtype], spec.topic,
                           functools.partial(self.on_raw, spec.topic, spec.msgtype), RECORD_QOS,
                           raw=True, sensor=_sensor(spec.topic))
        self.expect([t.topic for t in schema.topics(cfg.cameras, cfg.image_format)  # not in a robot's
                     if _sensor(t.topic) and t.topic != schema.OBJECT_POSES])  # graph: object_poses
        self.subscribe(String, "instruction", self.on_instruction, LATCHED_QOS)
        self.subscribe(String, "episode/events", self.on_event, EVENTS_QOS)
        self.subscribe(String, "policy/active", self.on_policy_active, LATCHED_QOS)
        self.subscribe(Joy, "spacenav/joy", self.on_joy, STREAM_QOS)
        self.subscribe(Bool, "task/success", self.on_task_success, STREAM_QOS)
        for name in ("start", "success", "failure", "abort"):
            self.create_service(Trigger, f"episode/{name}", functools.partial(self.on_service, name))
        if p["auto_start"]:  # as soon as the clock runs (under use_sim_time: the first /clock)
            self.auto_timer = self.create_timer(0.1, self.auto_start, clock=self.steady)
        self.start_diagnostics()

    def auto_start(self) -> None:
        if self.now_ns() > 0:
            self.auto_timer.cancel()
            self.start_episode()

    def start_episode(self) -> str:
        if self.now_ns() <= 0:  # a bag would start in 1970
            raise RuntimeError("no clock yet (use_sim_time: nothing on /clock so far); try again")
        path = self.recorder.start(self.now_ns(), instruction=self.instruction,
                                   policy_id=self.provenance["policy_id"],
                                   metadata={"stats_id": self.provenance["stats_id"]})
        self.get_logger().info(f"recording {path} (policy {self.provenance['policy_id'] or '?'})")
        return path

    def on_raw(self, topic: str, msgtype: str, cdr: bytes) -> None:
        if self.recorder.active:
            try:
                got = self.intake.admit(topic, msgtype, cdr, self.now_ns())
            except images.ImageProblem as err:
                self.count(topic, f"image not recorded: {err}", err.kind)
                return
            if got.converted_from:
                self.count(topic, f"{got.converted_from} images are recorded as rgb8", got.converted_from)
            self.recorder.record_serialized(topic, msgtype, got.stamp_ns, got.data)
            self.write_events(got.events)

    def write_events(self, events: list[tuple[int, str]]) -> None:
        for stamp, kind in events:
            self.recorder.record_event(stamp, kind)

    def settle_events(self) -> None:
        """Before the episode ends: events no step confirmed, at their arrival time."""
        if self.recorder.active:
            self.write_events(self.intake.events.flush(self.now_ns()))

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
        if self.recorder.active:  # intervention events at their step's stamp
            self.write_events(self.intake.events.on_event(str(msg.data), self.now_ns()))

    def on_joy(self, msg: Any) -> None:
        now = self.now_ns()
        happened = self.recorder.on_device(joy_to_state(msg, now / 1e9), now)
        if happened:  # a button started or ended the episode
            self.get_logger().info(f"episode {happened} (device button)")

    def on_task_success(self, msg: Any) -> None:
        if msg.data and self.end_on_success and self.recorder.active:
            self.settle_events()
            record = self.recorder.success(self.now_ns())
            self.get_logger().info(f"success: {record.path} ({record.interventions} interventions)")

    def on_service(self, name: str, request: Any, response: Any) -> Any:
        try:
            if name == "start":
                return trigger_reply(response, True, self.start_episode())
            self.settle_events()
            record = self.recorder.finish(name, self.now_ns())
        except RuntimeError as err:  # no episode open / one already open
            return trigger_reply(response, False, str(err))
        return trigger_reply(response, True, f"{record.path}: {name}, {record.interventions} interventions")

    def diagnostic_values(self) -> dict[str, Any]:
        return {"recording": self.recorder.path or "(no episode)"}

    def close(self) -> None:
        path = self.recorder.path
        self.recorder.close()
        if path:
            self.get_logger().info(f"{path}: closed as abort (shutdown)")


def _sensor(topic: str) -> bool:
    return topic in SENSORS or topic.startswith("camera/")


def main(args: list[str] | None = None) -> int:
    return run(RecorderNode, "recorder_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
