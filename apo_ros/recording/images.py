"""Raw camera images as the stack stores them: rgb8.

Camera drivers publish sensor_msgs/Image in many encodings. What cv_bridge converts to rgb8
without loss of meaning is converted (rgb8, bgr8, rgba8, bgra8, mono8: alpha dropped, grey
repeated); anything else (depth 16UC1, 32FC1, bayer, yuv422, ...), an empty image, a row step
shorter than a row, data shorter than its rows, or an image larger than the size limit is refused
with an `ImageProblem` whose `kind` says which rule it broke (for per-kind counts). One module for
the recorder (what goes into a bag), the reader (what comes out of one) and the policy node.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# encoding -> (channels in the message, the channels that make RGB, in order)
CONVERTIBLE: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
# A frame larger than this is refused: no camera the policies use comes close, and one corrupt
# 2000x2000 frame per tick would make a bag of gigabytes (1920 x 1200, WUXGA).
MAX_PIXELS = 1920 * 1200

_U32 = struct.Struct("<I")
_STAMP = struct.Struct("<iI")


class ImageProblem(ValueError):
    """An image the stack does not take. kind: encoding | empty | step | data | size | layout."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


@dataclass(frozen=True)
class ImageLayout:
    """The fields of a sensor_msgs/Image (data: a view of the pixel bytes)."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


def check(layout: ImageLayout, max_pixels: int | None = MAX_PIXELS) -> int:
    """The number of channels of a convertible image, or ImageProblem saying why not."""
    enc = layout.encoding.lower()
    if enc not in CONVERTIBLE:
        raise ImageProblem("encoding", f"unsupported image encoding {layout.encoding!r} "
                                       f"(converted: {', '.join(CONVERTIBLE)})")
    channels = CONVERTIBLE[enc][0]
    h, w = layout.height, layout.width
    if h <= 0 or w <= 0:
        raise ImageProblem("empty", f"empty image ({w}x{h})")
    if max_pixels is not None and h * w > max_pixels:
        raise ImageProblem("size", f"image of {w}x{h} is larger than the limit of "
                                   f"{max_pixels} pixels")
    if layout.step < w * channels:
        raise ImageProblem("step", f"row step {layout.step} is shorter than a row of {w} "
                                   f"{enc} pixels ({w * channels} bytes)")
    if len(layout.data) < h * layout.step:
        raise ImageProblem("data", f"image data has {len(layout.data)} bytes, expected {h} rows "
                                   f"of {layout.step}")
    return channels


def to_rgb(layout: ImageLayout, max_pixels: int | None = MAX_PIXELS, copy: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a convertible image, else ImageProblem. copy=False: a view of the
    message's bytes where no conversion is needed."""
    channels = check(layout, max_pixels)
    order = CONVERTIBLE[layout.encoding.lower()][1]
    h, w, step = layout.height, layout.width, layout.step
    rows = np.frombuffer(layout.data, dtype=np.uint8, count=h * step).reshape(h, step)
    pixels = rows[:, : w * channels].reshape(h, w, channels)
    if order == (0, 1, 2) and channels == 3:
        return np.array(pixels) if copy or not pixels.flags.c_contiguous else pixels
    return np.ascontiguousarray(pixels[:, :, list(order)])


def layout_of(msg) -> ImageLayout:
    """The layout of a deserialized Image (rclpy or rosbags class)."""
    data = msg.data
    buf = memoryview(data.tobytes() if isinstance(data, np.ndarray) else bytes(data))
    stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
    return ImageLayout(stamp, str(msg.header.frame_id), int(msg.height), int(msg.width),
                       str(msg.encoding), int(msg.is_bigendian), int(msg.step), buf)


def parse_cdr(raw: bytes | memoryview) -> ImageLayout:
    """The layout of a serialized sensor_msgs/Image (little-endian CDR, as every ROS 2 middleware
    on x86 / ARM writes), without copying the pixels. ImageProblem("layout") when the bytes are
    not an Image."""
    view = memoryview(raw)
    try:
        if len(view) < 4 or view[0] != 0 or view[1] != 1:
            raise ValueError("not little-endian CDR")
        pos = 4
        sec, nsec = _STAMP.unpack_from(view, pos)
        frame_id, pos = _string(view, pos + 8)
        pos = _align(pos, 4)
        height, width = struct.unpack_from("<II", view, pos)
        encoding, pos = _string(view, pos + 8)
        is_bigendian = view[pos]
        pos = _align(pos + 1, 4)
        step, n = struct.unpack_from("<II", view, pos)
        pos += 8
        if pos + n > len(view):
            raise ValueError(f"data of {n} bytes runs past the message")
    except (ValueError, struct.error, UnicodeDecodeError, IndexError) as err:
        raise ImageProblem("layout", f"not a serialized sensor_msgs/Image ({err})") from None
    return ImageLayout(sec * 1_000_000_000 + nsec, frame_id, height, width, encoding,
                       is_bigendian, step, view[pos:pos + n])


def _align(pos: int, size: int) -> int:
    return pos + (-(pos - 4) % size)  # CDR alignment counts from the end of the 4-byte header


def _string(view: memoryview, pos: int) -> tuple[str, int]:
    pos = _align(pos, 4)
    (n,) = _U32.unpack_from(view, pos)
    end = pos + 4 + n
    if n == 0 or end > len(view):
        raise ValueError("bad string")
    return bytes(view[pos + 4:end - 1]).decode(), end
