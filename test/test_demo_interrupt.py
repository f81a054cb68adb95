"""Stopping a study with SIGTERM (`kill PID`, a job scheduler) stops its worker processes too and
exits as an interrupt, leaving its output folder to resume from: nothing keeps burning the cores."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.add(int(stat.parent.name))
    return kids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_the_study_and_its_workers(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "apo_ros.cli", "demo", "--quick", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            workers |= {k for k in children_of(proc.pid)
                        if "multiprocessing" in Path(f"/proc/{k}/cmdline").read_text(errors="replace")}
            time.sleep(0.2)
        assert len(workers) >= 2, "the study never started its workers"
        time.sleep(1.0)  # jobs under way
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        deadline = time.monotonic() + 20
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        outlived = [w for w in workers if alive(w)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:  # a failing run must not leave them burning the cores either
            if alive(w):
                os.kill(w, signal.SIGKILL)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert not outlived, "worker processes outlived the study"
    assert (out / "study_config.json").exists()  # the study is there to resume
