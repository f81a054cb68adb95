"""`apo-ros bags video`: episode videos read back with PyAV, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from apo_ros.cli import main
from apo_ros.recording import read_episode
from apo_ros.recording.labels import label_episode
from apo_ros.recording.synthetic import START_NS, STEP_NS, synthetic_observation, write_synthetic_episode
from apo_ros.recording.video import (
    SOURCE_COLORS,
    UNDESIRABLE_COLOR,
    EpisodeFrames,
    VideoConfig,
    control_rate,
    frame_plan,
)

av = pytest.importorskip("av")

PALETTE = {**SOURCE_COLORS, "undesirable": UNDESIRABLE_COLOR}


def _decode(path):
    with av.open(str(path)) as f:
        stream = f.streams.video[0]
        codec = stream.codec_context.name
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    return codec, frames


def _band_class(frame: np.ndarray, cells: EpisodeFrames) -> str:
    """The palette entry nearest to the source band above the cameras (median over its width)."""
    y = cells.header - cells.band // 2 - 1
    color = np.median(frame[y, cells.pad:-cells.pad].astype(float), axis=0)
    return min(PALETTE, key=lambda k: float(np.sum((color - np.array(PALETTE[k])) ** 2)))


def _expected_classes(plan) -> list[str]:
    return ["undesirable" if f.undesirable else f.source for f in plan]


def _write_with_hold(path, *, steps_before: int = 12, held_steps: int = 5, steps_after: int = 6):
    """A real bag with a stop in it: the operator held the arm for `held_steps` control periods
    (observations went on, no action was executed), then released it."""
    from apo_ros.recording.writer import EpisodeWriter

    rng = np.random.default_rng(3)
    writer = EpisodeWriter(str(path), metadata={"task": "lift", "instruction": "lift the red cube",
                                                "seed": "5", "control_hz": str(1e9 / STEP_NS)})
    writer.write_event(START_NS, "start")
    t = START_NS
    for i in range(steps_before + steps_after):
        t += STEP_NS
        if i == steps_before:
            writer.write_event(t, "hold")
            t += held_steps * STEP_NS
            writer.write_event(t - STEP_NS // 2, "resume")
        writer.write_observation(synthetic_observation(rng, t, size=32, index=i))
        writer.write_action(t + 1_000_000, rng.uniform(-0.01, 0.01, 7), "policy", t)
    writer.close("failure")


def test_video_shows_who_acted_frame_by_frame(tmp_path, capsys):
    sources = ["policy"] * 14 + ["human"] * 6 + ["policy"] * 6
    write_synthetic_episode(str(tmp_path / "ep"), sources, size=32, metadata={"seed": "4"})
    out = tmp_path / "ep.mp4"
    assert main(["bags", "video", str(tmp_path / "ep"), "-o", str(out), "--size", "128", "--k", "4"]) == 0
    assert "1 take-over(s)" in capsys.readouterr().out
    ep = read_episode(str(tmp_path / "ep"))
    config = VideoConfig(panel_height=128, k=4)
    cells = EpisodeFrames(ep, config)
    codec, frames = _decode(out)
    tail = int(round(config.tail_s * control_rate(ep)))
    assert codec == "h264"
    assert len(frames) == len(sources) + tail
    assert frames[0].shape == (cells.height, cells.width, 3)
    seen = [_band_class(f, cells) for f in frames[:len(sources)]]
    labels = label_episode(ep, k=4)
    assert seen == ["undesirable" if u else s for s, u in zip(sources, labels.undesirable)]
    assert seen.count("undesirable") == 4 and seen.count("human") == 6
    # the held last frame: the episode's last step, now marked with the outcome
    assert np.abs(frames[-1].astype(int) - frames[len(sources)].astype(int)).mean() < 2.0


def test_hold_is_shown_for_the_time_the_arm_was_held(tmp_path):
    _write_with_hold(tmp_path / "held", steps_before=12, held_steps=5, steps_after=6)
    ep = read_episode(str(tmp_path / "held"))
    plan = frame_plan(ep, k=10)
    classes = _expected_classes(plan)
    assert classes == ["policy"] * 12 + ["hold"] * 4 + ["policy"] * 6  # 5 periods gap = 4 extra frames
    out = tmp_path / "held.mp4"
    assert main(["bags", "video", str(tmp_path / "held"), "-o", str(out), "--size", "96"]) == 0
    cells = EpisodeFrames(ep, VideoConfig(panel_height=96))
    _, frames = _decode(out)
    assert [_band_class(f, cells) for f in frames[:len(plan)]] == classes


def test_grid_puts_the_same_initial_state_side_by_side(tmp_path, capsys):
    write_synthetic_episode(str(tmp_path / "base" / "ep"), ["policy"] * 10 + ["human"] * 4, size=32,
                            metadata={"seed": "9", "policy_id": "base"})
    write_synthetic_episode(str(tmp_path / "apo" / "ep"), ["policy"] * 8, size=32,
                            metadata={"seed": "9", "policy_id": "apo"})
    write_synthetic_episode(str(tmp_path / "other" / "ep"), ["policy"] * 5, size=32,
                            metadata={"seed": "10", "policy_id": "base"})
    assert main(["bags", "video", str(tmp_path), "--grid", "-o", str(tmp_path / "videos"),
                 "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "lift_seed9.mp4 (" in out and "lift_seed10.mp4" in out
    one = EpisodeFrames(read_episode(str(tmp_path / "base" / "ep")), VideoConfig(panel_height=64))
    _, frames = _decode(tmp_path / "videos" / "lift_seed9.mp4")
    tail = int(round(1.0 * 15))
    assert len(frames) == 14 + tail  # the longer episode; the shorter one freezes on its end
    assert frames[0].shape[1] >= 2 * one.width and frames[0].shape[0] == one.height
    # one .mp4 for several initial states is refused with a one-line message
    assert main(["bags", "video", str(tmp_path), "--grid", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "2 initial states" in capsys.readouterr().err


def test_folder_gives_one_video_per_episode_and_bad_input_is_one_line(tmp_path, capsys):
    write_synthetic_episode(str(tmp_path / "bags" / "a"), ["policy"] * 6, size=16)
    write_synthetic_episode(str(tmp_path / "bags" / "b"), ["expert"] * 5, size=16, cameras=())
    (tmp_path / "bags" / "junk").mkdir()
    (tmp_path / "bags" / "junk" / "x.mcap").write_bytes(b"nope")
    assert main(["bags", "video", str(tmp_path / "bags"), "-o", str(tmp_path / "v"), "--size", "48"]) == 1
    out, err = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["a.mp4", "b.mp4"]
    assert "junk" in err and "Traceback" not in err
    _, frames = _decode(tmp_path / "v" / "b.mp4")  # no cameras: the timeline still plays
    assert len(frames) == 5 + 15
    assert main(["bags", "video", str(tmp_path / "bags"), "-o", str(tmp_path / "one.mp4")]) == 2
    assert "give a directory" in capsys.readouterr().err
    assert main(["bags", "video", str(tmp_path / "none"), "-o", str(tmp_path / "n.mp4")]) == 2
