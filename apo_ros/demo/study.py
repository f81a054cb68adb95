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

The pieces, one module each: `config` (StudyConfig, the compared methods), `keys` (job keys and
their result files), `jobs` (what a worker runs), `runner` (the resumable runner and its progress
display), `plan` (which jobs, the choice of settings), `report` (tables, figure, winner). This
module runs them in order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from apo_ros.demo.config import TEST_SEED0, StudyConfig, check_resumable
from apo_ros.demo.jobs import job_init, resolve
from apo_ros.demo.plan import Study
from apo_ros.demo.report import build_results, write_study_results
from apo_ros.demo.runner import JobRunner, ProgressDisplay, record_invocation, sigterm_interrupts
from apo_ros.demo.videos import method_videos

# StudyConfig is re-exported: callers build one and hand it to run_study
__all__ = ["StudyConfig", "method_videos_for", "run_study"]


def run_study(config: StudyConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the study; write OUT/results.json, .md, .png; return the results."""
    t_start = time.time()
    study = Study(config)
    check_resumable(study.out, config)
    runner = JobRunner(study.out, config.workers, ProgressDisplay(progress, log), initializer=job_init)
    finished = False
    try:
        with sigterm_interrupts():
            jobs_a = study.phase_a()
            results = runner.run(jobs_a, "sweep and validation")
            chosen = study.choose(results)
            jobs_b = study.phase_b(chosen)
            results.update(runner.run(jobs_b, "test and lifelong rounds"))
            finished = True
    finally:
        runner.close(kill=not finished)
    job_seconds = sum(r.get("seconds", 0.0) for r in results.values())
    wall = record_invocation(study.out, t_start, time.time())
    out = build_results(config, results, chosen, wall_s=wall, job_s=job_seconds)
    write_study_results(out, study.out)
    return out


def method_videos_for(config: StudyConfig, results: dict, *, log: Callable[[str], None] = print) -> dict:
    """One video per compared policy (pipeline seed 0 of the first task) on the first test state,
    with the simulated operator, and a grid of them side by side: OUT/videos/."""
    study = Study(config)
    task = config.tasks[0]
    jobs_dir = os.path.join(study.out, "jobs")
    policies: dict[str, str] = {"base": study.base_policy(task, 0)}
    for m in config.methods:
        e = results["tasks"][task]["policies"][m]
        run = f"{task}/seed0/sweep/{study.sweep_name(m, e['lr'], e['steps'])}"
        policies[m] = resolve(("result", run, str(e["steps"])), jobs_dir)
    return method_videos(task, TEST_SEED0, policies, os.path.join(study.out, "videos"),
                         max_steps=config.max_steps, log=log)
