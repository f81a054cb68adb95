"""Fast decoders for the few fixed-layout messages the reader needs (little-endian CDR, as every
ROS 2 middleware on x86/ARM writes). They skip building message objects, which is most of the
reading time; the reader falls back to the rosbags typestore for anything else (big-endian data,
a layout they do not expect). The round-trip tests check them against rosbags.

CDR: a 4-byte encapsulation header (0x00 0x01 = little-endian CDR), then fields aligned to their
size relative to the end of that header; strings are uint32 length (with the NUL) + bytes;
sequences are uint32 count + items.
"""

from __future__ import annotations

import struct

import numpy as np

from apo_ros.recording import images

_U32 = struct.Struct("<I")
_STAMP = struct.Struct("<iI")
_HW = struct.Struct("<II")
_POSE = struct.Struct("<7d")


class CdrLayoutError(ValueError):
    """The bytes are not what the fast decoder expects; use the generic deserializer."""


def _check(raw) -> None:
    if len(raw) < 4 or raw[1] != 1:  # only little-endian plain CDR
        raise CdrLayoutError("not little-endian CDR")


def _string(raw, pos: int) -> tuple[str, int]:
    pos = pos + (-(pos - 4) % 4)
    (n,) = _U32.unpack_from(raw, pos)
    pos += 4
    end = pos + n
    if n == 0 or end > len(raw):
        raise CdrLayoutError("bad string")
    return bytes(raw[pos:end - 1]).decode(), end


def header(raw, pos: int = 4) -> tuple[int, str, int]:
    """(stamp ns, frame_id, position after the header)."""
    sec, nsec = _STAMP.unpack_from(raw, pos)
    frame_id, pos = _string(raw, pos + 8)
    return sec * 1_000_000_000 + nsec, frame_id, pos


def _f64_seq(raw, pos: int) -> tuple[np.ndarray, int]:
    pos = pos + (-(pos - 4) % 4)
    (n,) = _U32.unpack_from(raw, pos)
    pos += 4
    if n:
        pos = pos + (-(pos - 4) % 8)
    end = pos + 8 * n
    if end > len(raw):
        raise CdrLayoutError("bad float64 sequence")
    return np.frombuffer(raw, dtype="<f8", count=n, offset=pos).copy(), end


def joint_state(raw, cache: list | None = None) -> tuple[int, str, tuple[str, ...], np.ndarray]:
    """sensor_msgs/JointState -> (stamp ns, frame_id, names, positions).

    cache: a list [names_bytes, names] kept by the caller per topic. A topic's names rarely
    change, so when the raw names block equals the previous one it is not decoded again."""
    _check(raw)
    stamp, frame_id, pos = header(raw)
    pos = pos + (-(pos - 4) % 4)
    if cache and raw[pos:pos + len(cache[0])] == cache[0]:
        names_t = cache[1]
        pos += len(cache[0])
    else:
        start = pos
        (count,) = _U32.unpack_from(raw, pos)
        pos += 4
        names = []
        for _ in range(count):
            name, pos = _string(raw, pos)
            names.append(name)
        names_t = tuple(names)
        if cache is not None:
            cache[:] = [bytes(raw[start:pos]), names_t]
    positions, _ = _f64_seq(raw, pos)
    return stamp, frame_id, names_t, positions


def pose_stamped(raw) -> tuple[int, np.ndarray]:
    """geometry_msgs/PoseStamped -> (stamp ns, [x, y, z, qx, qy, qz, qw])."""
    _check(raw)
    stamp, _, pos = header(raw)
    pos = pos + (-(pos - 4) % 8)
    if pos + 56 > len(raw):
        raise CdrLayoutError("short pose")
    return stamp, np.array(_POSE.unpack_from(raw, pos), dtype=np.float64)


def image(raw) -> tuple[int, np.ndarray]:
    """sensor_msgs/Image -> (stamp ns, (H, W, 3) uint8 RGB copy); the encodings and rules of
    apo_ros.recording.images (an image it refuses raises its ImageProblem)."""
    _check(raw)
    try:
        layout = images.parse_cdr(raw)
    except images.ImageProblem as err:
        raise CdrLayoutError(str(err)) from None
    return layout.stamp_ns, images.to_rgb(layout, max_pixels=None)  # a copy: the bytes are the reader's


def string(raw) -> str:
    """std_msgs/String -> data."""
    _check(raw)
    return _string(raw, 4)[0]
