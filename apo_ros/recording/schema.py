"""The episode bag schema: every topic an apo_ros bag holds, its standard ROS 2 message type and the
QoS profile recorded for it. The writer, the reader, the repair tool, the ROS recorder node and
docs/recording.md all follow this one table.

One bag = one episode. Storage: rosbag2 directory, MCAP with zstd chunk compression, metadata
version 8 (Humble and Jazzy read it). All topic names are relative (remappable under a namespace).

Linkage rule: every observation message carries the observation's stamp in
`header.stamp` and is written at that bag time; every action message carries, in `header.stamp`,
the stamp of the observation it was computed from, and is written at the time it was executed.
The reader joins actions to observations by that stamp, never by arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

# --- message types (rosbags / ROS 2 names) -------------------------------------------------------
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_ARRAY = "geometry_msgs/msg/PoseArray"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
STRING = "std_msgs/msg/String"

# --- topics ---------------------------------------------------------------------------------------
JOINT_STATES = "joint_states"  # JointState: arm + finger joints (URDF names), header.stamp = obs stamp
EE_POSE = "ee_pose"  # PoseStamped: tool frame in the arm base frame, header.stamp = obs stamp
GRIPPER_STATE = "gripper/state"  # JointState, name ["gripper"], position [opening 0..1, 1 = open]
# PoseArray, header.stamp = obs stamp, frame_id = BASE_FRAME: the task's objects (the manipulated
# object, then its target), as a perception or motion-capture node (or the simulator) reports them.
# Optional: only state-based policies need it.
OBJECT_POSES = "object_poses"
INSTRUCTION = "instruction"  # String, latched (transient local): the task's language instruction
EPISODE_INFO = "episode/info"  # String, latched: JSON of the episode metadata (survives a crash)
EPISODE_EVENTS = "episode/events"  # String: one of EVENT_KINDS, bag time = when it happened
ACTION_EXECUTED = "action/executed"  # JointState: the 7-D action sent to the arm (see below)
ACTION_PROPOSED = "action/proposed"  # JointState: what the policy proposed for that observation
ACTION_HUMAN = "action/human"  # JointState: the operator's command (SpaceMouse), before arbitration
ACTION_TOKENS = "action/tokens"  # JointState: the token ids the policy produced for its proposal

# Action messages (executed / proposed / human): sensor_msgs/JointState with
#   header.stamp    = stamp of the observation the action was computed from
#   header.frame_id = source: "policy" | "human" | "expert" (proposed: "policy")
#   name            = ACTION_NAMES ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
#   position        = the 7 raw values (metres / radians per control step, gripper 0..1)
# and bag time = when the action was executed (or proposed / commanded).
#
# Token messages (action/tokens): sensor_msgs/JointState, one beside every action/proposed
# message of a policy that names its tokens (same header.stamp, same bag time, same order), with
#   header.stamp    = stamp of the observation the action was computed from
#   header.frame_id = the token space: what an id means, "<tokenizer>@stats=<statistics id>",
#                     e.g. "bins:grid:n=64:vocab=64@stats=3fa2c19e07d1" (TokenPolicy.action_token_space)
#   name            = ACTION_NAMES for bin tokenizers (the id of each action dimension)
#   position        = the ids as floats (exact below 2**53) of THIS action of the chunk: the
#                     policy's own output (the argmax tokens when its actions are expected values)
# The k-th token message of an observation belongs to its k-th proposal, as the k-th proposal
# belongs to its k-th executed action: a chunk's executed action i carries its own ids.

# --- chunk provenance of policy actions (action queue) -------------------------------------------
# A policy action (executed, source "policy"; and policy/command in the graph) may append five
# names after the seven above, values in `position` (apo_ros/recording/chunks.py builds and reads
# them; the reader exposes them as Step.chunk):
#   chunk_index          its index in the chunk computed from the header.stamp observation
#   inference_latency_s  observation -> chunk ready
#   merge_rule           0 one chunk, 1 replace, 2 ensemble (ACT temporal ensembling), 3 crossfade
#   tick_stamp_sec, tick_stamp_nanosec   the observation of the control tick it was executed at
# So header.stamp stays the observation the policy saw (training pairs the action with it) and
# the executing tick is known exactly. Readers matching action values by name are unaffected.
# --- end chunk provenance ------------------------------------------------------------------------

BASE_FRAME = "base_link"  # frame_id of ee_pose
GRIPPER_JOINT = "gripper"  # the single name in gripper/state

EVENT_KINDS: tuple[str, ...] = (
    "start", "success", "failure", "abort", "intervention_start", "intervention_end",
    "hold", "resume",  # the operator stopped the arm (teleop/hold, device lost) / released it
)
TERMINAL_EVENTS: tuple[str, ...] = ("success", "failure", "abort")

IMAGE_FORMATS: tuple[str, ...] = ("raw", "jpeg")
# image_transport's convention for the format field of a JPEG CompressedImage made from rgb8.
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"


def image_topic(camera: str, image_format: str = "raw") -> str:
    """`camera/<name>/image_raw` (Image) or `camera/<name>/image_raw/compressed` (CompressedImage)."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    return f"camera/{camera}/image_raw" + ("/compressed" if image_format == "jpeg" else "")


def image_msgtype(image_format: str = "raw") -> str:
    return COMPRESSED_IMAGE if image_format == "jpeg" else IMAGE


# --- QoS ------------------------------------------------------------------------------------------
_ZERO = QosTime(sec=0, nsec=0)  # 0 = "default" (infinite) deadline / lifespan / lease


def make_qos(*, reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=_ZERO,
        lifespan=_ZERO,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_ZERO,
        avoid_ros_namespace_conventions=False,
    )


QOS_DEFAULT = make_qos()  # reliable, volatile, keep last 10: streams (images, joints, actions)
QOS_LATCHED = make_qos(transient_local=True, depth=1)  # instruction, episode/info: late joiners get it
QOS_EVENTS = make_qos(depth=100)  # events are rare and must not be dropped


@dataclass(frozen=True)
class TopicSpec:
    topic: str
    msgtype: str
    qos: Qos
    description: str
    required: bool = False  # the reader refuses a bag without it


def topics(cameras: tuple[str, ...] = ("front", "wrist"), image_format: str = "raw") -> list[TopicSpec]:
    """Every topic an episode bag written with these cameras / image format holds."""
    specs = [
        TopicSpec(image_topic(c, image_format), image_msgtype(image_format), QOS_DEFAULT,
                  f"{c} camera, RGB ({'JPEG' if image_format == 'jpeg' else 'rgb8'})")
        for c in cameras
    ]
    specs += [
        TopicSpec(JOINT_STATES, JOINT_STATE, QOS_DEFAULT, "joint positions (URDF order and names)"),
        TopicSpec(EE_POSE, POSE_STAMPED, QOS_DEFAULT, "tool pose in the arm base frame", required=True),
        TopicSpec(GRIPPER_STATE, JOINT_STATE, QOS_DEFAULT, "measured gripper opening 0..1", required=True),
        TopicSpec(OBJECT_POSES, POSE_ARRAY, QOS_DEFAULT, "task object poses in the arm base frame"),
        TopicSpec(INSTRUCTION, STRING, QOS_LATCHED, "language instruction (latched)"),
        TopicSpec(EPISODE_INFO, STRING, QOS_LATCHED, "episode metadata as JSON (latched)"),
        TopicSpec(EPISODE_EVENTS, STRING, QOS_EVENTS, "episode events: " + " | ".join(EVENT_KINDS)),
        TopicSpec(ACTION_EXECUTED, JOINT_STATE, QOS_DEFAULT,
                  "executed action; frame_id = source, header.stamp = observation stamp", required=True),
        TopicSpec(ACTION_PROPOSED, JOINT_STATE, QOS_DEFAULT,
                  "policy proposal; header.stamp = observation stamp"),
        TopicSpec(ACTION_HUMAN, JOINT_STATE, QOS_DEFAULT,
                  "operator command; header.stamp = observation stamp"),
        TopicSpec(ACTION_TOKENS, JOINT_STATE, QOS_DEFAULT,
                  "token ids of the policy's proposal; frame_id = token space, "
                  "header.stamp = observation stamp"),
    ]
    return specs


# Message type each fixed topic must have (the reader checks these; cameras are checked by prefix).
FIXED_TOPIC_TYPES: dict[str, str] = {s.topic: s.msgtype for s in topics(cameras=())}

# custom_data keys the writer always sets (strings only, as rosbag2 requires).
CUSTOM_DATA_KEYS: tuple[str, ...] = (
    "task", "instruction", "policy_id", "operator", "outcome", "apo_ros_version", "stats_id",
    "cameras", "image_format", "truncated", "schema_version",
)
SCHEMA_VERSION = "1"
