"""The method comparison as a study: several tasks, several seeds of the whole pipeline, one tuning
procedure for every method, paired evaluation, bootstrap intervals, lifelong rounds.

Per task and pipeline seed p (everything below is repeated for every p: the base is a random draw
too):

    1. expert demos                 seeds from (p + 1) * 1_000_000           -> bags
    2. base policy                  bc on the demos (seed p)
    3. round 0                      the base deployed with the simulated operator -> bags
    4. fresh expert demos           as many new expert demos as round 0 has episodes (the
                                    fresh-expert control: new data of the right kind)
    5. sweep                        every method x every learning rate, from the base, on the
                                    demos + round 0 (fresh: the demos + the fresh demos), with a
                                    constant learning rate; a checkpoint at every step count of
                                    the sweep
    6. validation                   every checkpoint of the sweep on the validation seeds

Then, per task and method, the (lr, steps) with the best mean validation success over the
pipeline seeds is chosen (one procedure for every method; ties go to fewer steps, then the lower
lr), and

    7. test                         the base and every chosen checkpoint on the test seeds (the
                                    same initial states for every policy and pipeline seed)
    8. lifelong rounds              apo and dagger: deploy generation r with the operator, train
                                    generation r + 1 from it on the demos and all of its lineage's
                                    deployments (chosen lr and steps), evaluate on the test seeds

and the report: success rates with 95% intervals from a bootstrap over pipeline seeds and test
episodes, paired differences (apo - base, apo - every other method), and per round the success
rate and the intervention ratio. Every job writes its result to `OUT/jobs/<key>.json` when it
finishes; a rerun with the same OUT skips finished jobs (resumable), and jobs run in worker
processes with one torch thread each.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context

# "fresh": bc on as many new expert episodes as there are deployments (is there headroom?);
# "fresh_matched": bc on new expert episodes holding as many steps as the operator's corrections
# (are corrections worth more than the same amount of expert data?).
METHODS = ("dagger", "sirius", "kto", "tpo", "apo", "fresh", "fresh_matched")
CONTROLS = ("fresh", "fresh_matched")
TRAINABLE = ("bc", "dagger", "sirius", "kto", "tpo", "apo")  # what a variant can be a variant of
# apo_natural: APO drawing its batches at the data's natural shares instead of the released
# 0.5 / 0.25 / 0.25 mix (the sampling setting, shown both ways in every table).
VARIANTS: dict[str, dict] = {"apo_natural": {"method": "apo", "sampling": "natural"}}
# Fields whose change makes cached job results wrong (the job keys do not hold them): a study
# resumes only with the same values. The others (tasks, seeds, methods, lrs, rounds, workers...)
# only add or select jobs.
RESULT_FIELDS = ("policy_kind", "policy", "demo_task", "demo_episodes", "demo_noise", "operator_noise",
                 "operator", "train_overrides", "base_steps",
                 "base_lr", "batch_size", "interaction_episodes", "validation_episodes",
                 "test_episodes", "round_episodes", "round_test_episodes", "max_steps", "method_overrides",
                 "variants")
VALIDATION_SEED0 = 300_000
TEST_SEED0 = 100_000


@dataclass
class StudyConfig:
    # Simulator tasks compared (apo-ros sim tasks lists them).
    tasks: list[str] = field(default_factory=lambda: ["lemon_on_plate", "square_on_stick"])
    # Everything is written here (bags, checkpoints, job results, the report).
    out: str = "study_out"
    # Policy kind of the base: "state" (MLP over proprio + object poses, no rendering) or "small"
    # (the CNN image policy, both cameras rendered: about ten times the cost per episode).
    policy_kind: str = "state"
    # Build options of the base policy (train --policy.* options): one action per prediction,
    # 64 bins per dimension (about 0.5 mm for a translation), a 128-wide MLP, actions decoded as
    # the expected value of each arm dimension's bins (argmax: a base at ~0.25 instead of ~0.6;
    # docs/experiments/demo_study.md).
    policy: dict = field(default_factory=lambda: {"chunk_size": 1, "hidden": 128, "n_bins": 64,
                                                  "decode": "mean"})
    # Seeds of the whole pipeline (demos, base, deployment, methods).
    pipeline_seeds: int = 3
    # Expert demonstrations per pipeline seed, and their action noise. Noise-free: with argmax
    # decoding over narrow bins, noisy demos make a state policy freeze (docs/experiments/demo_study.md).
    # 30 demos: a base that more data of the deployment distribution still improves (100 demos
    # gave a data-saturated base that no method could move; docs/experiments/demo_study.md).
    demo_episodes: int = 30
    demo_noise: float = 0.0
    # The task whose demos train the base (None: the deployment task). A narrower task (e.g.
    # lemon_on_plate_easy) gives a base that has not seen the deployment distribution.
    demo_task: str | None = None
    # Action noise of the simulated operator's corrections (same reason as demo_noise).
    operator_noise: float = 0.0
    # Extra OperatorConfig fields of the simulated operator (apo-ros sim: the operator's rules).
    operator: dict = field(default_factory=dict)
    # The base: bc steps and learning rate.
    base_steps: int = 8000
    base_lr: float = 1e-3
    # Samples per optimizer step (every method).
    batch_size: int = 64
    # Base deployments with the simulated operator (round 0), per pipeline seed.
    interaction_episodes: int = 20
    # Methods compared (each trained from the base on the same data).
    methods: list[str] = field(default_factory=lambda: [*METHODS, *VARIANTS])
    # The tuning sweep, the same for every method: learning rates x step counts.
    sweep_lrs: list[float] = field(default_factory=lambda: [3e-5, 1e-4, 3e-4, 1e-3])
    sweep_steps: list[int] = field(default_factory=lambda: [1000, 4000])
    # "constant": one run per lr at a constant rate, checkpointed at every step count (cheap);
    # "cosine": one run per setting, the rate decayed to zero over its steps, as the base is
    # trained ("train until the new data is learned").
    sweep_schedule: str = "cosine"
    # Validation episodes per sweep checkpoint (seeds from 300000) and test episodes per policy
    # (seeds from 100000), the same initial states for every policy and pipeline seed.
    validation_episodes: int = 50
    test_episodes: int = 100
    # Lifelong rounds after round 0 (apo and dagger), deployments per round, test episodes per
    # round's policy.
    rounds: int = 3
    round_episodes: int = 10
    round_test_episodes: int = 100
    # Parallel worker processes, one torch thread each.
    workers: int = 2
    # Episodes evaluated side by side in one process (batched policy forward passes).
    eval_batch: int = 50
    # Episode length cap (None = the task's own).
    max_steps: int | None = None
    # Bootstrap draws for the intervals.
    bootstrap_draws: int = 4000
    # Extra TrainConfig fields for every method (e.g. the batch sampling, stated in the tables),
    # then per method (e.g. {"apo": {"beta": 0.2}}), for every run of it.
    train_overrides: dict = field(default_factory=dict)
    method_overrides: dict = field(default_factory=dict)
    # Methods whose lifelong rounds are run (each round: deploy, add the deployment, retrain).
    lifelong_methods: list[str] = field(default_factory=lambda: ["apo", "dagger"])
    # Named variants of a method, compared as methods of their own and tuned the same way: name ->
    # {"method": one of TRAINABLE, TrainConfig field: value, ...}; list the name in `methods`.
    # The default one, apo_mean, is APO with its adaptive weights normalized by the group's mean
    # error instead of its sum (the undesirable side no longer dominates; see adaptive_weights).
    variants: dict = field(default_factory=lambda: dict(VARIANTS))

    def __post_init__(self) -> None:
        from apo_ros.sim import TASKS

        unknown = [t for t in [*self.tasks, *([self.demo_task] if self.demo_task else [])] if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(TASKS)}")
        for name, v in self.variants.items():
            if name in METHODS or not isinstance(v, dict) or v.get("method") not in TRAINABLE:
                raise ValueError(f"variant {name!r} must be a new name with a 'method' in {list(TRAINABLE)}, "
                                 f"got {v!r}")
        bad = [m for m in self.methods if m not in METHODS and m not in self.variants]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; choose from {list(METHODS)} or the variants "
                             f"{list(self.variants)}")
        bad = [m for m in self.lifelong_methods if m not in self.methods or m in CONTROLS]
        if bad:
            raise ValueError(f"lifelong_methods {bad} must be compared methods learning from the "
                             f"deployments (not the controls {list(CONTROLS)}): {self.methods}")
        checks = [(self.pipeline_seeds >= 1, "pipeline_seeds must be >= 1"),
                  (self.workers >= 1, "workers must be >= 1"),
                  (self.rounds >= 0, "rounds must be >= 0"),
                  (self.demo_episodes >= 1 and self.interaction_episodes >= 1,
                   "demo_episodes and interaction_episodes must be >= 1"),
                  (bool(self.sweep_lrs) and all(lr > 0 for lr in self.sweep_lrs),
                   "sweep_lrs must be positive"),
                  (bool(self.sweep_steps) and all(s >= 1 for s in self.sweep_steps),
                   "sweep_steps must be >= 1"),
                  (self.validation_episodes >= 1 and self.test_episodes >= 1,
                   "validation_episodes and test_episodes must be >= 1"),
                  (self.policy_kind in ("state", "small"), "policy_kind must be 'state' or 'small'"),
                  (self.sweep_schedule in ("constant", "cosine"),
                   "sweep_schedule must be 'constant' or 'cosine'")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def render(self) -> bool:
        return self.policy_kind != "state"

    def trainer(self, name: str) -> tuple[str, dict]:
        """A compared method's name -> (the trainer's method, its TrainConfig overrides)."""
        common = dict(self.train_overrides)
        if name in self.variants:
            v = dict(self.variants[name])
            method = v.pop("method")
            return method, {**common, **self.method_overrides.get(method, {}), **v}
        method = "bc" if name in CONTROLS else name
        return method, {**common, **self.method_overrides.get(name, {})}


def choice_tag(chosen: dict, task: str, method: str) -> str:
    """The chosen setting of a method on a task, as it appears in job keys and directories."""
    ch = chosen[f"{task}/{method}"]
    return f"{method}_lr{_lr_name(ch['lr'])}_s{ch['steps']}"


def evaluation_key(task: str, p: int, method: str, chosen: dict) -> str:
    """The test evaluation of the checkpoint chosen for `method` (its setting is in the key: a
    study resumed with another sweep that chooses differently evaluates the new choice)."""
    if method == "base":
        return f"{task}/seed{p}/test/base"
    return f"{task}/seed{p}/test/{choice_tag(chosen, task, method)}"


def lifelong_key(task: str, p: int, method: str, chosen: dict) -> str:
    return f"{task}/seed{p}/lifelong/{choice_tag(chosen, task, method)}"


def check_resumable(out: str, config: StudyConfig) -> None:
    """Record the result-shaping fields in OUT/study_config.json, or refuse to resume a study
    made with other values (its cached jobs would be silently reused)."""
    from dataclasses import asdict

    from apo_ros.errors import ConfigError

    mine = {k: v for k, v in asdict(config).items() if k in RESULT_FIELDS}
    path = os.path.join(out, "study_config.json")
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        def same(k: str) -> bool:
            if k == "variants":  # a new variant only adds jobs; a changed one would reuse them
                return all(before[k][n] == mine[k][n] for n in set(before[k]) & set(mine[k]))
            return json.dumps(before[k], sort_keys=True) == json.dumps(mine[k], sort_keys=True)

        differ = [k for k in RESULT_FIELDS if k in before and not same(k)]
        if differ:
            detail = "; ".join(f"{k}: {before[k]!r} there, {mine[k]!r} now" for k in differ)
            raise ConfigError(f"{out} holds a study made with other settings ({detail}): its cached "
                              "results would be reused. Use another --out, or the same settings")
        mine["variants"] = {**before.get("variants", {}), **mine["variants"]}
    os.makedirs(out, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(mine, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------
# jobs: top-level functions (they run in worker processes); each returns a JSON-able dict


def _job_init() -> None:
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
    import math

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


# ---------------------------------------------------------------------------------------------
# the job runner


@dataclass
class Job:
    key: str  # unique; OUT/jobs/<key>.json holds the result
    fn: Callable[..., dict]
    kwargs: dict
    kind: str  # session | train | eval (for time estimates)
    cost: float  # estimated seconds on one worker
    deps: tuple[str, ...] = ()


class _Display:
    """Jobs done / total, elapsed, and the estimated time left (rich when interactive)."""

    def __init__(self, enabled: bool, log: Callable[[str], None]):
        self.enabled = enabled
        self.log = log
        self._progress = None
        self._task = None
        self._last_log = 0.0

    def start(self, title: str, total: float) -> None:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.fields[jobs]}"), TimeElapsedColumn(),
                                      TextColumn("{task.fields[left]}"), TextColumn("{task.fields[note]}"))
            self._progress.start()
            self._task = self._progress.add_task(title, total=max(total, 1e-9), jobs="", left="", note="")

    def update(self, done_cost: float, total: float, jobs: str, left_s: float, note: str) -> None:
        left = f"~{left_s / 60:.0f} min left" if left_s >= 60 else f"~{left_s:.0f} s left"
        if self._progress is not None:
            self._progress.update(self._task, completed=done_cost, total=max(total, 1e-9), jobs=jobs,
                                  left=left, note=note[:60])
        elif time.monotonic() - self._last_log > 20 or left_s == 0:
            self._last_log = time.monotonic()
            self.log(f"[study] {jobs} jobs, {left}; {note}")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class JobRunner:
    """Runs jobs whose dependencies are done, `workers` at a time, caching each result."""

    def __init__(self, out: str, workers: int, display: _Display):
        self.jobs_dir = os.path.join(out, "jobs")
        os.makedirs(self.jobs_dir, exist_ok=True)
        self.workers = workers
        self.display = display
        self.results: dict[str, dict] = {}
        self._ratio: dict[str, list[float]] = {}  # kind -> [actual / estimated]
        self._ex = (ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_job_init)
                    if workers > 1 else None)
        if self._ex is None:
            _job_init()

    def _path(self, key: str) -> str:
        return os.path.join(self.jobs_dir, key.replace("/", "__") + ".json")

    def cached(self, key: str) -> dict | None:
        if key in self.results:
            return self.results[key]
        path = self._path(key)
        if os.path.exists(path):
            with open(path) as f:
                self.results[key] = json.load(f)
            return self.results[key]
        return None

    def _estimate(self, job: Job) -> float:
        ratios = self._ratio.get(job.kind)
        return job.cost * (sum(ratios[-20:]) / len(ratios[-20:]) if ratios else 1.0)

    def run(self, jobs: list[Job], title: str) -> dict[str, dict]:
        todo = {j.key: j for j in jobs if self.cached(j.key) is None}
        total = sum(j.cost for j in todo.values())
        done_cost = 0.0
        self.display.start(title, total)
        running: dict[Future, tuple[Job, float]] = {}
        finished = len(jobs) - len(todo)
        try:
            while todo or running:
                ready = [j for j in todo.values()
                         if all(self.cached(d) is not None for d in j.deps)]
                ready.sort(key=lambda j: -j.cost)  # long jobs first: less idle time at the end
                while ready and len(running) < self.workers:
                    job = ready.pop(0)
                    del todo[job.key]
                    running[self._submit(job)] = (job, time.perf_counter())
                if not running:
                    missing = sorted({d for j in todo.values() for d in j.deps if self.cached(d) is None})
                    raise RuntimeError(f"jobs wait for results nobody produces: {missing[:5]}")
                complete, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in complete:
                    job, t0 = running.pop(fut)
                    result = fut.result()
                    seconds = time.perf_counter() - t0
                    result = dict(result, seconds=round(seconds, 2))
                    tmp = self._path(job.key) + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump(result, f)
                    os.replace(tmp, self._path(job.key))
                    self.results[job.key] = result
                    self._ratio.setdefault(job.kind, []).append(seconds / max(job.cost, 1e-3))
                    done_cost += job.cost
                    finished += 1
                    left = sum(self._estimate(j) for j in todo.values())
                    left += sum(max(self._estimate(j) - (time.perf_counter() - t), 0.0)
                                for j, t in running.values())
                    self.display.update(done_cost, total, f"{finished}/{len(jobs)}",
                                        left / max(1, min(self.workers, len(todo) + len(running) or 1)),
                                        job.key)
        finally:
            self.display.stop()
        return {j.key: self.results[j.key] for j in jobs}

    def _submit(self, job: Job) -> Future:
        if self._ex is not None:
            return self._ex.submit(job.fn, **job.kwargs)
        fut: Future = Future()
        try:
            fut.set_result(job.fn(**job.kwargs))
        except BaseException as err:  # surfaced by .result(), as in a real pool
            fut.set_exception(err)
        return fut

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# the study


def _lr_name(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


class Study:
    def __init__(self, config: StudyConfig):
        self.c = config
        self.out = os.path.abspath(config.out)
        self.cache = os.path.join(self.out, "cache")

    # ---- paths -------------------------------------------------------------------------------
    def seed_dir(self, task: str, p: int) -> str:
        return os.path.join(self.out, task, f"seed{p}")

    def demos(self, task: str, p: int) -> str:
        return os.path.join(self.seed_dir(task, p), "demos")

    def fresh_demos(self, task: str, p: int) -> str:
        return os.path.join(self.seed_dir(task, p), "fresh_demos")

    def matched_demos(self, task: str, p: int) -> str:
        return os.path.join(self.seed_dir(task, p), "fresh_matched_demos")

    def method_data(self, task: str, p: int, m: str) -> tuple[list[str], list[str], tuple[str, ...]]:
        """(demo folders, interaction folders, the jobs they come from) a compared method trains on."""
        k = f"{task}/seed{p}"
        if m == "fresh":
            return [self.demos(task, p), self.fresh_demos(task, p)], [], (f"{k}/fresh_demos",)
        if m == "fresh_matched":
            return [self.demos(task, p), self.matched_demos(task, p)], [], (f"{k}/fresh_matched",)
        return [self.demos(task, p)], [self.round_dir(task, p, 0)], (f"{k}/round0",)

    def round_dir(self, task: str, p: int, r: int, method: str | None = None) -> str:
        d = os.path.join(self.seed_dir(task, p), "rounds", f"round{r}")
        return os.path.join(d, method) if method else d

    def sweep_name(self, method: str, lr: float, steps: int | None = None) -> str:
        """The sweep run that gives a method's checkpoint at (lr, steps). Constant schedule: one run
        per lr, trained to the longest step count of the sweep with a checkpoint at every count
        (a study resumed with other step counts trains new runs). Cosine: one run per setting,
        its learning rate decayed to zero over exactly that many steps."""
        if self.c.sweep_schedule == "cosine":
            return f"{method}_lr{_lr_name(lr)}_s{steps}_cosine"
        return f"{method}_lr{_lr_name(lr)}_to{max(self.c.sweep_steps)}"

    def sweep_runs(self, method: str, lr: float) -> list[tuple[str, list[int]]]:
        """(run name, the step counts it checkpoints) for every run of a method at one lr."""
        if self.c.sweep_schedule == "cosine":
            return [(self.sweep_name(method, lr, st), [st]) for st in sorted(self.c.sweep_steps)]
        return [(self.sweep_name(method, lr), sorted(self.c.sweep_steps))]

    def base_policy(self, task: str, p: int) -> str:
        return os.path.join(self.seed_dir(task, p), "base", "policy")

    # ---- cost estimates (seconds on one worker; refined while the study runs) ---------------
    def _ep_cost(self) -> float:
        return 2.5 if self.c.render else 0.25

    def _train_cost(self, steps: int) -> float:
        per_step = 0.05 if self.c.render else 0.02
        return 5.0 + per_step * steps * self.c.batch_size / 64

    # ---- phase A: per task and pipeline seed, up to the validation of the sweep ---------------
    def phase_a(self) -> list[Job]:
        c, jobs = self.c, []
        for task in c.tasks:
            for p in range(c.pipeline_seeds):
                k = f"{task}/seed{p}"
                sd = (p + 1) * 1_000_000
                jobs.append(Job(f"{k}/demos", job_session, dict(
                    task=c.demo_task or task, policy="expert", operator="none", episodes=c.demo_episodes,
                    bags_dir=self.demos(task, p), seed=sd, expert_noise=c.demo_noise,
                    max_steps=c.max_steps, render=c.render), "session", 0.1 * c.demo_episodes))
                jobs.append(Job(f"{k}/fresh_demos", job_session, dict(
                    task=task, policy="expert", operator="none", episodes=c.interaction_episodes,
                    bags_dir=self.fresh_demos(task, p), seed=sd + 500_000, expert_noise=c.demo_noise,
                    max_steps=c.max_steps, render=c.render), "session", 0.1 * c.interaction_episodes))
                jobs.append(Job(f"{k}/base", job_train, dict(
                    method="bc", demos=[self.demos(task, p)], data=[], init=c.policy_kind,
                    out=os.path.dirname(self.base_policy(task, p)), steps=c.base_steps, lr=c.base_lr,
                    batch_size=c.batch_size, seed=p, cache_dir=self.cache, policy=c.policy,
                    checkpoint_steps=[c.base_steps], overrides=c.method_overrides.get("bc", {})),
                    "train", self._train_cost(c.base_steps), deps=(f"{k}/demos",)))
                jobs.append(Job(f"{k}/round0", job_session, dict(
                    task=task, policy=self.base_policy(task, p), operator="scripted",
                    episodes=c.interaction_episodes, bags_dir=self.round_dir(task, p, 0),
                    seed=2_000_000 + 10_000 * p, expert_noise=0.0, max_steps=c.max_steps,
                    render=c.render, operator_noise=c.operator_noise, operator_config=c.operator),
                    "session", self._ep_cost() * 2 * c.interaction_episodes, deps=(f"{k}/base",)))
                if "fresh_matched" in c.methods:
                    jobs.append(Job(f"{k}/fresh_matched", job_match_fresh_ref, dict(
                        fresh_dir=self.fresh_demos(task, p), corrections=("job", f"{k}/round0"),
                        out_dir=self.matched_demos(task, p), jobs_dir=os.path.join(self.out, "jobs")),
                        "session", 1.0, deps=(f"{k}/fresh_demos", f"{k}/round0")))
                jobs.append(self._eval_job(f"{k}/test/base", task, self.base_policy(task, p),
                                           c.test_episodes, TEST_SEED0, (f"{k}/base",)))
                for m in c.methods:
                    method, overrides = c.trainer(m)
                    demos, data, sources = self.method_data(task, p, m)
                    deps = (f"{k}/base", *sources)
                    for lr in c.sweep_lrs:
                        for name, steps in self.sweep_runs(m, lr):
                            run = f"{k}/sweep/{name}"
                            jobs.append(Job(run, job_train, dict(
                                method=method, demos=demos, data=data, init=self.base_policy(task, p),
                                out=os.path.join(self.seed_dir(task, p), "sweep", name),
                                steps=max(steps), lr=lr, batch_size=c.batch_size, seed=p,
                                cache_dir=self.cache, policy=c.policy, checkpoint_steps=steps,
                                overrides=overrides), "train", self._train_cost(max(steps)), deps=deps))
                            for st in steps:
                                jobs.append(self._eval_job(
                                    f"{run}/val{st}", task, ("result", run, str(st)), c.validation_episodes,
                                    VALIDATION_SEED0, (run,)))
        return jobs

    def _eval_job(self, key: str, task: str, policy, episodes: int, seed0: int, deps) -> Job:
        c = self.c
        return Job(key, job_eval_ref, dict(task=task, policy=policy, episodes=episodes, seed0=seed0,
                                           max_steps=c.max_steps, render=c.render, batch=c.eval_batch,
                                           jobs_dir=os.path.join(self.out, "jobs")),
                   "eval", self._ep_cost() * episodes, deps=tuple(deps))

    # ---- selection ---------------------------------------------------------------------------
    def choose(self, results: dict) -> dict:
        """Per task and method: the (lr, steps) with the best mean validation success over the
        pipeline seeds (ties: fewer steps, then the lower lr)."""
        c, chosen = self.c, {}
        for task in c.tasks:
            for m in c.methods:
                table = []
                for lr in c.sweep_lrs:
                    for s in sorted(c.sweep_steps):
                        run = self.sweep_name(m, lr, s)
                        rates = [results[f"{task}/seed{p}/sweep/{run}/val{s}"]["successes"]
                                 / c.validation_episodes for p in range(c.pipeline_seeds)]
                        table.append({"lr": lr, "steps": s, "validation": sum(rates) / len(rates),
                                      "per_seed": rates})
                def rank(r: dict, v: float) -> tuple:
                    return (v, -r["steps"], -r["lr"])

                best = max(table, key=lambda r: rank(r, r["validation"]))
                # How stable the choice is: the setting each pipeline seed alone would choose.
                per_seed = [max(table, key=lambda r, p=p: rank(r, r["per_seed"][p]))
                            for p in range(c.pipeline_seeds)]
                agree = sum((r["lr"], r["steps"]) == (best["lr"], best["steps"]) for r in per_seed)
                chosen[f"{task}/{m}"] = {"lr": best["lr"], "steps": best["steps"],
                                         "validation": best["validation"], "sweep": table,
                                         "per_seed_choice": [[r["lr"], r["steps"]] for r in per_seed],
                                         "seeds_agreeing": agree}
        return chosen

    # ---- phase B: test evaluations of the chosen checkpoints, lifelong rounds ------------------
    def phase_b(self, chosen: dict) -> list[Job]:
        c, jobs = self.c, []
        for task in c.tasks:
            for p in range(c.pipeline_seeds):
                k = f"{task}/seed{p}"
                for m in c.methods:
                    ch = chosen[f"{task}/{m}"]
                    run = f"{k}/sweep/{self.sweep_name(m, ch['lr'], ch['steps'])}"
                    jobs.append(self._eval_job(evaluation_key(task, p, m, chosen), task,
                                               ("result", run, str(ch["steps"])), c.test_episodes,
                                               TEST_SEED0, ()))
                for m in c.lifelong_methods:
                    ch = chosen[f"{task}/{m}"]
                    method, overrides = c.trainer(m)
                    tag = choice_tag(chosen, task, m)
                    lk = lifelong_key(task, p, m, chosen)
                    current = ("result", f"{k}/sweep/{self.sweep_name(m, ch['lr'], ch['steps'])}",
                               str(ch["steps"]))
                    lineage = [self.round_dir(task, p, 0)]
                    prev_train: tuple[str, ...] = ()
                    for r in range(1, c.rounds + 1):
                        sess_key = f"{lk}/round{r}"
                        jobs.append(Job(sess_key, job_session_ref, dict(
                            task=task, policy=current, operator="scripted", episodes=c.round_episodes,
                            bags_dir=self.round_dir(task, p, r, tag), seed=2_000_000 + 10_000 * p + 1000 * r,
                            expert_noise=0.0, max_steps=c.max_steps, render=c.render,
                            jobs_dir=os.path.join(self.out, "jobs"), operator_noise=c.operator_noise,
                            operator_config=c.operator),
                            "session",
                            self._ep_cost() * 2 * c.round_episodes, deps=prev_train))
                        lineage = lineage + [self.round_dir(task, p, r, tag)]
                        if r > 1:  # generation 1 is the comparison's checkpoint, tested above
                            jobs.append(self._eval_job(f"{lk}/test{r}", task, current,
                                                       c.round_test_episodes, TEST_SEED0, prev_train))
                        if r == c.rounds:
                            break
                        train_key = f"{lk}/gen{r + 1}"
                        init = current
                        demos, _, _ = self.method_data(task, p, m)
                        jobs.append(Job(train_key, job_train_ref, dict(
                            method=method, demos=demos, data=list(lineage), init=init,
                            out=os.path.join(self.seed_dir(task, p), "lifelong", tag, f"gen{r + 1}"),
                            steps=ch["steps"], lr=ch["lr"], batch_size=c.batch_size, seed=p,
                            cache_dir=self.cache, policy=c.policy, checkpoint_steps=[ch["steps"]],
                            overrides=overrides,
                            jobs_dir=os.path.join(self.out, "jobs")), "train",
                            self._train_cost(ch["steps"]), deps=(sess_key,) + prev_train))
                        current = ("result", train_key, str(ch["steps"]))
                        prev_train = (train_key,)
        return jobs


# Jobs whose policy comes from another job's result: ("result", job key, step) is resolved in the
# worker from OUT/jobs (the checkpoint directory that job reported).


def _resolve(ref, jobs_dir: str):
    """("result", job key, step) -> that job's checkpoint at the step; ("job", job key) -> the
    job's whole result; anything else as it is."""
    if isinstance(ref, (list, tuple)) and len(ref) in (2, 3) and ref[0] in ("result", "job"):
        with open(os.path.join(jobs_dir, ref[1].replace("/", "__") + ".json")) as f:
            result = json.load(f)
        return result["policies"][ref[2]] if ref[0] == "result" else result
    return ref


def job_eval_ref(task: str, policy, episodes: int, seed0: int, max_steps: int | None, render: bool,
                 batch: int, jobs_dir: str) -> dict:
    out = job_eval(task, _resolve(policy, jobs_dir), episodes, seed0, max_steps, render, batch)
    out["policy"] = _resolve(policy, jobs_dir)
    return out


def job_session_ref(task: str, policy, operator: str, episodes: int, bags_dir: str, seed: int,
                    expert_noise: float, max_steps: int | None, render: bool, jobs_dir: str,
                    operator_noise: float, operator_config: dict | None = None) -> dict:
    return job_session(task, _resolve(policy, jobs_dir), operator, episodes, bags_dir, seed, expert_noise,
                       max_steps, render, operator_noise, operator_config)


def job_match_fresh_ref(fresh_dir: str, corrections, out_dir: str, jobs_dir: str) -> dict:
    return job_match_fresh(fresh_dir, _resolve(corrections, jobs_dir), out_dir)


def job_train_ref(init, jobs_dir: str, **kw) -> dict:
    return job_train(init=_resolve(init, jobs_dir), **kw)


def _record_invocation(out: str, start: float, end: float) -> float:
    """Remember this run's [start, end] in OUT/invocations.json and return the wall time the
    study has taken over all its runs (the union of their intervals: a resumed study adds its
    runs, two runs on different tasks at the same time count once)."""
    path = os.path.join(out, "invocations.json")
    spans = []
    if os.path.exists(path):
        with open(path) as f:
            spans = json.load(f)
    spans.append([start, end])
    with open(path + ".tmp", "w") as f:
        json.dump(spans, f)
    os.replace(path + ".tmp", path)
    total, cur_start, cur_end = 0.0, None, None
    for a, b in sorted(spans):
        if cur_end is None or a > cur_end:
            total += (cur_end - cur_start) if cur_end is not None else 0.0
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    return total + ((cur_end - cur_start) if cur_end is not None else 0.0)


def run_study(config: StudyConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the study; write OUT/results.json, .md, .png; return the results."""
    from apo_ros.demo.study_report import build_results, write_study_results

    t_start = time.time()
    study = Study(config)
    check_resumable(study.out, config)
    runner = JobRunner(study.out, config.workers, _Display(progress, log))
    try:
        jobs_a = study.phase_a()
        results = runner.run(jobs_a, "sweep and validation")
        chosen = study.choose(results)
        jobs_b = study.phase_b(chosen)
        results.update(runner.run(jobs_b, "test and lifelong rounds"))
    finally:
        runner.close()
    job_seconds = sum(r.get("seconds", 0.0) for r in results.values())
    wall = _record_invocation(study.out, t_start, time.time())
    out = build_results(config, results, chosen, wall_s=wall, job_s=job_seconds)
    write_study_results(out, study.out)
    return out


def method_videos_for(config: StudyConfig, results: dict, *, log: Callable[[str], None] = print) -> dict:
    """One video per compared policy (pipeline seed 0 of the first task) on the first test state,
    with the simulated operator, and a grid of them side by side: OUT/videos/."""
    from apo_ros.demo.videos import method_videos

    study = Study(config)
    task = config.tasks[0]
    jobs_dir = os.path.join(study.out, "jobs")
    policies: dict[str, str] = {"base": study.base_policy(task, 0)}
    for m in config.methods:
        e = results["tasks"][task]["policies"][m]
        run = f"{task}/seed0/sweep/{study.sweep_name(m, e['lr'], e['steps'])}"
        policies[m] = _resolve(("result", run, str(e["steps"])), jobs_dir)
    return method_videos(task, TEST_SEED0, policies, os.path.join(study.out, "videos"),
                         max_steps=config.max_steps, log=log)
