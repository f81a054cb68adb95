"""The study's jobs: top-level functions run in worker processes, each returning a JSON-able dict
(the runner caches it under the job's key).

A job whose input is another job's output names it by reference, resolved in the worker from the
cached results: ("result", job key, step) is that job's checkpoint at the step, ("job", job key)
its whole result. The simulator, torch and the trainer are imported inside the jobs: the CLI
imports this module to build the plan, and `apo-ros --help` must not load them.
"""

from __future__ import annotations

import json
import math
import os
import shutil

from apo_ros.demo.keys import job_file


def job_init() -> None:
    """Each worker process: one torch thread (the workers share the cores)."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MUJOCO_GL", "egl")


def job_session(task: str, policy: str, operator: str, episodes: int, bags_dir: str, seed: int,
                expert_noise: float, max_steps: int | None, render: bool,
                operator_noise: float = 0.0, operator_config: dict | None = None) -> dict:
    from apo_ros.runtime.session import run_session
    from apo_ros.sim.operator import OperatorConfig, SimulatedOperator

    if os.path.exists(bags_dir):  # a run killed half-way: record the whole set again
        shutil.rmtree(bags_dir)
    # `operator_config` (the study's `operator` field) may set human_noise too: it wins
    rules = {"human_noise": operator_noise, **(operator_config or {})}
    person = (SimulatedOperator(task, OperatorConfig(**rules), seed=seed)
              if operator == "scripted" else operator)
    summary = run_session(task, policy, person, episodes, bags_dir, seed, expert_noise=expert_noise,
                          device="cpu", progress=False, max_steps=max_steps, render=render,
                          cameras=("front", "wrist") if render else ())
    d = summary.to_dict()
    out = {k: d[k] for k in ("successes", "success_rate", "interventions", "steps", "human_steps",
                             "intervention_ratio", "bags_dir")}
    out["per_episode"] = [{"seed": e.seed, "outcome": e.outcome, "steps": e.steps,
                           "human_steps": e.human_steps, "interventions": e.interventions,
                           "end_reason": e.end_reason, "intervention_outcomes": e.intervention_outcomes}
                          for e in summary.episodes]
    return out


def job_match_fresh(fresh_dir: str, corrections: dict, out_dir: str) -> dict:
    """The matched fresh-expert control's data: whole fresh expert episodes, in recording order,
    until they hold at least as many steps as the operator's corrections (`corrections`: the
    round-0 session result). The bags are copied into out_dir."""
    from apo_ros.recording.reader import find_bags, read_episode

    target = int(corrections["human_steps"])
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    taken, steps = [], 0
    for bag in find_bags(fresh_dir).bags:
        if steps >= target:
            break
        n = len(read_episode(bag, load_images=False).steps)
        shutil.copytree(bag, os.path.join(out_dir, os.path.basename(bag)))
        taken.append(os.path.basename(bag))
        steps += n
    return {"episodes": len(taken), "steps": steps, "target_steps": target, "bags": taken}


def job_train(method: str, demos: list[str], data: list[str], init: str, out: str, steps: int,
              lr: float, batch_size: int, seed: int, cache_dir: str, policy: dict,
              checkpoint_steps: list[int], overrides: dict) -> dict:
    """Train; return {"policies": {step: policy dir}} for every step in checkpoint_steps (the
    final checkpoint included). A constant learning rate after warmup makes the checkpoint at
    step s the same model a run of s steps would give up to its schedule."""
    from apo_ros.training.trainer import TrainConfig, train_policy

    every = math.gcd(*checkpoint_steps) if len(checkpoint_steps) > 1 else steps
    fields = dict(method=method, steps=steps, batch_size=batch_size, seed=seed, lr=lr, device="cpu",
                  threads=1, cache_dir=cache_dir, progress=False, tensorboard=False,
                  save_every=every, keep_checkpoints=max(1, steps // every), policy=dict(policy),
                  schedule="constant" if len(checkpoint_steps) > 1 else "cosine")
    fields.update(overrides or {})
    resume = os.path.isdir(os.path.join(out, "checkpoints"))
    train_policy(TrainConfig(**fields), demos, data, init, out, log=lambda msg: None, resume=resume)
    policies = {}
    for s in checkpoint_steps:
        path = os.path.join(out, "checkpoints", f"step-{s:08d}", "policy")
        if s == steps and not os.path.isdir(path):
            path = os.path.join(out, "policy")
        if not os.path.isdir(path):
            raise RuntimeError(f"training run {out} has no checkpoint at step {s}")
        policies[str(s)] = path
    # The optimizer state is only needed to resume: drop it (tens of MB per checkpoint).
    for step_dir in os.listdir(os.path.join(out, "checkpoints")):
        shutil.rmtree(os.path.join(out, "checkpoints", step_dir, "trainer_state"), ignore_errors=True)
    return {"policies": policies}


def job_eval(task: str, policy_dir: str, episodes: int, seed0: int, max_steps: int | None,
             render: bool, batch: int) -> dict:
    from apo_ros.policies import load_policy
    from apo_ros.sim.evaluate import evaluate

    policy = load_policy(policy_dir, device="cpu")
    result = evaluate(task, policy, episodes=episodes, seed0=seed0, max_steps=max_steps, render=render,
                      cameras=("front", "wrist") if render else (), batch=batch)
    return {"successes": int(result["successes"]), "episodes": int(result["episodes"]),
            "success": [int(r["success"]) for r in result["per_episode"]],
            "steps": [int(r["steps"]) for r in result["per_episode"]],
            "failures": [r["failure"] for r in result["per_episode"]]}


# Jobs whose policy comes from another job's result, resolved in the worker from OUT/jobs.


def resolve(ref, jobs_dir: str):
    """("result", job key, step) -> that job's checkpoint at the step; ("job", job key) -> the
    job's whole result; anything else as it is."""
    if isinstance(ref, (list, tuple)) and len(ref) in (2, 3) and ref[0] in ("result", "job"):
        with open(job_file(jobs_dir, ref[1])) as f:
            result = json.load(f)
        return result["policies"][ref[2]] if ref[0] == "result" else result
    return ref


def job_eval_ref(task: str, policy, episodes: int, seed0: int, max_steps: int | None, render: bool,
                 batch: int, jobs_dir: str) -> dict:
    out = job_eval(task, resolve(policy, jobs_dir), episodes, seed0, max_steps, render, batch)
    out["policy"] = resolve(policy, jobs_dir)
    return out


def job_session_ref(task: str, policy, operator: str, episodes: int, bags_dir: str, seed: int,
                    expert_noise: float, max_steps: int | None, render: bool, jobs_dir: str,
                    operator_noise: float, operator_config: dict | None = None) -> dict:
    return job_session(task, resolve(policy, jobs_dir), operator, episodes, bags_dir, seed, expert_noise,
                       max_steps, render, operator_noise, operator_config)


def job_match_fresh_ref(fresh_dir: str, corrections, out_dir: str, jobs_dir: str) -> dict:
    return job_match_fresh(fresh_dir, resolve(corrections, jobs_dir), out_dir)


def job_train_ref(init, jobs_dir: str, **kw) -> dict:
    return job_train(init=resolve(init, jobs_dir), **kw)
