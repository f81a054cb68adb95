"""The names of a study's jobs and of their result files: `OUT/jobs/<key with / as __>.json`.

A job's key says what it computed (task, pipeline seed, stage, method and its setting); a study
resumed with the same OUT reuses every result whose key it asks for again.
"""

from __future__ import annotations

import os


def lr_name(lr: float) -> str:
    """A learning rate as it appears in keys and directory names (1e-3, 3e-4)."""
    return f"{lr:.0e}".replace("e-0", "e-")


def job_file(jobs_dir: str, key: str) -> str:
    """Where the result of the job `key` is cached."""
    return os.path.join(jobs_dir, key.replace("/", "__") + ".json")


def choice_tag(chosen: dict, task: str, method: str) -> str:
    """The chosen setting of a method on a task, as it appears in job keys and directories."""
    ch = chosen[f"{task}/{method}"]
    return f"{method}_lr{lr_name(ch['lr'])}_s{ch['steps']}"


def evaluation_key(task: str, p: int, method: str, chosen: dict) -> str:
    """The test evaluation of the checkpoint chosen for `method` (its setting is in the key: a
    study resumed with another sweep that chooses differently evaluates the new choice)."""
    if method == "base":
        return f"{task}/seed{p}/test/base"
    return f"{task}/seed{p}/test/{choice_tag(chosen, task, method)}"


def lifelong_key(task: str, p: int, method: str, chosen: dict) -> str:
    return f"{task}/seed{p}/lifelong/{choice_tag(chosen, task, method)}"
