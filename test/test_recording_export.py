"""`apo-ros bags export --format lerobot`: the LeRobotDataset v3.0 read back with independent
readers (pyarrow for the parquet files, PyAV for the videos) and checked against the bags."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from apo_ros.cli import main
from apo_ros.recording import read_episode
from apo_ros.recording.labels import label_episode
from apo_ros.recording.synthetic import write_synthetic_episode

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")

K = 3


def _write_bag(path, sources, *, seed: int, outcome: str = "success", instruction: str = "lift the red cube",
               metadata: dict | None = None, size: int = 32):
    """A real bag whose camera frames are told apart at a glance: step j shows a bright square at
    a place that moves with j (so a decoded frame matches its own step and no other)."""
    from apo_ros.recording.synthetic import write_synthetic_episode

    def draw(j, obs):
        for c, cam in enumerate(obs.images):
            img = np.full((size, size, 3), 40, np.uint8)
            y, x = divmod((3 * j + 5 * c) % 16, 4)
            img[y * 8:y * 8 + 8, x * 8:x * 8 + 8] = (230, 200 - 60 * c, 30 + 60 * c)
            obs.images[cam] = img

    meta = {"task": "lift", "instruction": instruction, "policy_id": "p", "operator": "t", **(metadata or {})}
    write_synthetic_episode(str(path), sources, seed=seed, size=size, outcome=outcome, metadata=meta,
                            draw_frames=draw)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    bags = root / "bags"
    _write_bag(bags / "a", ["policy"] * 9 + ["human"] * 4 + ["policy"] * 3, seed=1, metadata={"seed": "11"})
    _write_bag(bags / "b", ["expert"] * 7, seed=2, outcome="failure", instruction="put the cube down")
    _write_bag(bags / "c", ["policy"] * 3 + ["human"] * 2 + ["policy"] * 6 + ["human"] * 2, seed=3)
    out = root / "dataset"
    assert main(["bags", "export", str(bags), "--format", "lerobot", "-o", str(out), "--k", str(K)]) == 0
    episodes = [read_episode(str(bags / n)) for n in ("a", "b", "c")]
    return out, episodes


def _info(out):
    with open(out / "meta" / "info.json") as f:
        return json.load(f)


def test_layout_and_info_follow_lerobot_v3(exported):
    out, episodes = exported
    info = _info(out)
    total = sum(len(e.steps) for e in episodes)
    assert info["codebase_version"] == "v3.0"
    totals = (info["total_episodes"], info["total_frames"], info["total_tasks"], info["fps"])
    assert totals == (3, total, 2, 15)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": "0:3"} and info["chunks_size"] == 1000
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert files == ["data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet",
                     "meta/info.json", "meta/stats.json", "meta/tasks.parquet",
                     "videos/observation.images.front/chunk-000/file-000.mp4",
                     "videos/observation.images.wrist/chunk-000/file-000.mp4"]
    f = info["features"]
    assert f["action"] == {"dtype": "float32", "shape": [7],
                           "names": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]}
    assert f["observation.state"]["shape"] == [8]
    for cam in ("front", "wrist"):
        ft = f[f"observation.images.{cam}"]
        assert ft["dtype"] == "video" and ft["shape"] == [32, 32, 3]
        assert ft["names"] == ["height", "width", "channels"]
        assert ft["info"]["video.codec"] == "h264" and ft["info"]["video.fps"] == 15
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert f[key]["shape"] == [1]
    assert f["complementary_info.is_intervention"]["dtype"] == "bool"
    assert all("/" not in key for key in f)  # LeRobot refuses feature names with '/'


def test_frames_actions_and_labels_match_the_bags(exported):
    out, episodes = exported
    info = _info(out)
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet")
    non_video = {k for k, ft in info["features"].items() if ft["dtype"] != "video"}
    assert set(data.column_names) == non_video
    assert data.num_rows == sum(len(e.steps) for e in episodes)
    rows = data.to_pydict()
    tasks = pq.read_table(out / "meta" / "tasks.parquet").to_pydict()
    task_of = dict(zip(tasks["task_index"], tasks["task"]))
    assert sorted(task_of.values()) == ["lift the red cube", "put the cube down"]
    meta = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert meta["episode_index"] == [0, 1, 2]
    assert rows["index"] == list(range(data.num_rows))
    for i, ep in enumerate(episodes):
        lo, hi = meta["dataset_from_index"][i], meta["dataset_to_index"][i]
        assert hi - lo == len(ep.steps) == meta["length"][i]
        assert meta["data/chunk_index"][i] == 0 and meta["data/file_index"][i] == 0
        assert meta["tasks"][i] == [ep.steps[0].observation.instruction]
        assert rows["episode_index"][lo:hi] == [i] * len(ep.steps)
        assert rows["frame_index"][lo:hi] == list(range(len(ep.steps)))
        np.testing.assert_allclose(rows["timestamp"][lo:hi], np.arange(len(ep.steps)) / 15, atol=1e-6)
        assert {task_of[t] for t in rows["task_index"][lo:hi]} == {ep.steps[0].observation.instruction}
        np.testing.assert_array_equal(np.array(rows["action"][lo:hi], np.float32),
                                      ep.actions().astype(np.float32))
        np.testing.assert_array_equal(np.array(rows["observation.state"][lo:hi], np.float32),
                                      np.stack([s.observation.proprio() for s in ep.steps]))
        labels = label_episode(ep, k=K)
        assert rows["complementary_info.is_intervention"][lo:hi] == [s == "human" for s in ep.sources]
        assert rows["complementary_info.source"][lo:hi] == ep.sources
        assert rows["complementary_info.apo_undesirable"][lo:hi] == labels.undesirable.tolist()
        assert rows["complementary_info.apo_desirable"][lo:hi] == labels.desirable.tolist()
        proposed = np.array(rows["complementary_info.policy_action"][lo:hi], np.float64)
        for s, p in zip(ep.steps, proposed):
            if s.proposed is None:
                assert np.isnan(p).all()
            else:
                np.testing.assert_allclose(p, s.proposed, rtol=1e-6, atol=1e-7)
        assert rows["next.done"][lo:hi] == [False] * (len(ep.steps) - 1) + [True]
        assert rows["next.reward"][hi - 1] == (1.0 if ep.outcome == "success" else 0.0)
        assert meta["apo_ros/outcome"][i] == ep.outcome
    assert sum(meta["length"]) == data.num_rows
    # the undesirable labels are there at all (two take-overs in c, one in a, K = 3 each)
    assert sum(rows["complementary_info.apo_undesirable"]) == 9


def test_videos_hold_every_frame_at_its_timestamp(exported):
    out, episodes = exported
    meta = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    for cam in ("front", "wrist"):
        key = f"observation.images.{cam}"
        with av.open(str(out / "videos" / key / "chunk-000" / "file-000.mp4")) as f:
            decoded = [(float(fr.time), fr.to_ndarray(format="rgb24")) for fr in f.decode(video=0)]
        assert len(decoded) == sum(len(e.steps) for e in episodes)
        times = np.array([t for t, _ in decoded])
        for i, ep in enumerate(episodes):
            start = meta[f"videos/{key}/from_timestamp"][i]
            assert meta[f"videos/{key}/to_timestamp"][i] == pytest.approx(start + len(ep.steps) / 15)
            for j in range(len(ep.steps)):
                t = start + j / 15
                k = int(np.argmin(np.abs(times - t)))
                assert abs(times[k] - t) < 1e-4  # LeRobot's default tolerance_s
                errors = [np.abs(decoded[k][1].astype(int) - s.observation.images[cam].astype(int)).mean()
                          for s in ep.steps]
                assert int(np.argmin(errors)) == j and errors[j] < 6.0, (cam, i, j, errors)


def test_stats_and_tasks_metadata(exported):
    out, episodes = exported
    with open(out / "meta" / "stats.json") as f:
        stats = json.load(f)
    actions = np.concatenate([e.actions() for e in episodes]).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(0), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(0))
    assert stats["action"]["count"] == [len(actions)]
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    schema = pq.read_schema(out / "meta" / "tasks.parquet")
    pandas_meta = json.loads(schema.metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["task"]  # pandas (LeRobot's reader) indexes by the task


def test_existing_output_and_mismatched_bags(tmp_path, capsys):
    write_synthetic_episode(str(tmp_path / "bags" / "a"), ["policy"] * 4, size=16)
    write_synthetic_episode(str(tmp_path / "bags" / "b"), ["policy"] * 4, size=24)  # other image size
    out = tmp_path / "ds"
    assert main(["bags", "export", str(tmp_path / "bags"), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "1 episodes, 4 frames" in captured.out and "differ from the first bag" in captured.err
    assert main(["bags", "export", str(tmp_path / "bags" / "a"), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["bags", "export", str(tmp_path / "bags" / "b"), "-o", str(out), "--overwrite"]) == 0
    assert _info(out)["features"]["observation.images.front"]["shape"] == [24, 24, 3]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["bags", "export", str(tmp_path / "bags" / "a"), "-o", str(tmp_path / "mine"),
                 "--overwrite"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_pandas_reads_tasks_as_lerobot_does(exported):
    pd = pytest.importorskip("pandas")
    out, _ = exported
    tasks = pd.read_parquet(out / "meta" / "tasks.parquet")
    assert sorted(tasks.index) == ["lift the red cube", "put the cube down"]
    assert list(tasks.columns) == ["task_index"]


# LeRobot's own reader, where a venv with lerobot exists (lerobot 0.4.4 pins torch < 2.11, so it
# cannot live in this project's venv): APO_ROS_LEROBOT_PYTHON=/path/to/venv/bin/python.
_LEROBOT_SCRIPT = r"""
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/apo_ros_export", root=sys.argv[1], video_backend="pyav")
out = {"len": len(ds), "episodes": ds.meta.total_episodes, "fps": ds.fps, "items": []}
for i in (0, len(ds) - 1):
    item = ds[i]
    out["items"].append({"index": int(item["index"]), "action": item["action"].tolist(),
                         "is_intervention": bool(item["complementary_info.is_intervention"]),
                         "task": item["task"], "front": list(item["observation.images.front"].shape),
                         "front_mean": float(item["observation.images.front"].mean())})
print(json.dumps(out))
"""


def test_lerobot_itself_loads_the_export(exported):
    import subprocess

    python = os.environ.get("APO_ROS_LEROBOT_PYTHON", "")
    if not python or not os.path.exists(python):
        pytest.skip("no venv with lerobot (set APO_ROS_LEROBOT_PYTHON to its python)")
    out, episodes = exported
    proc = subprocess.run([python, "-c", _LEROBOT_SCRIPT, str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = [s for e in episodes for s in e.steps]
    assert (doc["len"], doc["episodes"], doc["fps"]) == (len(steps), 3, 15)
    for item, step in zip(doc["items"], (steps[0], steps[-1])):
        np.testing.assert_allclose(item["action"], step.action.astype(np.float32), rtol=1e-6)
        assert item["is_intervention"] == (step.source == "human")
        assert item["task"] == step.observation.instruction
        assert item["front"] == [3, 32, 32]  # LeRobot returns channel-first float images
        expected = step.observation.images["front"].astype(float).mean() / 255
        assert abs(item["front_mean"] - expected) < 0.03


def test_bags_without_cameras_export_without_videos(tmp_path):
    """The demo's state-policy bags have no camera topics: data and meta only, video_path null."""
    write_synthetic_episode(str(tmp_path / "bags" / "a"), ["policy"] * 5 + ["human"] * 3, size=8, cameras=())
    write_synthetic_episode(str(tmp_path / "bags" / "b"), ["expert"] * 4, size=8, cameras=(), seed=4)
    out = tmp_path / "ds"
    assert main(["bags", "export", str(tmp_path / "bags"), "-o", str(out)]) == 0
    info = _info(out)
    assert info["video_path"] is None and not (out / "videos").exists()
    assert not any(ft["dtype"] == "video" for ft in info["features"].values())
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    episodes = [read_episode(str(tmp_path / "bags" / n)) for n in ("a", "b")]
    expected = np.concatenate([e.actions() for e in episodes]).astype(np.float32)
    np.testing.assert_array_equal(np.array(data["action"], np.float32), expected)
    assert info["total_frames"] == len(expected) == 12
