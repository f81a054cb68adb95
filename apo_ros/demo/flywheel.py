"""The correction flywheel end to end, on the simulator, and the method comparison.

    1. expert demonstrations            (in-process session, policy = scripted expert) -> bags
    2. base policy                      (bc on the demos)
    3. deployment round 0               (base + simulated operator at the SpaceMouse) -> bags
    4. dagger, sirius, kto, tpo, apo    (each from the base, same data, same step budget, S seeds)
    5. evaluation                       (base and every method on the same seeded initial states)
    6. lifelong rounds                  (redeploy the newest apo and dagger policies, collect new
                                         interventions, train again; success + intervention ratio)
    7. results.json / results.md / results.png; every bag and checkpoint kept under --out

Independent jobs (the trainings of one stage, the evaluations) run in a pool of worker
processes with one torch thread each: on a 2-core machine two single-threaded jobs finish sooner
than one job with two threads, because rendering and batch-1 inference do not parallelize.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context

from apo_ros.demo.report import METHOD_ORDER, method_entry, write_results

METHODS = ("dagger", "sirius", "kto", "tpo", "apo")
LIFELONG_METHODS = ("apo", "dagger")


@dataclass
class DemoConfig:
    # The default task is the narrow-randomization lemon_on_plate variant: on the full task a BC
    # base trained for minutes on 2 CPU cores never succeeds (docs/demo_recipe.md), and a base
    # that never succeeds gives no "recognizable failures" to compare methods on.
    task: str = "lemon_on_plate_easy"  # simulator task (apo-ros sim tasks lists them)
    out: str = "demo_out"  # everything is written here (bags, checkpoints, results)
    rounds: int = 2  # lifelong rounds after round 0 (0 = comparison only)
    seeds: int = 2  # training seeds per method (the base is trained once)
    demo_episodes: int = 40  # expert demonstrations
    demo_noise: float = 0.3  # expert action noise (0 = deterministic expert)
    base_steps: int = 1500  # bc steps for the base policy (1,000 is too few: images unused)
    base_lr: float | None = 2e-3  # bc learning rate of the base (5e-4 underfits in this budget)
    interaction_episodes: int = 20  # base deployments with the simulated operator (round 0)
    round_episodes: int = 10  # deployments per lifelong round and method
    method_steps: int = 200  # optimizer steps of every method (same budget for all)
    batch_size: int = 64  # samples per step, every method
    eval_episodes: int = 30  # evaluation episodes per policy (same seeded states for all)
    eval_seed0: int = 100_000  # first evaluation seed (demos use 0.., deployments 50_000..)
    workers: int = 2  # parallel worker processes (1 = run everything in this process)
    max_steps: int | None = None  # episode length cap (None = the task's own; tests shorten it)
    policy: dict = field(default_factory=lambda: {"chunk_size": 4})  # small-policy build options
    method_overrides: dict = field(default_factory=dict)  # per-method TrainConfig fields

    @classmethod
    def quick(cls, **kw) -> DemoConfig:
        """The under-5-minutes variant: one training seed, fewer deployments and evaluations."""
        base = dict(rounds=1, seeds=1, interaction_episodes=10, round_episodes=5, eval_episodes=12)
        base.update(kw)
        return cls(**base)


# ---------------------------------------------------------------------------------------------
# jobs (top-level functions: they run in worker processes)


def _job_init() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MUJOCO_GL", "egl")


def job_session(task: str, policy: str, operator: str, episodes: int, bags_dir: str, seed: int,
                expert_noise: float = 0.0, max_steps: int | None = None) -> dict:
    from apo_ros.runtime.session import run_session

    summary = run_session(task, policy, operator, episodes, bags_dir, seed, expert_noise=expert_noise,
                          device="cpu", progress=False, max_steps=max_steps)
    d = summary.to_dict()
    return {k: d[k] for k in ("successes", "success_rate", "interventions", "steps", "human_steps",
                              "intervention_ratio", "bags_dir")}


def job_train(method: str, demos: list[str], data: list[str], init: str, out: str, steps: int,
              batch_size: int, seed: int, cache_dir: str, lr: float | None = None,
              policy: dict | None = None, overrides: dict | None = None) -> str:
    if os.path.exists(os.path.join(out, "policy", "apo_policy.json")):
        return os.path.join(out, "policy")  # finished earlier (a rerun of the same --out)
    from apo_ros.training.trainer import TrainConfig, train_policy

    fields = dict(method=method, steps=steps, batch_size=batch_size, seed=seed, lr=lr, device="cpu",
                  threads=1, cache_dir=cache_dir, progress=False, tensorboard=False, save_every=0,
                  keep_checkpoints=1, policy=dict(policy or {}))
    fields.update(overrides or {})
    config = TrainConfig(**fields)
    return train_policy(config, demos, data, init, out, log=lambda msg: None)


def job_eval(task: str, policy_dir: str, episodes: int, seed0: int, max_steps: int | None = None) -> dict:
    from apo_ros.policies import load_policy
    from apo_ros.sim.evaluate import evaluate

    policy = load_policy(policy_dir, device="cpu")
    result = evaluate(task, policy, episodes=episodes, seed0=seed0, max_steps=max_steps)
    return {"successes": int(result["successes"]), "episodes": int(result["episodes"]),
            "mean_steps": float(result["mean_steps"])}


# ---------------------------------------------------------------------------------------------


class _Pool:
    """A process pool, or inline execution when workers == 1 (tests, debugging)."""

    def __init__(self, workers: int):
        self.workers = workers
        self._ex = (ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_job_init)
                    if workers > 1 else None)
        if self._ex is None:
            _job_init()

    def submit(self, fn: Callable, *args, **kw) -> Future:
        if self._ex is not None:
            return self._ex.submit(fn, *args, **kw)
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kw))
        except BaseException as err:  # surfaced by .result(), as in a real pool
            fut.set_exception(err)
        return fut

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)


class Stages:
    """Which stage runs, how far it is, and an estimate of what is left (rich when interactive)."""

    def __init__(self, plan: list[tuple[str, int, float]], enabled: bool):
        # plan: (stage name, number of jobs, estimated seconds)
        self.plan = plan
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._progress = None
        self._tasks: dict[str, int] = {}
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description:<34}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      TextColumn("{task.fields[note]}"))
            self._progress.start()
            total_est = sum(p[2] for p in plan)
            self._overall = self._progress.add_task(f"total (estimate ~{total_est / 60:.0f} min)",
                                                    total=total_est, note="")
            for name, jobs, est in plan:
                self._tasks[name] = self._progress.add_task(name, total=max(jobs, 1), start=False,
                                                            note=f"~{est:.0f} s")
        self._estimates = {name: est for name, _, est in plan}

    def start(self, name: str) -> None:
        if self._progress is not None:
            self._progress.start_task(self._tasks[name])
        else:
            print(f"[demo] {name} ... ({time.perf_counter() - self.t0:.0f} s elapsed)", flush=True)

    def advance(self, name: str, note: str = "") -> None:
        if self._progress is not None:
            task = self._tasks[name]
            self._progress.update(task, advance=1, note=note)
            t = self._progress.tasks[task]
            self._progress.update(self._overall, advance=self._estimates[name] / max(t.total or 1, 1))
        elif note:
            print(f"[demo]   {name}: {note}", flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _bags_count(path: str) -> int:
    from apo_ros.recording import find_bags

    return len(find_bags(path).bags)


def run_demo(config: DemoConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the whole flywheel; return the results dict (also written to config.out)."""
    from apo_ros.sim import TASKS

    if config.task not in TASKS:
        from apo_ros.errors import UserError

        raise UserError(f"unknown task {config.task!r}; choose one of {sorted(TASKS)}")
    t_start = time.perf_counter()
    out = os.path.abspath(config.out)
    os.makedirs(out, exist_ok=True)
    cache = os.path.join(out, "cache")
    demos_dir = os.path.join(out, "demos")
    c = config
    method_jobs = len(METHODS) * c.seeds
    # Rough per-unit costs on a 2-core machine, to tell the user what to expect.
    est_train = 0.05 * c.batch_size / 64  # s per step, one thread
    est_ep = 3.0  # s per rendered episode with the policy in the loop
    par = max(c.workers, 1)
    plan = [
        ("1. expert demonstrations", 1, 0.6 * c.demo_episodes),
        ("2. base policy (bc)", 1, est_train * c.base_steps),
        ("3. deploy base + operator", 1, est_ep * c.interaction_episodes),
        ("4. train 5 methods", method_jobs, est_train * c.method_steps * method_jobs / par),
        ("5. evaluate", 1 + method_jobs, est_ep * c.eval_episodes * (1 + method_jobs) / par),
    ]
    if c.rounds:
        plan.append(("6. lifelong rounds", c.rounds * len(LIFELONG_METHODS),
                     c.rounds * len(LIFELONG_METHODS) * (est_ep * (c.round_episodes + c.eval_episodes)
                                                         + est_train * c.method_steps) / par))
    stages = Stages(plan, enabled=progress)
    pool = _Pool(c.workers)
    try:
        # 1. demos
        stages.start(plan[0][0])
        if _bags_count(demos_dir) < c.demo_episodes:
            demo_summary = pool.submit(job_session, c.task, "expert", "none", c.demo_episodes, demos_dir,
                                       0, c.demo_noise, c.max_steps).result()
        else:
            demo_summary = {"successes": c.demo_episodes}
        stages.advance(plan[0][0], f"{demo_summary['successes']}/{c.demo_episodes} expert successes")

        # 2. base
        stages.start(plan[1][0])
        base = pool.submit(job_train, "bc", [demos_dir], [], "small", os.path.join(out, "base"),
                           c.base_steps, c.batch_size, 0, cache, c.base_lr, c.policy,
                           c.method_overrides.get("bc")).result()
        stages.advance(plan[1][0], "trained")

        # 3. round 0 deployment (base + simulated operator); its evaluation runs meanwhile
        stages.start(plan[2][0])
        round0_dir = os.path.join(out, "rounds", "round0")
        eval_futures: dict[tuple[str, int], Future] = {
            ("base", 0): pool.submit(job_eval, c.task, base, c.eval_episodes, c.eval_seed0,
                                         c.max_steps)}
        round0 = pool.submit(job_session, c.task, base, "scripted", c.interaction_episodes, round0_dir,
                             50_000, 0.0, c.max_steps).result()
        stages.advance(plan[2][0], f"{round0['interventions']} interventions, "
                                   f"ratio {round0['intervention_ratio']:.2f}")
        if round0["interventions"] == 0:
            from apo_ros.errors import UserError

            raise UserError(
                f"the simulated operator never intervened in {c.interaction_episodes} deployments of the "
                f"base policy ({round0['successes']} succeeded), so dagger / sirius / kto / tpo / apo "
                f"have no corrections to learn from; the bags are in {round0_dir}. Use more "
                "interaction episodes or a weaker base (fewer base steps or demos).")

        # 4. train every method from the base on the same data and budget
        stages.start(plan[3][0])
        trained: dict[tuple[str, int], str] = {}
        train_futures = {
            (m, s): pool.submit(job_train, m, [demos_dir], [round0_dir], base,
                                os.path.join(out, "methods", f"{m}_seed{s}"), c.method_steps,
                                c.batch_size, s, cache, None, None, c.method_overrides.get(m))
            for s in range(c.seeds) for m in METHODS}
        stages.start(plan[4][0])
        for key, fut in train_futures.items():
            trained[key] = fut.result()
            stages.advance(plan[3][0], f"{key[0]} seed {key[1]}")
            eval_futures[key] = pool.submit(job_eval, c.task, trained[key], c.eval_episodes, c.eval_seed0,
                                            c.max_steps)

        # 6. lifelong rounds run alongside the evaluations
        lineage_data = {m: [round0_dir] for m in LIFELONG_METHODS}
        current = {m: trained[(m, 0)] for m in LIFELONG_METHODS}
        round_eval_futures: dict[tuple[int, str], Future] = {}
        round_sessions: dict[tuple[int, str], dict] = {}
        if c.rounds:
            stages.start(plan[5][0])
        for r in range(1, c.rounds + 1):
            # deploy generation r of each method with the operator
            sess = {m: pool.submit(job_session, c.task, current[m], "scripted", c.round_episodes,
                                   os.path.join(out, "rounds", f"round{r}", m), 50_000 + 1000 * r,
                                   0.0, c.max_steps)
                    for m in LIFELONG_METHODS}
            for m, fut in sess.items():
                round_sessions[(r, m)] = fut.result()
                lineage_data[m].append(os.path.join(out, "rounds", f"round{r}", m))
                if r > 1:  # generation 1 is the comparison's seed-0 model, evaluated in stage 5
                    round_eval_futures[(r, m)] = pool.submit(job_eval, c.task, current[m],
                                                             c.eval_episodes, c.eval_seed0, c.max_steps)
            if r == c.rounds:
                for m in LIFELONG_METHODS:
                    stages.advance(plan[5][0], f"round {r} {m}")
                break
            # train generation r + 1 from generation r on demos + all of this lineage's data
            nxt = {m: pool.submit(job_train, m, [demos_dir], list(lineage_data[m]), current[m],
                                  os.path.join(out, "rounds", f"round{r}", f"{m}_policy"),
                                  c.method_steps, c.batch_size, 0, cache, None, None,
                                  c.method_overrides.get(m))
                   for m in LIFELONG_METHODS}
            for m, fut in nxt.items():
                current[m] = fut.result()
                stages.advance(plan[5][0], f"round {r} {m}")

        # collect evaluations
        evals: dict[tuple[str, int], dict] = {}
        for key, fut in eval_futures.items():
            evals[key] = fut.result()
            stages.advance(plan[4][0], f"{key[0]} seed {key[1]}: "
                                       f"{evals[key]['successes']}/{evals[key]['episodes']}")
        round_evals = {key: fut.result() for key, fut in round_eval_futures.items()}
    finally:
        pool.close()
        stages.close()

    methods = {"base": method_entry([(evals[("base", 0)]["successes"], evals[("base", 0)]["episodes"])])}
    for m in METHODS:
        methods[m] = method_entry([(evals[(m, s)]["successes"], evals[(m, s)]["episodes"])
                                   for s in range(c.seeds)])
    rounds = [{"round": 0, "method": m, "success_rate": methods["base"]["success_rate"],
               "intervention_ratio": round0["intervention_ratio"], "interventions": round0["interventions"],
               "episodes": c.interaction_episodes} for m in LIFELONG_METHODS] if c.rounds else []
    for (r, m), sess_result in sorted(round_sessions.items()):
        ev = evals[(m, 0)] if r == 1 else round_evals[(r, m)]
        rounds.append({"round": r, "method": m, "success_rate": ev["successes"] / ev["episodes"],
                       "intervention_ratio": sess_result["intervention_ratio"],
                       "interventions": sess_result["interventions"], "episodes": c.round_episodes})
    interaction_episodes = c.interaction_episodes + c.round_episodes * len(round_sessions)
    results = {
        "task": c.task,
        "methods": {m: methods[m] for m in METHOD_ORDER},
        "rounds": rounds,
        "data": {"demo_episodes": c.demo_episodes, "interaction_episodes": interaction_episodes,
                 "interventions": round0["interventions"],
                 "interventions_all_rounds": round0["interventions"]
                 + sum(s["interventions"] for s in round_sessions.values()),
                 "round0_intervention_ratio": round0["intervention_ratio"]},
        "config": asdict(c),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_results(results, out)
    return results


def load_results(out: str) -> dict:
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)
