"""`apo-ros bench sim`: control steps per second of the tabletop on one core, without cameras and
with one 64x64 camera, against a bare `mujoco.mj_step` loop over the same model with the same
number of physics substeps per control step (the floor any wrapper pays)."""

from __future__ import annotations

import contextlib
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from apo_ros.sim.env import make_env
from apo_ros.sim.experts import make_expert

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


def _make_runners(task: str, actions: list[np.ndarray]) -> dict:
    """One callable per configuration; each replays the expert episode once and returns how many
    control steps it ran. The bare one replays the joint targets the episode produced through
    `mj_step(nstep=substeps)` alone (same model, same contacts, no IK, no observation)."""
    import mujoco


    envs = {
        "no_render": make_env(task, render=False),
        "one_64px_camera": make_env(task, render=True, cameras=("front",), image_size=64),
        "two_64px_cameras": make_env(task, render=True, cameras=("front", "wrist"), image_size=64),
    }
    bare_env = make_env(task, render=False)
    bare_env.reset(0)
    ctrls = []
    for a in actions:
        bare_env.step(a)
        ctrls.append(bare_env.data.ctrl.copy())

    def replay(env):
        def run_once() -> tuple[int, float]:
            env.reset(0)
            t0 = time.perf_counter()
            for a in actions:
                env.step(a)
            return len(actions), time.perf_counter() - t0
        return run_once

    def bare_once() -> tuple[int, float]:
        m, d, n = bare_env.model, bare_env.data, bare_env.substeps
        bare_env.reset(0)
        t0 = time.perf_counter()
        for ctrl in ctrls:
            d.ctrl[:] = ctrl
            mujoco.mj_step(m, d, nstep=n)
        return len(ctrls), time.perf_counter() - t0

    runners = {"bare": bare_once, **{k: replay(e) for k, e in envs.items()}}
    runners["_substeps"] = bare_env.substeps  # type: ignore[assignment]
    return runners


def run(quick: bool = False) -> dict:
    """Best-of-N replays per configuration, interleaved, so that other processes sharing the
    machine disturb all figures alike and the best replay shows what the code costs."""
    reps = 3 if quick else 10
    with one_core() as core:
        actions = _expert_actions(BENCH_TASK, seed=0)
        runners = _make_runners(BENCH_TASK, actions)
        substeps = runners.pop("_substeps")
        for fn in runners.values():  # warm-up: GL contexts, caches
            fn()
        rates: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(reps):
            for name, fn in runners.items():
                steps, seconds = fn()
                rates[name].append(steps / seconds)
    best = {k: max(v) for k, v in rates.items()}
    median = {k: float(np.median(v)) for k, v in rates.items()}
    return {
        "task": BENCH_TASK,
        "core": core,
        "episode_steps": len(actions),
        "replays_per_figure": reps,
        "substeps_per_control_step": substeps,
        "bare_mj_step_control_steps_per_s": round(best["bare"], 1),
        "control_steps_per_s_no_render": round(best["no_render"], 1),
        "control_steps_per_s_one_64px_camera": round(best["one_64px_camera"], 1),
        "control_steps_per_s_two_64px_cameras": round(best["two_64px_cameras"], 1),
        "ratio_no_render_to_bare": round(best["no_render"] / best["bare"], 3),
        "ratio_one_camera_to_bare": round(best["one_64px_camera"] / best["bare"], 3),
        "median_control_steps_per_s": {k: round(v, 1) for k, v in median.items()},
        "targets": {"no_render": 500, "one_64px_camera": 100},
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick=False), indent=2))
