"""Episode bags as a LeRobotDataset (codebase version v3.0), so the corrections train LeRobot
policies (ACT, SmolVLA, pi0) too.

The layout is LeRobot's (lerobot 0.4.x, `lerobot/datasets/utils.py`):

    meta/info.json                              codebase_version "v3.0", fps, features, totals
    meta/stats.json                             per feature min / max / mean / std / count / quantiles
    meta/tasks.parquet                          task_index per task (the language instruction)
    meta/episodes/chunk-000/file-000.parquet    one row per episode: length, tasks, where its
                                                frames are (data/..., videos/<key>/...), stats
    data/chunk-000/file-000.parquet             one row per frame (= executed step)
    videos/<key>/chunk-000/file-000.mp4         one video per camera, the episodes one after another

Episodes are concatenated into files of at most `data_files_size_in_mb` / `video_files_size_in_mb`
(a new file-NNN after that, a new chunk-NNN after `chunks_size` files), as LeRobot writes them.

One frame per executed step: `observation.state` is the proprioception the policies here use
(ee position, ee quaternion, gripper), `action` the executed 7-D action, and per frame the
source of the action (`complementary_info.is_intervention`, LeRobot's human-in-the-loop name; the
source itself in `complementary_info.source`), what the policy proposed
(`complementary_info.policy_action`, NaN where it did not run) and the APO labels at K
(`complementary_info.apo_desirable` / `apo_undesirable`), plus `next.reward` / `next.done`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

import numpy as np

from apo_ros.errors import UserError
from apo_ros.recording.episode import Episode
from apo_ros.recording.labels import label_episode
from apo_ros.recording.messages import ACTION_NAMES
from apo_ros.recording.reader import BagError, find_bags, read_episode
from apo_ros.recording.video import Mp4Writer, _progress, _require_av, control_rate

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000  # files per chunk directory
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE_PATTERN + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
STATE_NAMES = ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper"]
SOURCE_KEY = "complementary_info.source"
INTERVENTION_KEY = "complementary_info.is_intervention"
POLICY_ACTION_KEY = "complementary_info.policy_action"
DESIRABLE_KEY = "complementary_info.apo_desirable"
UNDESIRABLE_KEY = "complementary_info.apo_undesirable"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


@dataclass
class ExportConfig:
    k: int = 10  # undesirable policy steps before each take-over (the APO labels)
    fps: int = 0  # 0 = the bags' control rate, rounded (every bag must agree)
    robot_type: str = "apo_arm"
    crf: int = 23  # H.264 quality of the camera videos
    chunks_size: int = DEFAULT_CHUNK_SIZE
    data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB
    video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB


@dataclass
class ExportReport:
    out: str
    episodes: int = 0
    frames: int = 0
    tasks: list[str] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (bag, why)

    def summary(self) -> str:
        cams = ", ".join(self.cameras) or "no cameras"
        return (f"wrote {self.out}: LeRobotDataset {CODEBASE_VERSION}, {self.episodes} episodes, "
                f"{self.frames} frames, {len(self.tasks)} task(s), videos: {cams}")


def _require_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("the LeRobot export needs pyarrow: pip install 'apo_ros[media]' (or pip install "
                        "pyarrow)") from None
    return pa, pq


def _chunk_file(position: int, chunks_size: int) -> tuple[int, int]:
    return divmod(position, chunks_size)


class _RollingFiles:
    """File positions (chunk, file) advancing when the current file has reached its size limit."""

    def __init__(self, limit_mb: float, chunks_size: int):
        self.limit = limit_mb * 1024 * 1024
        self.chunks_size = chunks_size
        self.position = 0

    @property
    def indices(self) -> tuple[int, int]:
        return _chunk_file(self.position, self.chunks_size)


def _episode_fps(ep: Episode) -> float:
    return control_rate(ep)


def _state(ep: Episode) -> np.ndarray:
    return np.stack([s.observation.proprio() for s in ep.steps]).astype(np.float32)


def _features(cameras: dict[str, tuple[int, int, int]], env_dim: int) -> dict:
    features: dict = {
        "observation.state": {"dtype": "float32", "shape": [8], "names": list(STATE_NAMES)},
    }
    if env_dim:
        features["observation.environment_state"] = {
            "dtype": "float32", "shape": [env_dim],
            "names": [f"object{i}_{n}" for i in range(env_dim // 7) for n in STATE_NAMES[:7]]}
    for cam, shape in cameras.items():
        features[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": list(shape), "names": ["height", "width", "channels"]}
    features["action"] = {"dtype": "float32", "shape": [7], "names": list(ACTION_NAMES)}
    features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    features[INTERVENTION_KEY] = {"dtype": "bool", "shape": [1], "names": ["is_intervention"]}
    features[SOURCE_KEY] = {"dtype": "string", "shape": [1], "names": ["policy | human | expert"]}
    features[POLICY_ACTION_KEY] = {"dtype": "float32", "shape": [7], "names": list(ACTION_NAMES)}
    features[DESIRABLE_KEY] = {"dtype": "bool", "shape": [1], "names": ["apo_desirable"]}
    features[UNDESIRABLE_KEY] = {"dtype": "bool", "shape": [1], "names": ["apo_undesirable"]}
    features.update(DEFAULT_FEATURES)
    return features


def _arrow_type(pa, ft: dict):
    types = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}
    base = types[ft["dtype"]]
    return base if ft["shape"] == [1] else pa.list_(base, ft["shape"][0])  # fixed-size list, as HF Sequence


def _stats(values: np.ndarray) -> dict:
    """LeRobot's per-feature statistics of (N, D) values (images: per channel, shape (C, 1, 1))."""
    v = values.astype(np.float64)
    out = {"min": v.min(axis=0), "max": v.max(axis=0), "mean": v.mean(axis=0), "std": v.std(axis=0),
           "count": np.array([v.shape[0]])}
    for name, q in QUANTILES.items():
        out[name] = np.quantile(v, q, axis=0)
    return out


def _image_stats(frames: np.ndarray) -> dict:
    """Per-channel stats of (N, H, W, 3) uint8 frames, in [0, 1], shaped (3, 1, 1) as LeRobot's."""
    step = max(1, frames.shape[0] // 100)  # LeRobot samples frames for image stats too
    v = frames[::step].astype(np.float64) / 255.0
    flat = v.reshape(-1, v.shape[-1])
    out = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0)}
    for name, q in QUANTILES.items():
        out[name] = np.quantile(flat, q, axis=0)
    out = {k: x.reshape(-1, 1, 1) for k, x in out.items()}
    out["count"] = np.array([frames.shape[0]])
    return out


def _merge_stats(parts: list[dict]) -> dict:
    """Dataset stats from per-episode stats (weighted mean / pooled std; quantiles: weighted
    mean of the episodes' quantiles, as LeRobot aggregates them)."""
    counts = np.array([float(p["count"][0]) for p in parts])
    w = counts / counts.sum()
    shape = parts[0]["mean"].shape
    means = np.stack([p["mean"] for p in parts])
    wb = w.reshape((-1,) + (1,) * len(shape))
    mean = (wb * means).sum(0)
    var = (wb * (np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(0)
    out = {"min": np.min(np.stack([p["min"] for p in parts]), 0),
           "max": np.max(np.stack([p["max"] for p in parts]), 0),
           "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())])}
    for name in QUANTILES:
        out[name] = (wb * np.stack([p[name] for p in parts])).sum(0)
    return out


def _tolist(stats: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


def export_lerobot(paths, out: str, config: ExportConfig | None = None, *, overwrite: bool = False,
                   progress: bool = False, log=None) -> ExportReport:
    """Write the episodes of the bags in `paths` (bags or folders of bags) as a LeRobotDataset v3.0
    in the directory `out`. Bags that cannot be read are skipped and listed in the report; bags
    whose cameras, image sizes, object count or rate differ from the first one are skipped too
    (one dataset has one feature set and one fps)."""
    pa, pq = _require_pyarrow()
    c = config or ExportConfig()
    if c.k < 0:
        raise UserError(f"k must be >= 0, got {c.k}")
    if os.path.exists(out):
        if not overwrite:
            raise UserError(f"{out}: exists (choose a new directory, or --overwrite)")
        if os.path.isfile(out):
            raise UserError(f"{out}: is a file, expected a dataset directory")
        if os.path.exists(os.path.join(out, INFO_PATH)):
            shutil.rmtree(out)
        elif os.listdir(out):
            raise UserError(f"{out}: a non-empty directory that is not a LeRobot dataset; not overwriting it")
    found = find_bags(paths)
    report = ExportReport(out=out, skipped=list(found.skipped))
    if not found.bags:
        raise UserError(f"no bags found in {' '.join(map(str, paths))}")

    features: dict | None = None
    cameras: dict[str, tuple[int, int, int]] = {}
    env_dim = 0
    fps = 0
    tasks: dict[str, int] = {}
    episode_rows: list[dict] = []
    stats_parts: dict[str, list[dict]] = {}
    data_files = _RollingFiles(c.data_files_size_in_mb, c.chunks_size)
    video_files = {}
    data_writer = None
    data_path = ""
    video_writers: dict[str, Mp4Writer] = {}
    video_frames_in_file: dict[str, int] = {}
    index = 0
    bar = _progress(len(found.bags), "export", progress)
    try:
        for bag in found.bags:
            if bar is not None:
                bar.advance(bar.task_ids[0])
            try:
                ep = read_episode(bag, load_images=True)
            except BagError as err:
                report.skipped.append((err.path, err.problem))
                continue
            if not ep.steps:
                report.skipped.append((bag, "no executed steps"))
                continue
            ep_cams = {name: tuple(int(x) for x in img.shape)
                       for name, img in ep.steps[0].observation.images.items()}
            ep_env = int(ep.steps[0].observation.object_state().shape[0])
            if features is None:
                cameras = ep_cams
                env_dim = ep_env if all(s.observation.object_state().shape[0] == ep_env
                                        for s in ep.steps) else 0
                fps = c.fps or int(round(_episode_fps(ep)))
                if fps <= 0:
                    raise UserError(f"fps must be positive, got {fps}")
                features = _features(cameras, env_dim)
                schema = pa.schema([(k, _arrow_type(pa, ft)) for k, ft in features.items()
                                    if ft["dtype"] != "video"])
                report.cameras = list(cameras)
                video_files = {cam: _RollingFiles(c.video_files_size_in_mb, c.chunks_size) for cam in cameras}
            else:
                problem = _mismatch(ep, ep_cams, cameras, env_dim, fps, c.fps)
                if problem:
                    report.skipped.append((bag, problem))
                    continue
            n = len(ep.steps)
            ep_index = len(episode_rows)
            instruction = (ep.steps[0].observation.instruction or ep.metadata.get("instruction")
                           or ep.metadata.get("task") or "unknown task")
            task_index = tasks.setdefault(instruction, len(tasks))
            labels = label_episode(ep, k=c.k)
            frame_index = np.arange(n, dtype=np.int64)
            state = _state(ep)
            action = ep.actions().astype(np.float32)
            proposed = np.stack([s.proposed if s.proposed is not None else np.full(7, np.nan)
                                 for s in ep.steps]).astype(np.float32)
            reward = np.zeros(n, np.float32)
            if ep.outcome == "success":
                reward[-1] = 1.0
            done = np.zeros(n, bool)
            done[-1] = True
            columns = {
                "observation.state": state,
                "action": action,
                "next.reward": reward,
                "next.done": done,
                INTERVENTION_KEY: labels.is_human.copy(),
                SOURCE_KEY: np.array(ep.sources, dtype=object),
                POLICY_ACTION_KEY: proposed,
                DESIRABLE_KEY: labels.desirable.copy(),
                UNDESIRABLE_KEY: labels.undesirable.copy(),
                "timestamp": (frame_index / fps).astype(np.float32),
                "frame_index": frame_index,
                "episode_index": np.full(n, ep_index, np.int64),
                "index": np.arange(index, index + n, dtype=np.int64),
                "task_index": np.full(n, task_index, np.int64),
            }
            if env_dim:
                columns["observation.environment_state"] = np.stack(
                    [s.observation.object_state() for s in ep.steps]).astype(np.float32)
            # --- data parquet (episodes concatenated; a new file past the size limit) ----------
            if data_writer is not None and os.path.getsize(data_path) >= data_files.limit:
                data_writer.close()
                data_writer = None
                data_files.position += 1
            if data_writer is None:
                ci, fi = data_files.indices
                data_path = os.path.join(out, DATA_PATH.format(chunk_index=ci, file_index=fi))
                os.makedirs(os.path.dirname(data_path), exist_ok=True)
                data_writer = pq.ParquetWriter(data_path, schema)
            arrays = []
            for name in schema.names:
                col = columns[name]
                ftype = schema.field(name).type
                if pa.types.is_fixed_size_list(ftype):
                    flat = pa.array(col.reshape(-1), ftype.value_type)
                    arrays.append(pa.FixedSizeListArray.from_arrays(flat, ftype.list_size))
                else:
                    arrays.append(pa.array(col.tolist() if col.dtype == object else col, ftype))
            data_writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            ci, fi = data_files.indices
            row = {"episode_index": ep_index, "tasks": [instruction], "length": n,
                   "data/chunk_index": ci, "data/file_index": fi,
                   "dataset_from_index": index, "dataset_to_index": index + n}
            # --- videos --------------------------------------------------------------------------
            ep_stats: dict[str, dict] = {}
            for cam in cameras:
                key = f"observation.images.{cam}"
                files = video_files[cam]
                writer = video_writers.get(cam)
                if writer is not None and os.path.getsize(writer.path) >= files.limit:
                    writer.close()
                    writer = None
                    files.position += 1
                if writer is None:
                    vci, vfi = files.indices
                    rel = VIDEO_PATH.format(video_key=key, chunk_index=vci, file_index=vfi)
                    path = os.path.join(out, rel)
                    h, w = cameras[cam][:2]
                    pix = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
                    # a keyframe every 2 frames: LeRobot decodes random frames, as its own encoder does
                    writer = video_writers[cam] = Mp4Writer(path, fps, crf=c.crf, gop=2, pix_fmt=pix)
                    video_frames_in_file[cam] = 0
                start = video_frames_in_file[cam]
                frames = np.stack([s.observation.images[cam] for s in ep.steps])
                for f in frames:
                    writer.write(f)
                video_frames_in_file[cam] += n
                vci, vfi = files.indices
                row[f"videos/{key}/chunk_index"] = vci
                row[f"videos/{key}/file_index"] = vfi
                row[f"videos/{key}/from_timestamp"] = start / fps
                row[f"videos/{key}/to_timestamp"] = (start + n) / fps
                ep_stats[key] = _image_stats(frames)
            # --- per-episode stats ---------------------------------------------------------------
            for name, ft in features.items():
                if ft["dtype"] in ("video", "string"):
                    continue
                values = columns[name]
                values = values.reshape(n, -1).astype(np.float64)
                if name == POLICY_ACTION_KEY:  # NaN where the policy did not run: stats of the rest
                    ok = np.all(np.isfinite(values), axis=1)
                    if not ok.any():
                        continue
                    values = values[ok]
                ep_stats[name] = _stats(values)
            for name, st in ep_stats.items():
                stats_parts.setdefault(name, []).append(st)
                for stat, v in st.items():
                    row[f"stats/{name}/{stat}"] = np.asarray(v).tolist()
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
            # where each exported episode came from (extra columns; LeRobot ignores them)
            row["apo_ros/bag"] = os.path.abspath(ep.path)
            row["apo_ros/outcome"] = ep.outcome
            row["apo_ros/policy_id"] = ep.metadata.get("policy_id", "")
            row["apo_ros/seed"] = ep.metadata.get("seed", "")
            episode_rows.append(row)
            index += n
            report.frames += n
            if log is not None:
                log(f"episode {ep_index}: {bag} ({n} frames, {ep.outcome})")
    finally:
        if bar is not None:
            bar.stop()
        if data_writer is not None:
            data_writer.close()
        for writer in video_writers.values():
            writer.close()
    if not episode_rows:
        raise UserError("no bag could be exported: " + "; ".join(f"{p}: {w}" for p, w in report.skipped))
    assert features is not None

    # --- meta -------------------------------------------------------------------------------------
    av = _require_av()
    for cam in cameras:
        key = f"observation.images.{cam}"
        with av.open(os.path.join(out, VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0))) as f:
            stream = f.streams.video[0]
            features[key]["info"] = {
                "video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec_context.name, "video.pix_fmt": stream.pix_fmt,
                "video.is_depth_map": False, "video.fps": int(stream.base_rate),
                "video.channels": 3, "has_audio": False}
    _write_episodes(pa, pq, episode_rows, out)
    _write_tasks(pa, pq, tasks, out)
    stats = {name: _tolist(_merge_stats(parts)) for name, parts in stats_parts.items()}
    _write_json(stats, os.path.join(out, STATS_PATH))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": c.robot_type,
        "total_episodes": len(episode_rows),
        "total_frames": index,
        "total_tasks": len(tasks),
        "chunks_size": c.chunks_size,
        "data_files_size_in_mb": c.data_files_size_in_mb,
        "video_files_size_in_mb": c.video_files_size_in_mb,
        "fps": fps,
        "splits": {"train": f"0:{len(episode_rows)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cameras else None,
        "features": features,
    }
    _write_json(info, os.path.join(out, INFO_PATH))
    report.episodes = len(episode_rows)
    report.tasks = list(tasks)
    return report


def _mismatch(ep: Episode, ep_cams: dict, cameras: dict, env_dim: int, fps: int, fixed_fps: int) -> str:
    if ep_cams != cameras:
        return f"cameras {ep_cams} differ from the first bag's {cameras}"
    if env_dim and any(s.observation.object_state().shape[0] != env_dim for s in ep.steps):
        return f"object poses differ from the first bag's ({env_dim // 7} objects)"
    if not fixed_fps:
        rate = _episode_fps(ep)
        if abs(rate - fps) > 0.05 * fps:
            return f"control rate {rate:.2f} Hz differs from the dataset's {fps} fps"
    return ""


def _write_json(doc: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=4, ensure_ascii=False)


def _write_episodes(pa, pq, rows: list[dict], out: str) -> None:
    columns: dict[str, list] = {}
    for row in rows:
        for k in row:
            columns.setdefault(k, [])
    for row in rows:
        for k in columns:
            columns[k].append(row.get(k))
    arrays = {}
    for k, values in columns.items():
        if k in ("tasks",):
            arrays[k] = pa.array(values, pa.list_(pa.string()))
        elif k.endswith(("chunk_index", "file_index")) or k in (
                "episode_index", "length", "dataset_from_index", "dataset_to_index"):
            arrays[k] = pa.array(values, pa.int64())
        elif k.endswith(("from_timestamp", "to_timestamp")):
            arrays[k] = pa.array(values, pa.float64())
        elif k.startswith("apo_ros/"):
            arrays[k] = pa.array(values, pa.string())
        else:  # stats/<feature>/<stat>: lists of floats (nested for images), inferred
            arrays[k] = pa.array(values)
    path = os.path.join(out, EPISODES_PATH.format(chunk_index=0, file_index=0))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(arrays), path)


def _write_tasks(pa, pq, tasks: dict[str, int], out: str) -> None:
    """tasks.parquet as LeRobot writes it (pandas: the task string is the index, task_index the
    column); the pandas metadata lets `pd.read_parquet` restore that index without pandas here."""
    names = list(tasks)
    table = pa.table({"task_index": pa.array([tasks[t] for t in names], pa.int64()),
                      "task": pa.array(names, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path = os.path.join(out, TASKS_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)
