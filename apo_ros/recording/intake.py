"""What the recorder node does with each serialized message before it reaches the bag: raw
images as rgb8 (converted, or refused per kind: `images`), nothing stamped beyond the tolerance
ahead of the recorder's clock, and the intervention events paired with the executed step they
belong to (`event_stamps`). No ROS: the node hands it the bytes rclpy received."""

from __future__ import annotations

from dataclasses import dataclass, field

from apo_ros.recording import cdr, images, schema
from apo_ros.recording import messages as M
from apo_ros.recording.event_stamps import EventStamper


@dataclass
class Admitted:
    stamp_ns: int  # the header stamp: where the message goes in the bag
    data: bytes  # what to write (converted images are new bytes)
    converted_from: str = ""  # the encoding an image had before it became rgb8
    events: list[tuple[int, str]] = field(default_factory=list)  # events to write now


@dataclass
class RawIntake:
    max_pixels: int = images.MAX_PIXELS
    tolerance_ns: int = 1_000_000_000
    events: EventStamper = field(default_factory=EventStamper)

    def admit(self, topic: str, msgtype: str, raw: bytes, now_ns: int) -> Admitted:
        """The message as it goes to the bag; ImageProblem (an image not taken) or ValueError (a
        stamp too far ahead) when it does not."""
        converted = ""
        if msgtype == schema.IMAGE:
            raw, encoding = _as_rgb8_cdr(raw, self.max_pixels)
            converted = "" if encoding == "rgb8" else encoding
        stamp, frame_id, _ = cdr.header(raw)
        if stamp > now_ns + self.tolerance_ns:
            raise ValueError(f"stamp {stamp / 1e9:.3f} s is in the future; not written")
        events = self.events.on_action(frame_id, stamp, now_ns) if topic == schema.ACTION_EXECUTED else []
        return Admitted(stamp, raw, converted, events)

    SETTINGS = ("stamp_tolerance_s", "max_image_pixels")  # the recorder node's parameters

    def set(self, name: str, value: float | int) -> None:
        if name == "stamp_tolerance_s":
            self.tolerance_ns = int(float(value) * 1e9)
        elif name == "max_image_pixels":
            self.max_pixels = int(value)
        else:
            raise ValueError(f"no setting {name!r}")


def _as_rgb8_cdr(raw: bytes | memoryview, max_pixels: int | None = images.MAX_PIXELS) -> tuple[bytes, str]:
    """A serialized Image as a serialized rgb8 Image: (the bytes as they are, "rgb8") when it
    already is one, else (the converted message, the encoding it had); ImageProblem when it is
    not taken (see `check`)."""
    layout = images.parse_cdr(raw)
    images.check(layout, max_pixels)
    if layout.encoding == "rgb8":
        return bytes(raw), "rgb8"
    msg = M.make_image(M.rosbags_types(), layout.stamp_ns, images.to_rgb(layout, max_pixels),
                       frame_id=layout.frame_id)
    return bytes(M.get_typestore().serialize_cdr(msg, "sensor_msgs/msg/Image")), layout.encoding
