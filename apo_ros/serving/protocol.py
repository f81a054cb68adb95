"""openpi's remote-policy protocol: websocket frames of msgpack, numpy arrays without pickle.

The wire format is the one openpi-client speaks (`openpi_client.msgpack_numpy`), so an openpi
`WebsocketClientPolicy` can drive `apo-ros serve`, and `RemotePolicy` can drive an openpi server:

- on connect the server sends one binary frame: the metadata dict;
- then the client sends an observation dict per binary frame and gets a reply dict back;
- a server-side error is a TEXT frame holding the message (openpi-client raises RuntimeError).

Inside msgpack, a numpy array is a map {b"__ndarray__": True, b"data": raw bytes, b"dtype":
dtype.str, b"shape": [dims]} and a numpy scalar {b"__npgeneric__": True, b"data": item, b"dtype":
dtype.str}. Object, void and complex dtypes are refused both ways, so decoding never builds Python
objects from the wire.

The observation keys (`observation_to_request` / `request_to_observation`):

    observation/image          uint8 (H, W, 3) RGB, camera "front" (openpi's main-camera key)
    observation/wrist_image    uint8 (H, W, 3) RGB, camera "wrist"
    observation/<name>_image   uint8 (H, W, 3) RGB, any other camera <name>
    observation/state          float32 (8,) [x, y, z, qx, qy, qz, qw, gripper]: the tool pose in
                               the arm's base frame (m, unit quaternion) and the measured gripper
                               opening in [0, 1] (1 = open)
    prompt                     str, the task's language instruction
    observation/joint_position float (J,) arm then finger joints (rad), optional
    observation/object_poses   float32 (N, 7) object poses [x, y, z, qx, qy, qz, qw] in the base
                               frame (manipulated object, then target), optional
    observation/stamp_ns       int, the observation's stamp, optional; echoed back as `stamp_ns`

The reply:

    actions        float (T, 7) raw action chunk, one row per control step:
                   [dx, dy, dz, droll, dpitch, dyaw, gripper] - tool-frame deltas in metres and
                   radians per step, gripper an absolute command in [0, 1] (1 = open)
    ok             bool, False when the policy could not decode an action (do not execute)
    policy_id      str, the id of the checkpoint that computed it (changes on a hot-swap)
    statistics_id  str, the id of the action statistics it was un-normalized with
    stamp_ns       int, the request's observation/stamp_ns (when it had one)
    server_timing  {"infer_ms": float}
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from apo_ros.actions.space import ACTION_DIM
from apo_ros.observation import Observation

PROTOCOL_VERSION = 1
ACTION_LAYOUT = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
STATE_LAYOUT = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")
STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
JOINTS_KEY = "observation/joint_position"
OBJECTS_KEY = "observation/object_poses"
STAMP_KEY = "observation/stamp_ns"
# openpi's own names for the main and the wrist camera; every other camera is observation/<name>_image
CAMERA_KEYS = {"front": "observation/image", "wrist": "observation/wrist_image"}
_REFUSED_KINDS = ("V", "O", "c")


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the message says what is wrong."""


# ---- msgpack with numpy, byte-compatible with openpi_client.msgpack_numpy --------------------
def _pack_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise ProtocolError(f"cannot send an array of dtype {obj.dtype} (object, void and complex "
                            "arrays are not part of the protocol)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str,
                b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize {type(obj).__name__} (numpy arrays, numbers, strings, "
                    "bytes, lists and dicts only)")


def _unpack_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return _decode_array(obj)
    if b"__npgeneric__" in obj:
        dtype = _decode_dtype(obj.get(b"dtype"))
        return dtype.type(obj.get(b"data"))
    return obj


def _decode_dtype(value: Any) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise ProtocolError(f"array dtype must be a string, got {type(value).__name__}")
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise ProtocolError(f"unknown array dtype {value!r}") from None
    if dtype.kind in _REFUSED_KINDS:
        raise ProtocolError(f"array dtype {value!r} is not allowed (object, void and complex)")
    return dtype


def _decode_array(obj: dict) -> np.ndarray:
    dtype = _decode_dtype(obj.get(b"dtype"))
    data, shape = obj.get(b"data"), obj.get(b"shape")
    if not isinstance(data, bytes):
        raise ProtocolError("array data must be bytes")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"array shape must be a list of non-negative ints, got {shape!r}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(data):
        raise ProtocolError(f"array of shape {list(shape)} and dtype {dtype.str} needs {expected} "
                            f"bytes, got {len(data)}")
    # a writable copy: frombuffer views are read-only and torch warns on them
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def packb(obj: Any) -> bytes:
    """msgpack bytes of `obj` (dicts, lists, str, numbers, numpy arrays and scalars)."""
    return msgpack.packb(obj, default=_pack_default)


def unpackb(data: bytes) -> Any:
    """Decode a msgpack message; ProtocolError when it is not valid msgpack or holds a bad array."""
    try:
        return msgpack.unpackb(data, object_hook=_unpack_hook)
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError,
            msgpack.exceptions.StackError) as err:
        raise ProtocolError(f"not a valid msgpack message ({type(err).__name__}: {err})") from None


# ---- observations ----------------------------------------------------------------------------
def camera_key(camera: str) -> str:
    return CAMERA_KEYS.get(camera, f"observation/{camera}_image")


def observation_to_request(observation: Observation, cameras: tuple[str, ...] | None = None) -> dict:
    """The request dict for one observation (`cameras`: which images to send; all by default)."""
    names = tuple(observation.images) if cameras is None else tuple(cameras)
    request: dict[str, Any] = {}
    for name in names:
        if name not in observation.images:
            raise ValueError(f"the server needs camera {name!r}; the observation has "
                             f"{sorted(observation.images)}")
        request[camera_key(name)] = np.ascontiguousarray(observation.images[name], dtype=np.uint8)
    request[STATE_KEY] = observation.proprio()
    request[PROMPT_KEY] = str(observation.instruction)
    if len(observation.joint_positions):
        request[JOINTS_KEY] = np.asarray(observation.joint_positions)
    poses = np.asarray(observation.object_poses, dtype=np.float32)
    if poses.size:
        request[OBJECTS_KEY] = poses
    request[STAMP_KEY] = int(observation.stamp_ns)
    return request


def _array(request: dict, key: str, ndim: int, dtype_kind: str | None = None) -> np.ndarray:
    value = request[key]
    if not isinstance(value, np.ndarray):
        raise ProtocolError(f"{key!r} must be a numpy array, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ProtocolError(f"{key!r} must have {ndim} dimensions, got shape {list(value.shape)}")
    if dtype_kind is not None and value.dtype.kind not in dtype_kind:
        raise ProtocolError(f"{key!r} has dtype {value.dtype}; expected {dtype_kind!r} kind")
    return value


def request_to_observation(request: Any, cameras: tuple[str, ...]) -> Observation:
    """The Observation a request describes; ProtocolError naming the first problem."""
    if not isinstance(request, dict):
        raise ProtocolError(f"a request must be a map of observation keys, got {type(request).__name__}")
    missing = [k for k in [camera_key(c) for c in cameras] + [STATE_KEY, PROMPT_KEY] if k not in request]
    if missing:
        raise ProtocolError(f"request lacks {missing} (has {sorted(map(str, request))})")
    images = {}
    for name in cameras:
        key = camera_key(name)
        img = _array(request, key, 3)
        if img.dtype != np.uint8 or img.shape[2] != 3:
            raise ProtocolError(f"{key!r} must be uint8 (H, W, 3) RGB, got {img.dtype} {list(img.shape)}")
        images[name] = img
    state = _array(request, STATE_KEY, 1, "fiu")
    if state.shape[0] != len(STATE_LAYOUT):
        raise ProtocolError(f"{STATE_KEY!r} must have {len(STATE_LAYOUT)} values {list(STATE_LAYOUT)}, "
                            f"got {state.shape[0]}")
    state = state.astype(np.float32)
    if not np.isfinite(state).all():
        raise ProtocolError(f"{STATE_KEY!r} contains NaN or Inf")
    prompt = request[PROMPT_KEY]
    if not isinstance(prompt, str):
        raise ProtocolError(f"{PROMPT_KEY!r} must be a string, got {type(prompt).__name__}")
    joints = np.zeros(0)
    if JOINTS_KEY in request:
        joints = _array(request, JOINTS_KEY, 1, "fiu").astype(np.float64)
    poses = np.zeros((0, 7), dtype=np.float32)
    if OBJECTS_KEY in request:
        poses = _array(request, OBJECTS_KEY, 2, "fiu").astype(np.float32)
        if poses.shape[1] != 7:
            raise ProtocolError(f"{OBJECTS_KEY!r} must be (N, 7), got {list(poses.shape)}")
    stamp = request.get(STAMP_KEY, 0)
    if not isinstance(stamp, (int, np.integer)):
        raise ProtocolError(f"{STAMP_KEY!r} must be an integer, got {type(stamp).__name__}")
    return Observation(images=images, joint_positions=joints, ee_pose=state[:7].copy(),
                       gripper=float(state[7]), instruction=prompt, stamp_ns=int(stamp),
                       object_poses=poses)


def actions_from_reply(reply: Any) -> tuple[np.ndarray, bool]:
    """(chunk float64 (T, 7), ok) from a reply dict; ProtocolError when it has no usable actions."""
    if not isinstance(reply, dict):
        raise ProtocolError(f"a reply must be a map, got {type(reply).__name__}")
    if "actions" not in reply:
        raise ProtocolError(f"reply has no 'actions' (keys: {sorted(map(str, reply))})")
    actions = reply["actions"]
    if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "fiu":
        raise ProtocolError("reply 'actions' must be a numeric numpy array")
    if actions.ndim == 1:
        actions = actions[None, :]
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or actions.shape[0] == 0:
        raise ProtocolError(f"reply 'actions' must be (T, {ACTION_DIM}), got {list(actions.shape)}")
    return actions.astype(np.float64), bool(reply.get("ok", True))
