"""`apo-ros bench sim`: control steps per second of the tabletop on one core, without cameras and
with one 64x64 camera, against a bare `mujoco.mj_step` loop over the same model with the same
number of physics substeps per control step (the floor any wrapper pays)."""

from __future__ import annotations

import contextlib
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

BENCH_TASK = "square_on_stick"  # the most contacts of the three (5 boxes on the table)


@contextlib.contextmanager
def one_core():
    """Pin this process (and the software renderer's threads it starts) to one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    core = min(before)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, before)


def _expert_actions(task: str, seed: int) -> list[np.ndarray]:
    from apo_ros.sim.env import make_env
    from apo_ros.sim.experts import make_expert

    env = make_env(task, render=False)
    expert = make_expert(task)
    env.reset(seed)
    expert.reset(env)
    actions = []
    done = False
    while not done:
        action = expert.act(env)
        actions.append(action)
        _obs, _r, term, trunc, _i = env.step(action)
        done = term or trunc
    return actions


def _env_rate(task: str, actions: list[np.ndarray], steps: int, **env_kw) -> float:
    """Control steps per second replaying an expert episode (reset between replays)."""
    from apo_ros.sim.env import make_env

    env = make_env(task, **env_kw)
    env.reset(0)
    for a in actions[:5]:  # warm-up (renderer context, caches)
        env.step(a)
    done_steps, elapsed = 0, 0.0
    seed = 0
    while done_steps < steps:
        env.reset(seed)
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        elapsed += time.perf_counter() - t0
        done_steps += len(actions)
        seed += 1
    env.close()
    return done_steps / elapsed


def _bare_rate(task: str, actions: list[np.ndarray], steps: int) -> tuple[float, int]:
    """Control steps per second of `mj_step(nstep=substeps)` alone on the same model, replaying
    the joint targets an expert episode produced (same contacts, no IK, no observation)."""
    import mujoco

    from apo_ros.sim.env import make_env

    env = make_env(task, render=False)
    env.reset(0)
    ctrls = []
    for a in actions:
        env.step(a)
        ctrls.append(env.data.ctrl.copy())
    m, d, n = env.model, env.data, env.substeps
    done_steps, elapsed = 0, 0.0
    while done_steps < steps:
        env.reset(0)
        t0 = time.perf_counter()
        for ctrl in ctrls:
            d.ctrl[:] = ctrl
            mujoco.mj_step(m, d, nstep=n)
        elapsed += time.perf_counter() - t0
        done_steps += len(ctrls)
    return done_steps / elapsed, n


def run(quick: bool = False) -> dict:
    steps = 600 if quick else 3000
    with one_core() as core:
        actions = _expert_actions(BENCH_TASK, seed=0)
        bare, substeps = _bare_rate(BENCH_TASK, actions, steps)
        no_render = _env_rate(BENCH_TASK, actions, steps, render=False)
        one_cam = _env_rate(BENCH_TASK, actions, max(steps // 3, 200), render=True,
                            cameras=("front",), image_size=64)
        two_cams = _env_rate(BENCH_TASK, actions, max(steps // 3, 200), render=True,
                             cameras=("front", "wrist"), image_size=64)
    return {
        "task": BENCH_TASK,
        "core": core,
        "substeps_per_control_step": substeps,
        "bare_mj_step_control_steps_per_s": round(bare, 1),
        "control_steps_per_s_no_render": round(no_render, 1),
        "control_steps_per_s_one_64px_camera": round(one_cam, 1),
        "control_steps_per_s_two_64px_cameras": round(two_cams, 1),
        "ratio_no_render_to_bare": round(no_render / bare, 3),
        "ratio_one_camera_to_bare": round(one_cam / bare, 3),
        "targets": {"no_render": 500, "one_64px_camera": 100},
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick=False), indent=2))
