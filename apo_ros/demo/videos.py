"""Videos of a study's methods: the same test initial state under every method's policy, with the
simulated operator at the controls, so take-overs show where each policy needed them.

    from apo_ros.demo.videos import method_videos
    method_videos("lemon_on_plate", 100_000, {"base": base_dir, "apo": apo_dir, "dagger": ...},
                  "demo_out/videos")

writes OUT/<name>.mp4 per policy, OUT/grid.mp4 (all side by side, step by step), OUT/grid.png (a
still a few steps into the first take-over) and keeps each episode's bag in OUT/bags/<name>/.
"""

from __future__ import annotations

import os


def method_videos(task: str, seed: int, policies: dict, out_dir: str, *, operator: str = "scripted",
                  image_size: int = 96, max_steps: int | None = None, panel_height: int = 192,
                  log=None) -> dict[str, str]:
    """policies: name -> "expert", a checkpoint directory or a policy object. Returns name ->
    video path, plus "grid" and "still"."""
    from apo_ros.recording.video import VideoConfig, write_grid_still, write_grid_video
    from apo_ros.runtime.video import record_episode_video

    if not policies:
        raise ValueError("no policies to film")
    config = VideoConfig(panel_height=panel_height)
    os.makedirs(out_dir, exist_ok=True)
    written: dict[str, str] = {}
    bags, names = [], []
    for name, policy in policies.items():
        out = os.path.join(out_dir, f"{name}.mp4")
        run = record_episode_video(task, seed, policy, out, operator=operator, image_size=image_size,
                                   max_steps=max_steps, bags_dir=os.path.join(out_dir, "bags", name),
                                   config=config)
        written[name] = out
        bags.append(run["bag"])
        names.append(name)
        if log is not None:
            log(f"video {out}: {run['outcome']} in {run['steps']} steps, {run['interventions']} take-over(s)")
    grid = os.path.join(out_dir, "grid.mp4")
    labels = [f"{n}  ({task} seed {seed})" for n in names]
    write_grid_video(bags, grid, config, labels=labels)
    still = os.path.join(out_dir, "grid.png")
    write_grid_still(bags, still, config, labels=labels)
    written["grid"], written["still"] = grid, still
    return written
