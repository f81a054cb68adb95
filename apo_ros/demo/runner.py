"""A resumable job runner: runs jobs whose dependencies are done, `workers` at a time in worker
processes, caches every result in OUT/jobs/<key>.json (a rerun skips cached jobs), and shows jobs
done, elapsed time and an estimate of the time left; and the record of a study's wall time over
all its runs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from apo_ros.demo.keys import job_file


@dataclass
class Job:
    key: str  # unique; OUT/jobs/<key>.json holds the result
    fn: Callable[..., dict]
    kwargs: dict
    kind: str  # session | train | eval (for time estimates)
    cost: float  # estimated seconds on one worker
    deps: tuple[str, ...] = ()


class ProgressDisplay:
    """Jobs done / total, elapsed, and the estimated time left (rich when interactive)."""

    def __init__(self, enabled: bool, log: Callable[[str], None]):
        self.enabled = enabled
        self.log = log
        self._progress = None
        self._task = None
        self._last_log = 0.0

    def start(self, title: str, total: float) -> None:
        if self.enabled:
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

    def __init__(self, out: str, workers: int, display: ProgressDisplay,
                 initializer: Callable[[], None] | None = None):
        self.jobs_dir = os.path.join(out, "jobs")
        os.makedirs(self.jobs_dir, exist_ok=True)
        self.workers = workers
        self.display = display
        self.results: dict[str, dict] = {}
        self._ratio: dict[str, list[float]] = {}  # kind -> [actual / estimated]
        # `initializer` sets up each worker process (or this one, with one worker)
        self._ex = (ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=initializer)
                    if workers > 1 else None)
        if self._ex is None and initializer is not None:
            initializer()

    def _path(self, key: str) -> str:
        return job_file(self.jobs_dir, key)

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

    def close(self, *, kill: bool = False) -> None:
        """Stop the worker processes: once idle (a finished run), or at once (`kill`: an
        interrupted run; its running jobs are redone when the study resumes)."""
        if self._ex is None:
            return
        if kill:
            for proc in list((getattr(self._ex, "_processes", None) or {}).values()):
                proc.terminate()
        self._ex.shutdown(wait=True, cancel_futures=True)


@contextmanager
def sigterm_interrupts():
    """Within the block SIGTERM (`kill PID`, a scheduler's stop) interrupts like Ctrl-C, so the
    run's cleanup stops its worker processes instead of leaving them running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def record_invocation(out: str, start: float, end: float) -> float:
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
