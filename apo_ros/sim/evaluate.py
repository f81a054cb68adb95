"""Seeded evaluation of any policy on a task: `evaluate(task, policy, episodes, seed0)`.

A policy can be
- the string "expert" (the scripted expert, privileged state, no cameras needed);
- an object with `select_action(observation) -> (chunk [T, 7], ok)` (apo_ros TokenPolicy and
  anything loaded by `apo_ros.policies.checkpoint.load_policy`): chunk actions are executed one
  per control step, a new chunk is asked for when the last one is used up, and `ok == False`
  means "zero motion" for one step (the gripper keeps its last command);
- a plain callable `observation -> action (7,) or chunk (T, 7)`;
- a factory `env -> one of the above` (called once per episode, after reset), for policies that
  need the environment (privileged baselines).
Objects with a `reset()` method get it called at the start of each episode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from apo_ros.actions.space import ACTION_DIM, GRIPPER_INDEX, as_chunk
from apo_ros.observation import CAMERAS, Observation


class ExpertPolicy:
    """The scripted expert behind the policy interface (reads the env's privileged state)."""

    def __init__(self, env, noise: float = 0.0, seed: int = 0):
        from apo_ros.sim.experts import make_expert

        self.env = env
        self.expert = make_expert(env.task.name, noise=noise, seed=seed)
        self.expert.reset(env)

    def __call__(self, observation: Observation) -> np.ndarray:
        return self.expert.act(self.env)


class ChunkRunner:
    """Turns a chunk-producing policy into one action per step."""

    def __init__(self, policy: Any):
        self.policy = policy
        self._queue: list[np.ndarray] = []
        self._gripper = 1.0  # last gripper command (zero motion keeps it)
        self.failed_decodes = 0

    def reset(self) -> None:
        self._queue = []
        self._gripper = 1.0
        if hasattr(self.policy, "reset"):
            self.policy.reset()

    def zero_motion(self) -> np.ndarray:
        action = np.zeros(ACTION_DIM)
        action[GRIPPER_INDEX] = self._gripper
        return action

    def __call__(self, observation: Observation) -> np.ndarray:
        if not self._queue:
            if hasattr(self.policy, "select_action"):
                chunk, ok = self.policy.select_action(observation)
            else:
                chunk, ok = self.policy(observation), True
            if not ok:
                self.failed_decodes += 1
                return self.zero_motion()
            self._queue = list(as_chunk(np.asarray(chunk, dtype=np.float64)))
        action = np.asarray(self._queue.pop(0), dtype=np.float64)
        if np.isfinite(action[GRIPPER_INDEX]):
            self._gripper = float(action[GRIPPER_INDEX])
        return action


PolicyLike = Any  # "expert" | select_action object | callable obs -> action/chunk | factory(env)


def _episode_policy(policy: PolicyLike, env, *, expert_noise: float, seed: int,
                    factory: bool) -> Callable[[Observation], np.ndarray]:
    if isinstance(policy, str):
        if policy != "expert":
            raise ValueError(f"unknown policy name {policy!r} (only 'expert' is built in)")
        return ExpertPolicy(env, noise=expert_noise, seed=seed)
    inner = policy(env) if factory else policy
    runner = ChunkRunner(inner)
    runner.reset()
    return runner


def evaluate(task: str, policy: PolicyLike, episodes: int = 50, seed0: int = 0, *,
             image_size: int = 64, cameras: tuple[str, ...] = CAMERAS,
             max_steps: int | None = None, render: bool | None = None, factory: bool = False,
             expert_noise: float = 0.0,
             progress: Callable[[int, dict], None] | None = None) -> dict:
    """Run `episodes` seeded episodes (seeds seed0, seed0 + 1, ...) and report
    {"task", "episodes", "successes", "success_rate", "mean_steps"} plus per-episode details
    ("per_episode": seed, success, steps) and wall time. `render` defaults to False for the
    expert (it needs no images) and True otherwise; `factory=True` means `policy(env)` builds the
    per-episode policy."""
    from apo_ros.sim.env import make_env

    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if render is None:
        render = not (isinstance(policy, str) and policy == "expert")
    env = make_env(task, image_size=image_size, cameras=cameras, max_steps=max_steps, render=render)
    per_episode = []
    t0 = time.perf_counter()
    try:
        for i in range(episodes):
            seed = seed0 + i
            obs = env.reset(seed)
            act = _episode_policy(policy, env, expert_noise=expert_noise, seed=seed,
                                  factory=factory)
            terminated = truncated = False
            info: dict = {}
            while not (terminated or truncated):
                obs, _reward, terminated, truncated, info = env.step(act(obs))
            record = {"seed": seed, "success": bool(info.get("success")), "steps": env.step_count,
                      "failure": info.get("failure")}
            per_episode.append(record)
            if progress is not None:
                progress(i, record)
    finally:
        env.close()
    successes = sum(r["success"] for r in per_episode)
    return {
        "task": task,
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "mean_steps": float(np.mean([r["steps"] for r in per_episode])),
        "per_episode": per_episode,
        "seconds": round(time.perf_counter() - t0, 2),
    }
