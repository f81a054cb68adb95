"""Contact sheets: camera frames along one episode, so a person can check the scene at a glance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apo_ros.observation import CAMERAS
from apo_ros.sim.env import make_env
from apo_ros.sim.evaluate import _episode_policy
from apo_ros.sim.experts import ExpertPolicy

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def record_episode(task: str, seed: int, policy="expert", *, size: int = 160,
                   cameras: tuple[str, ...] = CAMERAS, image_size: int = 64,
                   max_steps: int | None = None, factory: bool = False) -> dict:
    """Run one episode and keep `size` px frames of every camera at every step (step 0 = reset).
    Returns {"frames": {camera: [H x W x 3]}, "labels": [str], "success": bool, "steps": int}."""
    render = not (isinstance(policy, str) and policy == "expert")
    env = make_env(task, image_size=image_size, cameras=cameras, max_steps=max_steps, render=render)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
    labels: list[str] = []
    try:
        obs = env.reset(seed)
        act = _episode_policy(policy, env, expert_noise=0.0, seed=seed, factory=factory)

        def snap(label: str) -> None:
            for c in cameras:
                frames[c].append(env.render_image(c, size))
            labels.append(label)

        snap("t=0")
        terminated = truncated = False
        info: dict = {}
        while not (terminated or truncated):
            obs, _r, terminated, truncated, info = env.step(act(obs))
            phase = act.expert.phase if isinstance(act, ExpertPolicy) else ""
            snap(f"t={env.step_count} {phase}".strip())
        return {"frames": frames, "labels": labels, "success": bool(info.get("success")),
                "steps": env.step_count, "instruction": env.instruction}
    finally:
        env.close()


def contact_sheet(frames: dict[str, list[np.ndarray]], labels: list[str], *, columns: int = 8,
                  title: str = "") -> np.ndarray:
    """One row per camera, `columns` frames evenly spaced from first to last, labelled."""
    import cv2

    cams = list(frames)
    n = len(labels)
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(columns, n))})
    h, w = frames[cams[0]][0].shape[:2]
    pad, header, label_h = 4, 28 if title else 0, 16
    rows = len(cams)
    sheet = np.full((header + rows * (h + label_h + pad) + pad, len(picks) * (w + pad) + pad + 54, 3),
                    255, np.uint8)
    if title:
        cv2.putText(sheet, title, (pad + 2, 19), _FONT, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    for r, cam in enumerate(cams):
        y0 = header + r * (h + label_h + pad) + pad
        cv2.putText(sheet, cam, (pad, y0 + label_h + h // 2), _FONT, 0.45, (20, 20, 20), 1,
                    cv2.LINE_AA)
        for col, k in enumerate(picks):
            x0 = 54 + col * (w + pad) + pad
            cv2.putText(sheet, labels[k], (x0, y0 + 12), _FONT, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
            sheet[y0 + label_h:y0 + label_h + h, x0:x0 + w] = frames[cam][k]
    return sheet


def write_png(path: str | Path, image_rgb: np.ndarray) -> None:
    import cv2

    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path} (is the extension .png or .jpg?)")

