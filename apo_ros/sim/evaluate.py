"""Seeded evaluation of any policy on a task: `evaluate(task, policy, episodes, seed0)`.

A policy can be
- the string "expert" (the scripted expert, privileged state, no cameras needed);
- an object with `select_action(observation) -> (chunk [T, 7], ok)` (apo_ros TokenPolicy and
  anything loaded by `apo_ros.policies.checkpoint.load_policy`): chunk actions are executed one
  per control step through the control loop's action queue (a new chunk when the last one is used
  up by default; `runner=` for async execution and simulated latency), and `ok == False` means
  "zero motion" for one step (the gripper keeps its last command);
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
from apo_ros.control.policy_runner import PolicyRunner, RunnerConfig
from apo_ros.observation import CAMERAS, Observation
from apo_ros.sim.env import make_env
from apo_ros.sim.experts import ExpertPolicy


class _CallablePolicy:
    """A plain callable `observation -> action or chunk` behind the policy interface."""

    def __init__(self, fn: Callable[[Observation], Any]):
        self.fn = fn

    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]:
        return as_chunk(np.asarray(self.fn(observation), dtype=np.float64)), True

    def reset(self) -> None:
        if hasattr(self.fn, "reset"):
            self.fn.reset()


class ChunkRunner:
    """Turns a chunk-producing policy into one action per step, through the control loop's action
    queue (`PolicyRunner` without a safety filter: evaluation measures the policy). The default
    is synchronous whole-chunk execution; `config` sets the execution mode, a simulated
    inference latency (`delay_ticks`) and the merge rule. A tick with nothing planned (waiting
    for a chunk) or a failed decode is zero motion; the gripper keeps its last command."""

    def __init__(self, policy: Any, config: RunnerConfig | None = None):
        self.policy = policy if hasattr(policy, "select_action") else _CallablePolicy(policy)
        self.runner = PolicyRunner(self.policy, None, config or RunnerConfig(execution="sync"))
        self._gripper = 1.0  # last gripper command (zero motion keeps it)
        self.failed_decodes = 0
        self.empty_steps = 0

    def reset(self) -> None:
        self.runner.reset()
        self._gripper = 1.0

    def zero_motion(self) -> np.ndarray:
        action = np.zeros(ACTION_DIM)
        action[GRIPPER_INDEX] = self._gripper
        return action

    def __call__(self, observation: Observation) -> np.ndarray:
        step = self.runner.step(observation)
        if step.empty:
            self.empty_steps += 1
            return self.zero_motion()
        if not step.ok:
            self.failed_decodes += 1
            return self.zero_motion()
        action = np.asarray(step.action, dtype=np.float64)
        if np.isfinite(action[GRIPPER_INDEX]):
            self._gripper = float(action[GRIPPER_INDEX])
        return action


PolicyLike = Any  # "expert" | select_action object | callable obs -> action/chunk | factory(env)


def _episode_policy(policy: PolicyLike, env, *, expert_noise: float, seed: int,
                    factory: bool, runner: RunnerConfig | None = None
                    ) -> Callable[[Observation], np.ndarray]:
    if isinstance(policy, str):
        if policy != "expert":
            raise ValueError(f"unknown policy name {policy!r} (only 'expert' is built in)")
        expert = ExpertPolicy(env, noise=expert_noise, seed=seed)
        expert.reset()
        return expert
    inner = policy(env) if factory else policy
    chunks = ChunkRunner(inner, runner)
    chunks.reset()
    return chunks


def _summary(task: str, per_episode: list[dict], seconds: float) -> dict:
    successes = sum(r["success"] for r in per_episode)
    return {
        "task": task,
        "episodes": len(per_episode),
        "successes": successes,
        "success_rate": successes / len(per_episode),
        "mean_steps": float(np.mean([r["steps"] for r in per_episode])),
        "per_episode": per_episode,
        "seconds": round(seconds, 2),
    }


def evaluate(task: str, policy: PolicyLike, episodes: int = 50, seed0: int = 0, *,
             image_size: int = 64, cameras: tuple[str, ...] = CAMERAS,
             max_steps: int | None = None, render: bool | None = None, factory: bool = False,
             expert_noise: float = 0.0, batch: int = 1,
             progress: Callable[[int, dict], None] | None = None,
             runner: RunnerConfig | None = None) -> dict:
    """Run `episodes` seeded episodes (seeds seed0, seed0 + 1, ...) and report
    {"task", "episodes", "successes", "success_rate", "mean_steps"} plus per-episode details
    ("per_episode": seed, success, steps, failure reason) and wall time. `render` defaults to
    False for the expert (it needs no images) and True otherwise; `factory=True` means
    `policy(env)` builds the per-episode policy. `batch > 1` runs that many episodes side by side
    and plans their chunks in one batched forward pass (for TokenPolicy objects: same actions as
    one at a time, several times faster for small policies). `runner`: how chunks are executed
    (the control loop's RunnerConfig: sync / async, simulated latency `delay_ticks`, merge rule;
    default synchronous whole chunks)."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if render is None:
        render = not (isinstance(policy, str) and policy == "expert")
    batchable = hasattr(policy, "predict") and hasattr(policy, "prepare_observations")
    if batch > 1 and runner is None and not factory and batchable:
        return _evaluate_batched(task, policy, [seed0 + i for i in range(episodes)], batch,
                                 image_size=image_size, cameras=cameras, max_steps=max_steps,
                                 render=render, progress=progress)
    env = make_env(task, image_size=image_size, cameras=cameras, max_steps=max_steps, render=render)
    per_episode = []
    t0 = time.perf_counter()
    try:
        for i in range(episodes):
            seed = seed0 + i
            obs = env.reset(seed)
            act = _episode_policy(policy, env, expert_noise=expert_noise, seed=seed,
                                  factory=factory, runner=runner)
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
    return _summary(task, per_episode, time.perf_counter() - t0)


def _evaluate_batched(task: str, policy: Any, seeds: list[int], batch: int, *, image_size: int,
                      cameras: tuple[str, ...], max_steps: int | None, render: bool,
                      progress: Callable[[int, dict], None] | None) -> dict:
    """`batch` environments in lock-step; every step, the ones whose chunk is used up are planned
    in one `policy.predict` call. Each episode sees exactly what `ChunkRunner` would give it."""
    envs = [make_env(task, image_size=image_size, cameras=cameras, max_steps=max_steps,
                     render=render) for _ in range(min(batch, len(seeds)))]
    if hasattr(policy, "reset"):
        policy.reset()
    was_training = getattr(policy, "training", False)
    if hasattr(policy, "eval"):
        policy.eval()
    results: dict[int, dict] = {}
    pending = list(enumerate(seeds))
    slots: list[dict | None] = [None] * len(envs)
    t0 = time.perf_counter()
    try:
        while pending or any(slots):
            for k, env in enumerate(envs):  # fill free slots with the next episodes
                if slots[k] is None and pending:
                    index, seed = pending.pop(0)
                    slots[k] = {"index": index, "seed": seed, "obs": env.reset(seed), "queue": [],
                                "gripper": 1.0}
            active = [k for k, slot in enumerate(slots) if slot is not None]
            plan = [k for k in active if not slots[k]["queue"]]
            if plan:
                actions, ok = policy.predict(policy.prepare_observations(
                    [slots[k]["obs"] for k in plan]))
                for k, chunk, good in zip(plan, actions, ok):
                    if good:
                        slots[k]["queue"] = list(as_chunk(np.asarray(chunk, dtype=np.float64)))
                    else:  # a failed decode is one zero-motion step, as ChunkRunner does
                        zero = np.zeros(ACTION_DIM)
                        zero[GRIPPER_INDEX] = slots[k]["gripper"]
                        slots[k]["queue"] = [zero]
            for k in active:
                slot, env = slots[k], envs[k]
                action = np.asarray(slot["queue"].pop(0), dtype=np.float64)
                if np.isfinite(action[GRIPPER_INDEX]):
                    slot["gripper"] = float(action[GRIPPER_INDEX])
                slot["obs"], _r, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    record = {"seed": slot["seed"], "success": bool(info.get("success")),
                              "steps": env.step_count, "failure": info.get("failure")}
                    results[slot["index"]] = record
                    slots[k] = None
                    if progress is not None:
                        progress(len(results) - 1, record)
    finally:
        for env in envs:
            env.close()
        if hasattr(policy, "train"):
            policy.train(was_training)
    return _summary(task, [results[i] for i in range(len(seeds))], time.perf_counter() - t0)
