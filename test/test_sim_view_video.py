"""`apo-ros sim view -o X.mp4` and the demo's method videos: real MuJoCo episodes recorded as
sessions and filmed."""

from __future__ import annotations

import pytest

from apo_ros.cli import main
from apo_ros.recording import read_episode

av = pytest.importorskip("av")


def _frames(path) -> int:
    with av.open(str(path)) as f:
        return sum(1 for _ in f.decode(video=0))


def test_sim_view_writes_the_episode_video(tmp_path, capsys):
    out = tmp_path / "ep.mp4"
    assert main(["sim", "view", "--task", "lemon_on_plate", "--seed", "3", "--max-steps", "12",
                 "--image-size", "32", "--size", "64", "-o", str(out),
                 "--keep-bag", str(tmp_path / "bags")]) == 0
    printed = capsys.readouterr().out
    assert "take-over(s)" in printed
    bag = printed.split("; bag ")[1].strip()
    ep = read_episode(bag)
    assert 0 < len(ep.steps) <= 12 and set(ep.sources) == {"expert"}
    assert _frames(out) == len(ep.steps) + 10  # one per step, the last held 1 s at 10 Hz


def test_method_videos_film_the_same_initial_state_for_every_policy(tmp_path):
    from apo_ros.demo.videos import method_videos

    written = method_videos("lemon_on_plate", 5, {"a": "expert", "b": "expert"}, str(tmp_path),
                            operator="none", image_size=32, max_steps=8, panel_height=48)
    assert set(written) == {"a", "b", "grid", "still"}
    first = read_episode(next((tmp_path / "bags" / "a").iterdir()))
    second = read_episode(next((tmp_path / "bags" / "b").iterdir()))
    # the same seed: the same initial state, so the scripted expert does the same thing twice
    assert (first.steps[0].observation.images["front"] == second.steps[0].observation.images["front"]).all()
    assert _frames(written["grid"]) == max(len(first.steps), len(second.steps)) + 10
    assert (tmp_path / "grid.png").stat().st_size > 0
