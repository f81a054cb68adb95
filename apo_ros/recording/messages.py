"""Message construction and conversion, shared by the episode writer (rosbags classes) and the
ROS 2 nodes (rclpy classes). Pure functions.

Both kinds of classes have the ROS field names; they differ in construction: rosbags classes are
dataclasses whose fields are all required and whose numeric arrays are numpy arrays, rclpy classes
take keyword arguments with defaults and want `array.array` (or lists) for sequences. A *types
namespace* hides that: an object with the message classes as attributes (`Header`, `Time`,
`JointState`, `Image`, `CompressedImage`, `PoseStamped`, `PoseArray`, `Pose`, `Point`, `Quaternion`,
`TwistStamped`, `Twist`, `Vector3`, `String`) and `flavor` = "rosbags" or "rclpy".
`rosbags_types()` builds one here; `rclpy_types()` builds one inside a ROS install (nodes only).
"""

from __future__ import annotations

import array
import functools
from types import SimpleNamespace
from typing import Any

import numpy as np

from apo_ros.actions.space import ACTION_DIM, ACTION_NAMES, SOURCES
from apo_ros.recording import schema
from apo_ros.recording.images import layout_of, to_rgb

_CLASSES = {
    "Time": "builtin_interfaces/msg/Time",
    "Header": "std_msgs/msg/Header",
    "String": "std_msgs/msg/String",
    "JointState": "sensor_msgs/msg/JointState",
    "Image": "sensor_msgs/msg/Image",
    "CompressedImage": "sensor_msgs/msg/CompressedImage",
    "PoseStamped": "geometry_msgs/msg/PoseStamped",
    "PoseArray": "geometry_msgs/msg/PoseArray",
    "Pose": "geometry_msgs/msg/Pose",
    "Point": "geometry_msgs/msg/Point",
    "Quaternion": "geometry_msgs/msg/Quaternion",
    "TwistStamped": "geometry_msgs/msg/TwistStamped",
    "Twist": "geometry_msgs/msg/Twist",
    "Vector3": "geometry_msgs/msg/Vector3",
}


def get_typestore(distro: str = "humble"):
    """The rosbags typestore of a ROS 2 distribution ("humble" or "jazzy")."""
    return _typestore(distro.lower())


@functools.lru_cache(maxsize=4)
def _typestore(distro: str):
    from rosbags.typesys import Stores
    from rosbags.typesys import get_typestore as _get

    stores = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
    if distro not in stores:
        raise ValueError(f"distro must be one of {sorted(stores)}, got {distro!r}")
    return _get(stores[distro])


def rosbags_types(distro: str = "humble") -> SimpleNamespace:
    """The types namespace of rosbags message classes (no ROS needed)."""
    store = get_typestore(distro)
    ns = SimpleNamespace(flavor="rosbags", typestore=store)
    for name, msgtype in _CLASSES.items():
        setattr(ns, name, store.types[msgtype])
    return ns


def rclpy_types() -> SimpleNamespace:  # pragma: no cover - needs a ROS 2 install
    """The types namespace of rclpy message classes. Only the ROS nodes call this."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import (
        Point,
        Pose,
        PoseArray,
        PoseStamped,
        Quaternion,
        Twist,
        TwistStamped,
        Vector3,
    )
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Header, String

    return SimpleNamespace(flavor="rclpy", Time=Time, Header=Header, String=String,
                           JointState=JointState, Image=Image, CompressedImage=CompressedImage,
                           PoseStamped=PoseStamped, PoseArray=PoseArray, Pose=Pose, Point=Point,
                           Quaternion=Quaternion,
                           TwistStamped=TwistStamped, Twist=Twist, Vector3=Vector3)


# --- small conversions ----------------------------------------------------------------------------

def _is_rosbags(types: Any) -> bool:
    return getattr(types, "flavor", "rosbags") == "rosbags"


def _floats(types: Any, values) -> Any:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr if _is_rosbags(types) else array.array("d", arr.tobytes())


def _bytes(types: Any, data: np.ndarray | bytes) -> Any:
    if _is_rosbags(types):
        return np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) \
            else np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    raw = data if isinstance(data, (bytes, bytearray)) else np.ascontiguousarray(data).tobytes()
    return array.array("B", raw)


def ns_to_stamp(types: Any, ns: int):
    """Integer nanoseconds -> builtin_interfaces/Time."""
    ns = int(ns)
    if ns < 0:
        raise ValueError(f"stamp must be >= 0 ns, got {ns}")
    return types.Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or a Header) -> integer nanoseconds."""
    stamp = getattr(stamp, "stamp", stamp)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def make_header(types: Any, stamp_ns: int, frame_id: str = ""):
    return types.Header(stamp=ns_to_stamp(types, stamp_ns), frame_id=str(frame_id))


# --- builders -------------------------------------------------------------------------------------

def make_string(types: Any, text: str):
    return types.String(data=str(text))


def make_joint_state(types: Any, stamp_ns: int, names, positions, *, frame_id: str = "",
                     velocities=None, efforts=None):
    """sensor_msgs/JointState with names and positions (velocity / effort empty unless given)."""
    names = [str(n) for n in names]
    pos = np.asarray(positions, dtype=np.float64).reshape(-1)
    if names and len(names) != pos.shape[0]:
        raise ValueError(f"joint state: {len(names)} names but {pos.shape[0]} positions")
    return types.JointState(
        header=make_header(types, stamp_ns, frame_id),
        name=names,
        position=_floats(types, pos),
        velocity=_floats(types, [] if velocities is None else velocities),
        effort=_floats(types, [] if efforts is None else efforts),
    )


def make_action(types: Any, obs_stamp_ns: int, action, source: str):
    """An action message (see schema): JointState, header.stamp = the observation's stamp,
    frame_id = source, names = ACTION_NAMES, position = the 7 values."""
    if source not in SOURCES:
        raise ValueError(f"action source must be one of {SOURCES}, got {source!r}")
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape[0] != ACTION_DIM:
        raise ValueError(f"action must have {ACTION_DIM} values {list(ACTION_NAMES)}, got {a.shape[0]}")
    return make_joint_state(types, obs_stamp_ns, ACTION_NAMES, a, frame_id=source)


def make_action_tokens(types: Any, obs_stamp_ns: int, ids, token_space: str):
    """A token message (see schema.ACTION_TOKENS): JointState, header.stamp = the observation's
    stamp, frame_id = the token space, names = ACTION_NAMES (one id per action dimension) or
    t0..t{n-1}, position = the ids."""
    values = np.asarray(ids).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values.astype(np.float64))) \
            or not np.all(values == np.rint(values)) or np.any(values < 0):
        raise ValueError(f"token ids must be non-negative integers, got {values.tolist()}")
    if not token_space:
        raise ValueError("token ids need their token space (what an id means)")
    names = ACTION_NAMES if values.size == ACTION_DIM else [f"t{i}" for i in range(values.size)]
    return make_joint_state(types, obs_stamp_ns, names, values.astype(np.float64), frame_id=token_space)


def joint_state_to_tokens(msg) -> tuple[np.ndarray, str, int]:
    """A token message -> (ids int64, token space, observation stamp ns)."""
    _, pos = joint_state_arrays(msg)
    return np.rint(pos).astype(np.int64), str(msg.header.frame_id), stamp_to_ns(msg.header)


def make_gripper_state(types: Any, stamp_ns: int, opening: float):
    return make_joint_state(types, stamp_ns, [schema.GRIPPER_JOINT], [float(opening)])


def _make_pose(types: Any, p: np.ndarray):
    return types.Pose(position=types.Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                      orientation=types.Quaternion(x=float(p[3]), y=float(p[4]), z=float(p[5]),
                                                   w=float(p[6])))


def make_pose_stamped(types: Any, stamp_ns: int, pose, frame_id: str = schema.BASE_FRAME):
    """geometry_msgs/PoseStamped from [x, y, z, qx, qy, qz, qw]."""
    p = np.asarray(pose, dtype=np.float64).reshape(-1)
    if p.shape[0] != 7:
        raise ValueError(f"pose must be [x, y, z, qx, qy, qz, qw], got {p.shape[0]} values")
    return types.PoseStamped(header=make_header(types, stamp_ns, frame_id), pose=_make_pose(types, p))


def make_pose_array(types: Any, stamp_ns: int, poses, frame_id: str = schema.BASE_FRAME):
    """geometry_msgs/PoseArray from (N, 7) rows [x, y, z, qx, qy, qz, qw]."""
    p = np.asarray(poses, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 7:
        raise ValueError(f"poses must be (N, 7) rows [x, y, z, qx, qy, qz, qw], got shape {p.shape}")
    return types.PoseArray(header=make_header(types, stamp_ns, frame_id),
                           poses=[_make_pose(types, row) for row in p])


def make_twist_stamped(types: Any, stamp_ns: int, linear, angular, frame_id: str = schema.BASE_FRAME):
    """geometry_msgs/TwistStamped (MoveIt Servo input): linear m/s, angular rad/s."""
    lin = np.asarray(linear, dtype=np.float64).reshape(3)
    ang = np.asarray(angular, dtype=np.float64).reshape(3)
    return types.TwistStamped(
        header=make_header(types, stamp_ns, frame_id),
        twist=types.Twist(linear=types.Vector3(x=float(lin[0]), y=float(lin[1]), z=float(lin[2])),
                          angular=types.Vector3(x=float(ang[0]), y=float(ang[1]), z=float(ang[2]))),
    )


def make_image(types: Any, stamp_ns: int, image: np.ndarray, frame_id: str = ""):
    """sensor_msgs/Image, encoding rgb8, from an (H, W, 3) uint8 RGB array."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    return types.Image(header=make_header(types, stamp_ns, frame_id), height=h, width=w,
                       encoding="rgb8", is_bigendian=0, step=w * 3, data=_bytes(types, img))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG bytes (OpenCV; OpenCV wants BGR)."""
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG")
    return buf.tobytes()


def make_compressed_image(types: Any, stamp_ns: int, image: np.ndarray, frame_id: str = "",
                          quality: int = 90):
    """sensor_msgs/CompressedImage (JPEG, image_transport's format string)."""
    return types.CompressedImage(header=make_header(types, stamp_ns, frame_id),
                                 format=schema.JPEG_FORMAT,
                                 data=_bytes(types, encode_jpeg(image, quality)))


# --- conversions back -----------------------------------------------------------------------------

def image_to_numpy(msg, *, copy: bool = True) -> np.ndarray:
    """sensor_msgs/Image (rgb8 / bgr8 / rgba8 / bgra8 / mono8, any row padding; see
    apo_ros.recording.images) or CompressedImage (JPEG/PNG) -> (H, W, 3) uint8 RGB."""
    if hasattr(msg, "encoding"):  # raw Image
        return to_rgb(layout_of(msg), max_pixels=None, copy=copy)
    data = msg.data
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(bytes(data), dtype=np.uint8)
    import cv2

    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError(f"could not decode compressed image (format {getattr(msg, 'format', '?')!r})")
    return np.ascontiguousarray(decoded[:, :, ::-1])


def joint_state_arrays(msg) -> tuple[list[str], np.ndarray]:
    """JointState -> (names, positions float64)."""
    return list(msg.name), np.asarray(msg.position, dtype=np.float64)


def joint_state_to_action(msg) -> tuple[np.ndarray, str, int]:
    """An action message -> (action (7,), source, observation stamp ns). Values are matched by
    name, so a publisher that orders the names differently still decodes right."""
    names, pos = joint_state_arrays(msg)
    if names == list(ACTION_NAMES):
        action = pos.copy()
    else:
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in ACTION_NAMES if n not in index]
        if missing or pos.shape[0] != len(names):
            raise ValueError(f"action message lacks {missing or 'positions'} (names {names})")
        action = pos[[index[n] for n in ACTION_NAMES]]
    return action, str(msg.header.frame_id), stamp_to_ns(msg.header)


def pose_stamped_to_array(msg) -> np.ndarray:
    """PoseStamped -> [x, y, z, qx, qy, qz, qw]."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)


def pose_array_to_array(msg) -> np.ndarray:
    """PoseArray -> (N, 7) float32 rows [x, y, z, qx, qy, qz, qw]."""
    rows = [[p.position.x, p.position.y, p.position.z,
             p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w] for p in msg.poses]
    return np.asarray(rows, dtype=np.float32).reshape(-1, 7)


def twist_stamped_to_arrays(msg) -> tuple[np.ndarray, np.ndarray]:
    """TwistStamped -> (linear (3,), angular (3,))."""
    lin, ang = msg.twist.linear, msg.twist.angular
    return np.array([lin.x, lin.y, lin.z]), np.array([ang.x, ang.y, ang.z])
