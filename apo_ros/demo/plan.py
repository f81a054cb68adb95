"""The study plan: where every output goes, the jobs of phase A (per task and pipeline seed: demos,
base, round 0, the sweep of every method and its validation), the choice of each method's setting
from the validation results, and the jobs of phase B (test evaluations of the chosen checkpoints,
lifelong rounds). Job keys and directories are those of `apo_ros.demo.keys`: a resumed study finds
its cached results under the same names.
"""

from __future__ import annotations

import os

from apo_ros.demo.config import BASE_METHOD, TEST_SEED0, VALIDATION_SEED0, StudyConfig
from apo_ros.demo.jobs import (
    job_eval_ref,
    job_match_fresh_ref,
    job_session,
    job_session_ref,
    job_train,
    job_train_ref,
)
from apo_ros.demo.keys import choice_tag, evaluation_key, lifelong_key, lr_name
from apo_ros.demo.runner import Job


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
        data = self.c.data_of(m)
        if data == "fresh":
            return [self.demos(task, p), self.fresh_demos(task, p)], [], (f"{k}/fresh_demos",)
        if data == "fresh_matched":
            return [self.demos(task, p), self.matched_demos(task, p)], [], (f"{k}/fresh_matched",)
        return [self.demos(task, p)], [self.round_dir(task, p, 0)], (f"{k}/round0",)

    def round_dir(self, task: str, p: int, r: int, method: str | None = None) -> str:
        d = os.path.join(self.seed_dir(task, p), "rounds", f"round{r}")
        return os.path.join(d, method) if method else d

    def sweep_name(self, method: str, lr: float, steps: int | None = None) -> str:
        """The sweep run that gives a method's checkpoint at (lr, steps). Constant schedule: one run
        per lr, trained to the longest step count of the sweep with a checkpoint at every count
        (a study resumed with other step counts trains new runs). Cosine: one run per setting,
        its learning rate decayed to zero over exactly that many steps (as is a run from scratch:
        the base's recipe)."""
        if self._run_per_setting(method):
            return f"{method}_lr{lr_name(lr)}_s{steps}_cosine"
        return f"{method}_lr{lr_name(lr)}_to{max(self.c.sweep_steps)}"

    def sweep_runs(self, method: str) -> list[tuple[float, str, list[int]]]:
        """(lr, run name, the step counts it checkpoints) for every run of a method."""
        settings = self.c.settings(method)
        if self._run_per_setting(method):
            return [(lr, self.sweep_name(method, lr, st), [st]) for lr, st in settings]
        lrs = list(dict.fromkeys(lr for lr, _ in settings))
        return [(lr, self.sweep_name(method, lr), sorted(self.c.sweep_steps)) for lr in lrs]

    def _run_per_setting(self, method: str) -> bool:
        """One cosine run per (lr, steps) rather than one constant-rate run per lr."""
        return self.c.sweep_schedule == "cosine" or self.c.init_of(method) == "scratch"

    def run_init(self, task: str, p: int, method: str) -> str:
        """What a method's sweep run starts from: the base policy, or a new policy of the kind."""
        return self.c.policy_kind if self.c.init_of(method) == "scratch" else self.base_policy(task, p)

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
                    method=BASE_METHOD, demos=[self.demos(task, p)], data=[], init=c.policy_kind,
                    out=os.path.dirname(self.base_policy(task, p)), steps=c.base_steps, lr=c.base_lr,
                    batch_size=c.batch_size, seed=p, cache_dir=self.cache, policy=c.policy,
                    checkpoint_steps=[c.base_steps], overrides=c.method_overrides.get(BASE_METHOD, {})),
                    "train", self._train_cost(c.base_steps), deps=(f"{k}/demos",)))
                jobs.append(Job(f"{k}/round0", job_session, dict(
                    task=task, policy=self.base_policy(task, p), operator="scripted",
                    episodes=c.interaction_episodes, bags_dir=self.round_dir(task, p, 0),
                    seed=2_000_000 + 10_000 * p, expert_noise=0.0, max_steps=c.max_steps,
                    render=c.render, operator_noise=c.operator_noise, operator_config=c.operator),
                    "session", self._ep_cost() * 2 * c.interaction_episodes, deps=(f"{k}/base",)))
                if any(c.data_of(m) == "fresh_matched" for m in c.methods):
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
                    for lr, name, steps in self.sweep_runs(m):
                        run = f"{k}/sweep/{name}"
                        jobs.append(Job(run, job_train, dict(
                            method=method, demos=demos, data=data, init=self.run_init(task, p, m),
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
                for lr, s in c.settings(m):
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
                        # a run from scratch retrains on everything so far; a fine-tune goes on
                        # from the generation that was deployed
                        init = c.policy_kind if c.init_of(m) == "scratch" else current
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
