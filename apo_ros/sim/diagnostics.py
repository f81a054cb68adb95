"""Measurements behind docs/sim.md: how objects settle, and how the simulated operator drives.

    python -m apo_ros.sim.diagnostics nudge          # push each task's object, see where it stops
    python -m apo_ros.sim.diagnostics operator       # human-step statistics with a flawed policy

`nudge` gives the object a horizontal velocity (or a spin) on the table and reports how far it
went and when it came to rest. `operator` runs a stand-in for a weak learned policy (the scripted
expert aiming its grasp 2-4 cm off the object, with action noise: the failure a small BC policy
shows) under the simulated operator and reports what the human steps were: the share spent moving
while the loose object was still moving more than 5 mm per step ("chasing"), and the share of
human yaw actions outside the expert demos' 1st-99th percentile range (clipped to the edge bin by
a tokenizer whose statistics come from the demos). A checkpoint deployed under the operator is
`python -m apo_ros.runtime.diagnostics` (it runs a session).
"""

from __future__ import annotations

import argparse
import json

import mujoco
import numpy as np

from apo_ros.recording.reader import read_episodes
from apo_ros.sim.env import make_env
from apo_ros.sim.experts import make_expert
from apo_ros.sim.operator import SimulatedOperator
from apo_ros.sim.task_specs import base_task_names, task_names

CHASE_SPEED = 0.005  # m per control step


def nudge(task: str = "lemon_on_plate", speed: float = 0.6, spin: float = 0.0, seconds: float = 10.0,
          seed: int = 0, direction: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Give the task's object a horizontal velocity `speed` (m/s) along `direction` and a spin
    about z (rad/s), run the physics for `seconds`; return the distance travelled (m), final
    height, final linear / angular speed and the time it came to rest (None = still moving)."""
    env = make_env(task, render=False)
    env.reset(seed)
    body = env.task.object_body
    jnt = env.model.body_jntadr[env.body_id(body)]
    dof = int(env.model.jnt_dofadr[jnt])
    start = env.body_pos(body)
    d = np.asarray(direction, dtype=float)
    env.data.qvel[dof:dof + 2] = speed * d / np.linalg.norm(d)
    env.data.qvel[dof + 5] = spin
    dt = env.model.opt.timestep
    rest_since = None
    v = w = 0.0
    for i in range(int(round(seconds / dt))):
        mujoco.mj_step(env.model, env.data)
        v = float(np.linalg.norm(env.data.qvel[dof:dof + 3]))
        w = float(np.linalg.norm(env.data.qvel[dof + 3:dof + 6]))
        at_rest = v < 2e-3 and w < 2e-2
        rest_since = (rest_since if rest_since is not None else (i + 1) * dt) if at_rest else None
    end = env.body_pos(body)
    failure = env.failure_reason() if hasattr(env, "failure_reason") else None
    env.close()
    return {"task": task, "speed": speed, "spin": spin, "distance_m": round(float(np.linalg.norm(
        (end - start)[:2])), 4), "final_z": round(float(end[2]), 4), "final_speed": round(v, 5),
        "final_spin": round(w, 5), "at_rest_after_s": rest_since, "failure": failure}


class _MislocalizedTask:
    """A task whose grasp point is shifted by `offset` (m, x y): what a policy that mislocalizes
    the object aims for."""

    def __init__(self, task, offset):
        self._task = task
        self._offset = np.array([offset[0], offset[1], 0.0])

    def __getattr__(self, name):
        return getattr(self._task, name)

    def grasp_target(self, env):
        pos, closing = self._task.grasp_target(env)
        return pos + self._offset, closing


def flawed_policy(task: str, seed: int, noise: float = 1.0):
    """The stand-in weak policy: the expert aiming 2-4 cm off the object, with action noise."""
    rng = np.random.default_rng(10_000 + seed)
    angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.02, 0.04)
    expert = make_expert(task, noise=noise, seed=20_000 + seed)
    expert.task = _MislocalizedTask(expert.task, (radius * np.cos(angle), radius * np.sin(angle)))
    return expert


def demo_yaw_range(task: str, episodes: int = 20, noise: float = 0.3) -> tuple[float, float]:
    """1st and 99th percentile of the yaw action in noisy expert demos (seeds 0..episodes-1)."""
    env = make_env(task, render=False)
    yaws = []
    for seed in range(episodes):
        env.reset(seed)
        expert = make_expert(task, noise=noise, seed=seed)
        expert.reset(env)
        done = False
        while not done:
            action = expert.act(env)
            yaws.append(action[5])
            _o, _r, term, trunc, _i = env.step(action)
            done = term or trunc
    env.close()
    return float(np.quantile(yaws, 0.01)), float(np.quantile(yaws, 0.99))


def operator_statistics(task: str = "lemon_on_plate", episodes: int = 20, seed0: int = 50_000,
                        yaw_range: tuple[float, float] | None = None) -> dict:
    """Run the flawed stand-in policy under the simulated operator and describe the human steps."""
    lo, hi = yaw_range if yaw_range is not None else demo_yaw_range(task)
    env = make_env(task, render=False)
    human = chasing = yaw_out = interventions = successes = 0
    outcomes: dict[str, int] = {}
    end_reasons: dict[str, int] = {}
    for k in range(episodes):
        seed = seed0 + k
        env.reset(seed)
        policy = flawed_policy(task, seed)
        policy.reset(env)
        operator = SimulatedOperator(task, seed=seed)
        operator.reset(env)
        body = env.task.object_body
        prev = env.body_pos(body)
        was_human = False
        info: dict = {}
        reason = "time_limit"
        while True:
            action = policy.act(env)
            h = operator.step(env, action)
            if getattr(operator, "gave_up", None):
                reason = operator.gave_up
                break
            pos = env.body_pos(body)
            moving = float(np.linalg.norm(pos - prev)) > CHASE_SPEED and not env.is_grasped(body)
            prev = pos
            if h is not None:
                human += 1
                chasing += int(moving and bool(np.any(np.abs(h[:6]) > 1e-9)))
                yaw_out += int(h[5] < lo or h[5] > hi)
            elif was_human:
                policy.replan(env)  # the policy picks up from wherever the human left it
            was_human = h is not None
            _o, _r, term, trunc, info = env.step(h if h is not None else action)
            if term or trunc:
                reason = "success" if info.get("success") else (info.get("failure") or "time_limit")
                break
        successes += int(bool(info.get("success")))
        interventions += operator.interventions
        end_reasons[reason] = end_reasons.get(reason, 0) + 1
        if hasattr(operator, "end_episode"):
            operator.end_episode(bool(info.get("success")))
        for i in operator.history:
            key = getattr(i, "outcome", None) or ("timed_out" if i.end_step is not None and
                                                   i.end_step - i.start_step >= 40 else "other")
            outcomes[key] = outcomes.get(key, 0) + 1
    env.close()
    return {"task": task, "episodes": episodes, "successes": successes,
            "interventions": interventions, "human_steps": human,
            "chasing_share": round(chasing / human, 3) if human else 0.0,
            "yaw_outside_demo_q01_q99_share": round(yaw_out / human, 3) if human else 0.0,
            "demo_yaw_q01_q99": [round(lo, 4), round(hi, 4)], "intervention_outcomes": outcomes,
            "episode_ends": end_reasons}


def bag_statistics(demo_dirs: list[str], deployment_dirs: list[str]) -> dict:
    """The same human-step statistics from recorded bags (e.g. a study's round 0): a human step
    "chases" when it moves the arm with the gripper commanded open (not carrying the object) while
    the object (Observation.object_poses row 0) moved more than 5 mm since the previous step; the
    yaw range is the 1st-99th percentile of the demos' yaw actions."""
    demos, _ = read_episodes(list(demo_dirs), load_images=False)
    yaws = np.concatenate([ep.actions()[:, 5] for ep in demos])
    lo, hi = float(np.quantile(yaws, 0.01)), float(np.quantile(yaws, 0.99))
    episodes, _ = read_episodes(list(deployment_dirs), load_images=False)
    human = chasing = yaw_out = human_all = yaw_all = 0
    for ep in episodes:
        prev = None
        for step in ep.steps:
            obs = step.observation
            pos = obs.object_poses[0, :3] if obs.object_poses.size else None
            moved = (prev is not None and pos is not None
                     and float(np.linalg.norm(pos - prev)) > CHASE_SPEED)
            prev = pos
            if step.source != "human" or step.action[6] < 0.5:
                continue
            human += 1
            chasing += int(moved and bool(np.any(np.abs(step.action[:6]) > 1e-9)))
            yaw_out += int(step.action[5] < lo or step.action[5] > hi)
        human_all += sum(s.source == "human" for s in ep.steps)
        yaw_all += sum(s.source == "human" and not lo <= s.action[5] <= hi for s in ep.steps)
    return {"episodes": len(episodes), "human_steps": human_all, "open_gripper_human_steps": human,
            "chasing_share_of_open_gripper_steps": round(chasing / human, 3) if human else 0.0,
            "yaw_outside_demo_q01_q99_share": round(yaw_all / human_all, 3) if human_all else 0.0,
            "demo_yaw_q01_q99": [round(lo, 4), round(hi, 4)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apo_ros.sim.diagnostics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("nudge", "operator"))
    parser.add_argument("--task", default=None, choices=task_names(),
                        help="one task (default: every task that is not a variant)")
    parser.add_argument("--episodes", type=int, default=20, help="operator: episodes (default 20)")
    args = parser.parse_args(argv)
    tasks = [args.task] if args.task else list(base_task_names())
    for task in tasks:
        if args.what == "nudge":
            for kw in ({"speed": 0.6}, {"speed": 0.2}, {"speed": 0.0, "spin": 3.0}):
                print(json.dumps(nudge(task, **kw)))
        else:
            print(json.dumps(operator_statistics(task, args.episodes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
