"""Property tests: the fast CDR decoders (recording/cdr.py) read exactly what rosbags' own
serializer writes, for any stamp, frame id, joint names, values and image layout; and on any
bytes they either decode or raise one of the errors the reader falls back on."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apo_ros.recording import cdr
from apo_ros.recording.messages import get_typestore

STORE = get_typestore("humble")
T = STORE.types
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ROS strings cannot hold NUL; anything else (any unicode, empty) is fair
text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
               max_size=12)
stamps = st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 999_999_999))
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


def _header(stamp, frame_id):
    sec, nsec = stamp
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                    frame_id=frame_id)


def _ns(stamp) -> int:
    return stamp[0] * 1_000_000_000 + stamp[1]


def _joint_state(stamp, frame_id, names, positions, extra):
    msg = T["sensor_msgs/msg/JointState"](
        header=_header(stamp, frame_id), name=names, position=np.asarray(positions, dtype=np.float64),
        velocity=np.asarray(extra, dtype=np.float64), effort=np.asarray([], dtype=np.float64))
    return bytes(STORE.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


@SETTINGS
@given(stamps, text, st.lists(text, max_size=8), st.lists(floats, max_size=8), st.lists(floats, max_size=3))
def test_joint_state_matches_rosbags(stamp, frame_id, names, positions, extra):
    raw = _joint_state(stamp, frame_id, names, positions, extra)
    got_stamp, got_frame, got_names, got_positions = cdr.joint_state(raw)
    assert got_stamp == _ns(stamp) and got_frame == frame_id and got_names == tuple(names)
    np.testing.assert_array_equal(got_positions, np.asarray(positions, dtype=np.float64))


@SETTINGS
@given(stamps, st.lists(text, min_size=1, max_size=4), st.lists(text, min_size=1, max_size=4),
       st.lists(floats, min_size=1, max_size=4))
def test_joint_state_names_cache_never_returns_stale_names(stamp, first, second, positions):
    cache: list = []
    for names in (first, second, first):
        _, _, got, values = cdr.joint_state(_joint_state(stamp, "", names, positions, []), cache)
        assert got == tuple(names)
        np.testing.assert_array_equal(values, np.asarray(positions, dtype=np.float64))


@SETTINGS
@given(stamps, text, st.lists(floats, min_size=7, max_size=7))
def test_pose_stamped_matches_rosbags(stamp, frame_id, values):
    x, y, z, qx, qy, qz, qw = values
    position = T["geometry_msgs/msg/Point"](x=x, y=y, z=z)
    orientation = T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)
    pose = T["geometry_msgs/msg/Pose"](position=position, orientation=orientation)
    msg = T["geometry_msgs/msg/PoseStamped"](header=_header(stamp, frame_id), pose=pose)
    got_stamp, got = cdr.pose_stamped(bytes(STORE.serialize_cdr(msg, "geometry_msgs/msg/PoseStamped")))
    assert got_stamp == _ns(stamp)
    np.testing.assert_array_equal(got, np.asarray(values, dtype=np.float64))


@st.composite
def images(draw):
    encoding = draw(st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]))
    channels = {"mono8": 1, "rgba8": 4, "bgra8": 4}.get(encoding, 3)
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))  # an empty image is refused
    padding = draw(st.integers(0, 5))  # rows may be padded past width * channels
    step = width * channels + padding
    data = draw(st.binary(min_size=height * step, max_size=height * step))
    return encoding, channels, height, width, step, data


@SETTINGS
@given(stamps, text, images())
def test_image_matches_rosbags(stamp, frame_id, image):
    encoding, channels, height, width, step, data = image
    msg = T["sensor_msgs/msg/Image"](header=_header(stamp, frame_id), height=height, width=width,
                                     encoding=encoding, is_bigendian=0, step=step,
                                     data=np.frombuffer(data, dtype=np.uint8))
    got_stamp, img = cdr.image(bytes(STORE.serialize_cdr(msg, "sensor_msgs/msg/Image")))
    pixels = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :width * channels]
    pixels = pixels.reshape(height, width, channels)
    expected = {"rgb8": pixels, "bgr8": pixels[:, :, ::-1], "rgba8": pixels[:, :, :3],
                "bgra8": pixels[:, :, 2::-1], "mono8": np.repeat(pixels, 3, axis=2)}[encoding]
    assert got_stamp == _ns(stamp) and img.shape == (height, width, 3)
    np.testing.assert_array_equal(img, expected)


@SETTINGS
@given(text)
def test_string_matches_rosbags(data):
    raw = bytes(STORE.serialize_cdr(T["std_msgs/msg/String"](data=data), "std_msgs/msg/String"))
    assert cdr.string(raw) == data


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_what_the_reader_falls_back_on(raw):
    for decode in (cdr.joint_state, cdr.pose_stamped, cdr.image, cdr.string):
        try:
            decode(raw)
        except (cdr.CdrLayoutError, struct.error, UnicodeDecodeError):
            pass


def test_big_endian_data_is_refused():
    raw = bytearray(_joint_state((1, 2), "base", ["a"], [1.0], []))
    raw[1] = 0  # encapsulation 0x0000: big-endian CDR
    try:
        cdr.joint_state(bytes(raw))
    except cdr.CdrLayoutError:
        return
    raise AssertionError("big-endian data must go to the generic deserializer")
