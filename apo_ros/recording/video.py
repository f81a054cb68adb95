"""Episode videos: what a person watches to judge a correction.

Each frame shows the episode's cameras side by side, a header with the step counter, the source
of the executed action (policy / human / expert, or hold while the operator stopped the arm) and
the outcome, and a timeline strip under the images: one cell per step, colored by who acted, with
the K policy steps before every take-over (the APO "undesirable" window) in red and a cursor at
the current step. A grid puts several episodes (the same initial state under several policies)
next to each other in one video, step by step; a finished episode freezes on its last frame.

H.264 in an MP4 through PyAV (libx264, yuv420p), so any browser or player shows it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from apo_ros.errors import UserError
from apo_ros.recording.episode import Episode
from apo_ros.recording.labels import label_episode
from apo_ros.recording.reader import read_episode

# RGB. The same hues as `bags plot`, so a video and a timeline plot read alike.
SOURCE_COLORS: dict[str, tuple[int, int, int]] = {
    "policy": (158, 202, 225),  # light blue
    "human": (255, 127, 14),  # orange
    "expert": (44, 160, 44),  # green
    "hold": (127, 127, 127),  # grey: the operator stopped the arm, nothing executed
}
UNDESIRABLE_COLOR = (214, 39, 40)  # red: the K policy steps before a take-over
OUTCOME_COLORS: dict[str, tuple[int, int, int]] = {
    "success": (44, 160, 44), "failure": (214, 39, 40), "abort": (127, 127, 127),
    "unknown": (188, 189, 34),
}
BACKGROUND = (250, 250, 250)
TEXT = (25, 25, 25)
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class VideoConfig:
    """How an episode video looks and is encoded."""

    panel_height: int = 256  # each camera image is scaled to this height (pixels)
    k: int = 10  # undesirable policy steps before each take-over (as `bags info --k`)
    fps: float = 0.0  # frames per second; 0 = the episode's control rate (real time)
    tail_s: float = 1.0  # the last frame is held this long, so the outcome can be read
    crf: int = 23  # H.264 quality (lower = better, larger files)


@dataclass
class FrameSpec:
    """One video frame: which step's observation it shows and under which source."""

    step: int  # index into episode.steps (its observation is shown)
    source: str  # policy | human | expert | hold
    undesirable: bool


def control_rate(episode: Episode) -> float:
    """Steps per second: custom_data `control_hz` when the bag has it, else from the stamps."""
    try:
        hz = float(episode.metadata.get("control_hz", "nan"))
    except ValueError:
        hz = float("nan")
    if math.isfinite(hz) and hz > 0:
        return hz
    stamps = np.array([s.observation.stamp_ns for s in episode.steps], dtype=np.int64)
    if len(stamps) > 1:
        dt = float(np.median(np.diff(stamps))) / 1e9
        if dt > 0:
            return 1.0 / dt
    return 10.0


def _hold_spans(episode: Episode) -> list[tuple[int, int]]:
    """[hold, resume) bag-time spans from the episode's events (an unreleased hold runs to the end)."""
    spans, start = [], None
    for t, kind in episode.events:
        if kind == "hold" and start is None:
            start = t
        elif kind == "resume" and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, np.iinfo(np.int64).max))
    return spans


def frame_plan(episode: Episode, k: int = 10) -> list[FrameSpec]:
    """One frame per executed step; while the operator held the arm (no step is executed, so the
    bag has none) the last observation is repeated as `hold` frames for the held time."""
    if not episode.steps:
        return []
    labels = label_episode(episode, k=k)
    holds = _hold_spans(episode)
    period_ns = 1e9 / control_rate(episode)
    plan: list[FrameSpec] = []
    for i, step in enumerate(episode.steps):
        plan.append(FrameSpec(i, step.source, bool(labels.undesirable[i])))
        if i + 1 < len(episode.steps) and holds:
            t0, t1 = step.stamp_ns, episode.steps[i + 1].stamp_ns
            held = sum(max(0, min(t1, b) - max(t0, a)) for a, b in holds)
            plan.extend(FrameSpec(i, "hold", False) for _ in range(int(held // period_ns)))
    return plan


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=TEXT,
          thickness: int = 1) -> None:
    import cv2

    cv2.putText(img, text, org, _FONT, scale, color, thickness, cv2.LINE_AA)


def _text_width(text: str, scale: float, thickness: int = 1) -> int:
    import cv2

    return cv2.getTextSize(text, _FONT, scale, thickness)[0][0]


class EpisodeFrames:
    """Renders the frames of one episode's video (RGB uint8, all the same size)."""

    def __init__(self, episode: Episode, config: VideoConfig | None = None, title: str = ""):
        import cv2

        self.episode = episode
        self.config = c = config or VideoConfig()
        if c.panel_height < 32:
            raise UserError(f"panel height must be at least 32 pixels, got {c.panel_height}")
        self.plan = frame_plan(episode, c.k)
        self.title = title or _episode_title(episode)
        self.cameras = list(episode.steps[0].observation.images) if episode.steps else []
        h = c.panel_height
        self.panel_widths = []
        for cam in self.cameras:
            ih, iw = episode.steps[0].observation.images[cam].shape[:2]
            self.panel_widths.append(max(2, int(round(iw * h / ih))))
        if not self.cameras:
            self.panel_widths = [int(h * 4 / 3)]
        self.pad = max(4, h // 48)
        self.scale = max(0.5, h / 360)  # text size follows the panel size
        self.band = self.pad  # the source-colored bands above and below the cameras
        self.header = int(50 * self.scale) + 8 + self.band
        self.strip = int(44 * self.scale) + 16
        self.bar_h = int(22 * self.scale) + 6
        width = sum(self.panel_widths) + self.pad * (len(self.panel_widths) + 1)
        self.width = width + width % 2  # H.264 with 4:2:0 chroma needs even sizes
        height = self.header + h + self.strip + 2 * self.pad
        self.height = height + height % 2
        self._resize, self._linear = cv2.resize, cv2.INTER_LINEAR
        self._strip = self._timeline_strip()

    def __len__(self) -> int:
        return len(self.plan)

    def _timeline_strip(self) -> np.ndarray:
        """The whole episode's timeline, drawn once; frames add the cursor."""
        w = self.width - 2 * self.pad
        bar_h = self.bar_h
        strip = np.full((self.strip - 8, w, 3), BACKGROUND, np.uint8)
        # the legend under the bar
        x, ly, ls = 0, self.strip - 12, 0.42 * self.scale * 1.2
        for name, color in (("policy", SOURCE_COLORS["policy"]),
                            (f"undesirable (K={self.config.k})", UNDESIRABLE_COLOR),
                            ("human", SOURCE_COLORS["human"]), ("expert", SOURCE_COLORS["expert"]),
                            ("hold", SOURCE_COLORS["hold"])):
            box = int(10 * self.scale) + 2
            strip[ly - box:ly, x:x + box] = color
            _text(strip, name, (x + box + 4, ly), ls)
            x += box + 4 + _text_width(name, ls) + int(14 * self.scale)
        n = len(self.plan)
        if n == 0:
            return strip
        self._bar_top = int(bar_h * 0.25)
        edges = np.linspace(0, w, n + 1).astype(int)
        for j, spec in enumerate(self.plan):
            color = UNDESIRABLE_COLOR if spec.undesirable else SOURCE_COLORS.get(spec.source, (0, 0, 0))
            strip[self._bar_top:bar_h, edges[j]:max(edges[j + 1], edges[j] + 1)] = color
        self._edges = edges
        return strip

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` (past the end: the last frame, so a grid cell freezes when it is done)."""
        h = self.config.panel_height
        img = np.full((self.height, self.width, 3), BACKGROUND, np.uint8)
        n = len(self.plan)
        done = index >= n - 1
        spec = self.plan[min(index, n - 1)] if n else FrameSpec(0, "policy", False)
        # cameras
        x = self.pad
        y0 = self.header
        if self.cameras and n:
            obs = self.episode.steps[spec.step].observation
            for cam, pw in zip(self.cameras, self.panel_widths):
                panel = self._resize(np.ascontiguousarray(obs.images[cam]), (pw, h),
                                     interpolation=self._linear)
                img[y0:y0 + h, x:x + pw] = panel
                _text(img, cam, (x + 4, y0 + int(16 * self.scale) + 2), 0.45 * self.scale * 1.4,
                      (255, 255, 255), 1)
                x += pw + self.pad
        else:
            pw = self.panel_widths[0]
            img[y0:y0 + h, x:x + pw] = (225, 225, 225)
            _text(img, "no camera topics in this bag", (x + 8, y0 + h // 2), 0.5 * self.scale * 1.4)
        # a frame in the source's color marks who is acting, visible even in a thumbnail
        color = UNDESIRABLE_COLOR if spec.undesirable else SOURCE_COLORS.get(spec.source, (0, 0, 0))
        t = self.band
        img[y0 - t:y0, :] = color
        img[y0 + h:y0 + h + t, :] = color
        # header: title, step counter, source tag, outcome
        s = self.scale
        line1 = int(18 * s) + 4
        line2 = int(40 * s) + 4
        title_scale = 0.5 * s * 1.2
        _text(img, _fit(self.title, self.width - 2 * self.pad, title_scale), (self.pad, line1), title_scale)
        step_text = f"step {min(index, n - 1) + 1 if n else 0}/{n}"
        _text(img, step_text, (self.pad, line2), 0.55 * s * 1.2, thickness=2 if s >= 0.6 else 1)
        tag = spec.source.upper() + (" (undesirable)" if spec.undesirable else "")
        tx = self.pad + _text_width(step_text, 0.55 * s * 1.2) + int(16 * s) + 4
        tw = _text_width(tag, 0.55 * s * 1.2)
        img[line2 - int(16 * s) - 2:line2 + int(5 * s) + 2, tx - 4:tx + tw + 4] = color
        _text(img, tag, (tx, line2), 0.55 * s * 1.2, (255, 255, 255) if spec.source != "policy" or
              spec.undesirable else TEXT)
        outcome = self.episode.outcome + (" (truncated)" if self.episode.truncated else "")
        label = ("outcome: " if done else "ends: ") + outcome
        ow = _text_width(label, 0.55 * s * 1.2)
        _text(img, label, (self.width - self.pad - ow, line2), 0.55 * s * 1.2,
              OUTCOME_COLORS.get(self.episode.outcome, TEXT), thickness=2 if done else 1)
        # timeline strip with the cursor
        ys = self.header + h + self.pad + 4
        strip = self._strip.copy()
        if n:
            j = min(index, n - 1)
            a, b = self._edges[j], max(self._edges[j + 1], self._edges[j] + 1)
            strip[:self.bar_h, max(a - 2, 0):min(b + 2, strip.shape[1])] = (0, 0, 0)
            strip[: self._bar_top, :a] = (90, 90, 90)  # elapsed
        img[ys:ys + strip.shape[0], self.pad:self.pad + strip.shape[1]] = strip
        return img

    def frames(self, tail: int = 0) -> Iterator[np.ndarray]:
        for i in range(len(self.plan) + tail):
            yield self.frame(i)


def _fit(text: str, width: int, scale: float) -> str:
    """`text` cut (with ...) to fit `width` pixels."""
    if _text_width(text, scale) <= width:
        return text
    while len(text) > 4 and _text_width(text + "...", scale) > width:
        text = text[:-1]
    return text + "..."


def _episode_title(episode: Episode) -> str:
    m = episode.metadata
    parts = [m.get("task", "")]
    if m.get("seed"):
        parts.append(f"seed {m['seed']}")
    if m.get("policy_id"):
        parts.append(f"policy {m['policy_id']}")
    instr = m.get("instruction") or (episode.steps[0].observation.instruction if episode.steps else "")
    if instr:
        parts.append(f'"{instr}"')
    return "  ".join(p for p in parts if p) or os.path.basename(episode.path.rstrip("/"))


# --- encoding -------------------------------------------------------------------------------------


def _require_av():
    try:
        import av
    except ImportError:  # an optional dependency: say how to get it
        raise UserError("writing videos needs PyAV: pip install 'apo_ros[media]' (or: pip install av)"
                        ) from None
    return av


class Mp4Writer:
    """H.264 MP4 through PyAV, frames given as (H, W, 3) uint8 RGB of one size."""

    def __init__(self, path: str, fps: float, *, crf: int = 23, gop: int = 0, pix_fmt: str = "yuv420p"):
        from fractions import Fraction

        av = _require_av()
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.path = path
        self.rate = Fraction(fps).limit_denominator(1001)
        self.container = av.open(path, mode="w")
        self.stream = self.container.add_stream("libx264", rate=self.rate)
        self.stream.pix_fmt = pix_fmt
        self.options = {"crf": str(crf), "preset": "veryfast", "bf": "0"}
        if gop:
            self.options["g"] = str(gop)
        self.stream.options = self.options
        self.count = 0
        self._av = av

    def write(self, frame: np.ndarray) -> None:
        if self.count == 0:
            self.stream.height, self.stream.width = frame.shape[:2]
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.count  # frame i at i / fps exactly (readers seek by timestamp)
        vf.time_base = 1 / self.rate
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.count += 1

    def close(self, flush: bool = True) -> None:
        if self.container is None:
            return
        try:
            if self.count and flush:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(flush=exc_type is None)


def _progress(total: int, description: str, enabled: bool):
    """A rich progress bar on stderr (nothing when disabled)."""
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    bar.start()
    bar.add_task(description, total=total)
    return bar


def _encode(frames: Iterator[np.ndarray], total: int, out: str, fps: float, crf: int,
            progress: bool, description: str) -> int:
    bar = _progress(total, description, progress)
    try:
        with Mp4Writer(out, fps, crf=crf) as writer:
            for frame in frames:
                writer.write(frame)
                if bar is not None:
                    bar.advance(bar.task_ids[0])
            return writer.count
    finally:
        if bar is not None:
            bar.stop()


def write_episode_video(episode: Episode | str, out: str, config: VideoConfig | None = None, *,
                        title: str = "", progress: bool = False) -> int:
    """Write one episode's video to `out` (an .mp4); `episode` may be a bag path. Returns the
    number of frames written (the steps, hold frames and the held last frame)."""
    c = config or VideoConfig()
    ep = _as_episode(episode)
    if not ep.steps:
        raise UserError(f"{ep.path}: no executed steps, nothing to show")
    frames = EpisodeFrames(ep, c, title)
    fps = c.fps or control_rate(ep)
    tail = int(round(c.tail_s * fps))
    return _encode(frames.frames(tail), len(frames) + tail, out, fps, c.crf, progress,
                   os.path.basename(out))


def grid_frames(cells: Sequence[EpisodeFrames], columns: int = 0) -> tuple[Callable[[int], np.ndarray], int]:
    """(frame(i), length): the cells' frames tiled row by row; every cell at the same index."""
    n = len(cells)
    cols = columns or min(n, 3)
    rows = math.ceil(n / cols)
    cw = max(c.width for c in cells)
    ch = max(c.height for c in cells)
    length = max(len(c) for c in cells)

    def frame(i: int) -> np.ndarray:
        img = np.full((rows * ch, cols * cw, 3), BACKGROUND, np.uint8)
        for j, cell in enumerate(cells):
            r, q = divmod(j, cols)
            f = cell.frame(i)
            img[r * ch:r * ch + f.shape[0], q * cw:q * cw + f.shape[1]] = f
            if q:  # a thin divider between columns
                img[r * ch:(r + 1) * ch, q * cw:q * cw + 1] = (200, 200, 200)
        return img

    return frame, length


def write_grid_video(episodes: Sequence[Episode | str], out: str, config: VideoConfig | None = None, *,
                     labels: Sequence[str] | None = None, columns: int = 0, progress: bool = False) -> int:
    """Several episodes next to each other, step by step (the same initial state under several
    policies); `labels` title the cells (default: each episode's policy id). Returns frames written."""
    c = config or VideoConfig()
    eps = [_as_episode(e) for e in episodes]
    eps = [e for e in eps if e.steps]
    if not eps:
        raise UserError("no episode with executed steps to show")
    if labels is not None and len(labels) != len(episodes):
        raise ValueError(f"{len(labels)} labels for {len(episodes)} episodes")
    cells = []
    for j, ep in enumerate(eps):
        label = labels[j] if labels is not None else _cell_title(ep)
        cells.append(EpisodeFrames(ep, c, label))
    frame, length = grid_frames(cells, columns)
    fps = c.fps or control_rate(eps[0])
    tail = int(round(c.tail_s * fps))
    return _encode((frame(i) for i in range(length + tail)), length + tail, out, fps, c.crf, progress,
                   os.path.basename(out))


def _cell_title(ep: Episode) -> str:
    m = ep.metadata
    who = m.get("policy_id") or os.path.basename(os.path.dirname(ep.path.rstrip("/")))
    return f"{who}  seed {m.get('seed', '?')}"


def _as_episode(episode: Episode | str) -> Episode:
    if isinstance(episode, Episode):
        return episode

    return read_episode(episode, load_images=True)


def group_by_initial_state(episodes: Sequence[Episode]) -> dict[tuple[str, str], list[Episode]]:
    """Episodes keyed by (task, seed): the same initial state, maybe under several policies."""
    groups: dict[tuple[str, str], list[Episode]] = {}
    for ep in episodes:
        key = (ep.metadata.get("task", ""), ep.metadata.get("seed", ""))
        groups.setdefault(key, []).append(ep)
    return groups


def video_name(bag_path: str, root: str) -> str:
    """A file name for a bag's video: its path under `root`, folders joined with '__'."""
    rel = os.path.relpath(os.path.abspath(bag_path), os.path.abspath(root))
    if rel.startswith(".."):
        rel = os.path.basename(bag_path.rstrip("/"))
    if rel in (".", ""):
        rel = os.path.basename(os.path.abspath(bag_path))
    return rel.replace(os.sep, "__") + ".mp4"


def takeover_index(plan: Sequence[FrameSpec], into: int = 3) -> int:
    """A frame that shows a take-over: `into` frames after the first human frame (the middle of
    the episode when nobody took over)."""
    for j, spec in enumerate(plan):
        if spec.source == "human":
            run_end = j
            while run_end + 1 < len(plan) and plan[run_end + 1].source == "human":
                run_end += 1
            return min(j + into, run_end)
    return len(plan) // 2


def write_still(episode: Episode | str, out: str, config: VideoConfig | None = None,
                index: int | None = None) -> int:
    """One frame of the episode's video as a PNG (default: a few steps into the first take-over).
    Returns the frame index written."""
    import cv2

    ep = _as_episode(episode)
    if not ep.steps:
        raise UserError(f"{ep.path}: no executed steps, nothing to show")
    frames = EpisodeFrames(ep, config)
    i = takeover_index(frames.plan) if index is None else index
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if not cv2.imwrite(out, cv2.cvtColor(frames.frame(i), cv2.COLOR_RGB2BGR)):
        raise UserError(f"could not write image {out} (is the extension .png or .jpg?)")
    return i


def write_grid_still(episodes: Sequence[Episode | str], out: str, config: VideoConfig | None = None, *,
                     labels: Sequence[str] | None = None, index: int | None = None) -> int:
    """One frame of a grid video as a PNG (default: a few steps into the first take-over of any
    cell). Returns the frame index written."""
    import cv2

    eps = [_as_episode(e) for e in episodes]
    cells = [EpisodeFrames(ep, config, labels[j] if labels is not None else _cell_title(ep))
             for j, ep in enumerate(eps) if ep.steps]
    if not cells:
        raise UserError("no episode with executed steps to show")
    frame, _ = grid_frames(cells)
    if index is None:
        human = [takeover_index(c.plan) for c in cells if any(s.source == "human" for s in c.plan)]
        index = min(human) if human else max(len(c) for c in cells) // 2
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if not cv2.imwrite(out, cv2.cvtColor(frame(index), cv2.COLOR_RGB2BGR)):
        raise UserError(f"could not write image {out} (is the extension .png or .jpg?)")
    return index
