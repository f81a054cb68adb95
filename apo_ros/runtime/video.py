"""An episode filmed the way `apo-ros bags video` films a bag: one seeded session (the recording
path of `apo-ros session`), then its bag drawn as an MP4 (`apo-ros sim view -o X.mp4`, the demo's
method videos)."""

from __future__ import annotations

import tempfile

from apo_ros.recording.video import write_episode_video
from apo_ros.runtime.session import run_session


def record_episode_video(task: str, seed: int, policy="expert", out: str = "episode.mp4", *,
                         operator="none", image_size: int = 96, max_steps: int | None = None,
                         bags_dir: str | None = None, config=None, progress: bool = False) -> dict:
    """Run one seeded episode through the session (the recording path of `apo-ros session`, so the
    video is the one `apo-ros bags video` makes of its bag) and write its MP4 to `out`.

    operator: "none" or "scripted" (the simulated operator takes over when the policy goes wrong,
    and the take-overs show in the video). bags_dir: keep the episode's bag there (default: a
    temporary directory). Returns {"bag", "video", "frames", "outcome", "steps", "interventions"}."""
    with tempfile.TemporaryDirectory(prefix="apo_ros_view_") as tmp:
        where = bags_dir or tmp
        summary = run_session(task, policy, operator, 1, where, seed, image_size=image_size,
                              max_steps=max_steps, progress=False)
        ep = summary.episodes[0]
        frames = write_episode_video(ep.path, out, config, progress=progress)
        return {"bag": ep.path if bags_dir else None, "video": out, "frames": frames, "outcome": ep.outcome,
                "steps": ep.steps, "interventions": ep.interventions}
