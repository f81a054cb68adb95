"""Camera frames: what is converted to rgb8 (what cv_bridge converts), what is refused (by kind),
and a bag with bad frames that still reads and trains (the bad frames cost their steps, not the
episode)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apo_ros.recording import images
from apo_ros.recording import messages as M
from apo_ros.recording.reader import read_episode
from apo_ros.recording.synthetic import JOINT_NAMES, START_NS, STEP_NS, synthetic_observation

T = M.get_typestore("humble")


def image_msg(encoding: str, h: int, w: int, pixels: np.ndarray | bytes, step: int | None = None,
              stamp: int = START_NS):
    data = pixels if isinstance(pixels, bytes) else np.ascontiguousarray(pixels).tobytes()
    channels = len(data) // max(h * w, 1) if h * w else 0
    cls = T.types["sensor_msgs/msg/Image"]
    header = T.types["std_msgs/msg/Header"](
        stamp=T.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
        frame_id="front")
    return cls(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
               step=w * channels if step is None else step, data=np.frombuffer(data, dtype=np.uint8))


def serialized(msg) -> bytes:
    return bytes(T.serialize_cdr(msg, "sensor_msgs/msg/Image"))


RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[:, :, ::-1]),
    ("rgba8", np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)),
    ("bgra8", np.concatenate([RGB[:, :, ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)),
])
def test_colour_encodings_become_rgb8(encoding, pixels):
    msg = image_msg(encoding, 5, 7, pixels)
    np.testing.assert_array_equal(images.to_rgb(images.parse_cdr(serialized(msg))), RGB)
    np.testing.assert_array_equal(M.image_to_numpy(msg), RGB)


def test_mono8_and_padded_rows():
    grey = RGB[:, :, 0]
    padded = np.zeros((5, 9), np.uint8)
    padded[:, :7] = grey
    out = images.to_rgb(images.parse_cdr(serialized(image_msg("mono8", 5, 7, padded, step=9))))
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


@pytest.mark.parametrize("encoding, h, w, step, nbytes, kind", [
    ("16UC1", 4, 4, 8, 32, "encoding"),
    ("32FC1", 4, 4, 16, 64, "encoding"),
    ("rgb8", 0, 0, 0, 0, "empty"),
    ("rgb8", 4, 4, 10, 40, "step"),  # a row of 4 rgb8 pixels is 12 bytes
    ("rgb8", 4, 4, 12, 20, "data"),
    ("rgb8", 2000, 2000, 6000, 6000 * 2000, "size"),
])
def test_what_is_refused_and_why(encoding, h, w, step, nbytes, kind):
    msg = image_msg(encoding, h, w, bytes(nbytes), step=step)
    with pytest.raises(images.ImageProblem) as err:
        images.to_rgb(images.parse_cdr(serialized(msg)))
    assert err.value.kind == kind


def test_a_truncated_message_is_a_layout_problem():
    raw = serialized(image_msg("rgb8", 5, 7, RGB))
    with pytest.raises(images.ImageProblem) as err:
        images.parse_cdr(raw[:40])
    assert err.value.kind == "layout"


BAD_FRAMES = [("rgba8", 2, 2, 8, 16, "shape"),  # converted, but not the camera's 16x16
              ("16UC1", 16, 16, 32, 512, "encoding"), ("rgb8", 0, 0, 0, 0, "empty"),
              ("rgb8", 16, 16, 10, 160, "step"), ("bgra8", 16, 16, 64, 1024, None)]


def write_bag_with_bad_frames(path: str, good: int = 10) -> int:
    """An interaction episode of `good` steps, then one step per BAD_FRAMES entry whose front
    camera frame is that image. Returns the number of steps."""
    from apo_ros.recording.writer import EpisodeWriter

    rng = np.random.default_rng(3)
    writer = EpisodeWriter(path, metadata={"task": "lift", "instruction": "lift the red cube",
                                           "policy_id": "p", "stats_id": "s"})
    writer.write_event(START_NS, "start")
    n = good + len(BAD_FRAMES)
    for i in range(n):
        stamp = START_NS + (i + 1) * STEP_NS
        obs = synthetic_observation(rng, stamp, size=16, index=i)
        if i < good:
            writer.write_observation(obs)
        else:
            encoding, h, w, step, nbytes, _kind = BAD_FRAMES[i - good]
            writer.write_message("camera/front/image_raw",
                                 image_msg(encoding, h, w, bytes(range(256)) * (nbytes // 256)
                                           + bytes(nbytes % 256), step=step, stamp=stamp), stamp)
            writer.write_image("wrist", stamp, obs.images["wrist"])
            writer.write_joint_state(stamp, obs.joint_positions, JOINT_NAMES)
            writer.write_ee_pose(stamp, obs.ee_pose)
            writer.write_gripper(stamp, obs.gripper)
            writer.write_object_poses(stamp, obs.object_poses)
        source = "human" if 4 <= i < 8 else "policy"
        if i == 4:
            writer.write_event(stamp, "intervention_start")
        if i == 8:
            writer.write_event(stamp, "intervention_end")
        action = rng.uniform(-0.02, 0.02, 7)
        if source == "human":
            writer.write_human_command(stamp + 1_000_000, action, stamp)
        writer.write_action(stamp + 2_000_000, action, source, stamp, proposed=action + 0.001)
    writer.close("failure")
    return n


def test_a_bag_with_bad_frames_reads_without_them(tmp_path):
    n = write_bag_with_bad_frames(str(tmp_path / "ep"))
    episode = read_episode(str(tmp_path / "ep"))
    refused = [k for *_x, k in BAD_FRAMES if k is not None]
    assert len(episode.steps) == n - len(refused)
    assert episode.dropped_steps == len(refused)
    assert json.loads(episode.metadata["skipped_frames"]) == {k: 1 for k in refused}
    assert all(s.observation.images["front"].shape[2] == 3 for s in episode.steps)
    assert episode.steps[-1].observation.images["front"].shape == (16, 16, 3)  # bgra8 converted


def test_a_bag_with_bad_frames_still_trains(tmp_path, capsys):
    from apo_ros.cli import main
    from apo_ros.recording.synthetic import write_synthetic_episode

    write_bag_with_bad_frames(str(tmp_path / "bags" / "ep"))
    write_synthetic_episode(str(tmp_path / "demos" / "demo"), ["expert"] * 8, seed=1, size=16)
    code = main(["train", "--method", "apo", "--steps", "1", "--batch-size", "4", "--no-progress",
                 "--data", str(tmp_path / "bags"), "--demos", str(tmp_path / "demos"),
                 "--init", "small", "--out", str(tmp_path / "out"), "--no-cache",
                 "--policy.image_size", "16", "--policy.channels", "[4, 4]", "--policy.hidden", "16"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "unsupported image encoding" not in err
    assert json.load(open(tmp_path / "out" / "train_config.json"))["samples"]["bags"] == 2
