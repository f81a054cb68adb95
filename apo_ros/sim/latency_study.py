"""What inference latency does to success, with and without the action queue.

    python -m apo_ros.sim.latency_study --episodes 100 --chunk 8

The chunked policy is the scripted expert planning `chunk` actions ahead on a copy of the
simulator (`PlanningExpert`): a privileged, near-perfect chunked model of the task, so what
changes between the rows is only latency and how it is handled. Each row runs `sim eval`'s loop
(`evaluate` with the control loop's `RunnerConfig`): `delay_ticks` of simulated latency per chunk,
"sync" (the arm waits for each chunk) or "async" (the next chunk is computed while the queue
runs; the actions whose tick passed are dropped), and the merge rule.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import numpy as np

from apo_ros.control.policy_runner import RunnerConfig
from apo_ros.sim.evaluate import evaluate
from apo_ros.sim.experts import make_expert


def _arm_state(env: Any) -> np.ndarray:
    return np.concatenate([env.tcp_pos(), [env.gripper_opening()]])


class PlanningExpert:
    """The expert rolled out `T` steps on a deep copy of the env: its actions are the chunk. The
    expert's own state machine resumes, at the next request, from its state at the planned step
    whose predicted arm is nearest the real arm (ticks without an action, or another chunk's
    actions, are not the plan's)."""

    def __init__(self, env: Any, T: int = 8):
        self.env, self.T = env, int(T)
        self.expert = make_expert(env.task.name)
        self.expert.reset(env)
        self.snapshots: list[Any] = []
        self.predicted: list[np.ndarray] = []

    def select_action(self, observation: Any) -> tuple[np.ndarray, bool]:
        if self.snapshots:
            here = _arm_state(self.env)
            nearest = int(np.argmin([np.linalg.norm(here - p) for p in self.predicted]))
            self.expert = self.snapshots[nearest]
        shadow, expert = copy.deepcopy(self.env), copy.deepcopy(self.expert)
        chunk, snapshots, predicted = [], [copy.deepcopy(expert)], [_arm_state(shadow)]
        for _ in range(self.T):
            action = np.asarray(expert.act(shadow), dtype=np.float64)
            chunk.append(action)
            shadow.step(action)
            snapshots.append(copy.deepcopy(expert))
            predicted.append(_arm_state(shadow))
        self.snapshots, self.predicted = snapshots, predicted
        return np.stack(chunk), True

    def reset(self) -> None:
        pass


ROWS = [("sync", 0, "replace")] + [(e, ms, "replace") for ms in (100, 300, 500)
                                   for e in ("sync", "async")] + \
    [("async", 300, "crossfade"), ("async", 300, "ensemble")]


def run(task: str = "lemon_on_plate", episodes: int = 100, seed0: int = 300000, chunk: int = 8,
        control_hz: float = 10.0) -> list[dict]:
    out = []
    for execution, ms, merge in ROWS:
        delay = int(round(ms / 1000.0 * control_hz))
        # blends need chunks that overlap: ask for the next one two ticks before it is needed
        refill = -1 if merge == "replace" else delay + 2
        t0 = time.time()
        result = evaluate(task, lambda env: PlanningExpert(env, chunk), episodes=episodes,
                          seed0=seed0, render=False, cameras=(), factory=True,
                          runner=RunnerConfig(rate_hz=control_hz, execution=execution,
                                              delay_ticks=delay, merge=merge, refill_steps=refill))
        row = {"latency_ms": ms, "execution": execution, "merge": merge,
               "successes": result["successes"], "episodes": result["episodes"],
               "mean_steps": round(result["mean_steps"], 1), "seconds": round(time.time() - t0, 1)}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="lemon_on_plate")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=300000)
    p.add_argument("--chunk", type=int, default=8, help="actions per chunk (default 8)")
    args = p.parse_args(argv)
    run(args.task, args.episodes, args.seed, args.chunk)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
