"""Shared pieces of the serving tests: a small checkpoint, synthetic observations, and `apo-ros
serve` as a real subprocess (its own torch, its own port)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from apo_ros.observation import Observation

INSTRUCTION = "put the lemon on the plate"
REPO = Path(__file__).resolve().parent.parent


def make_checkpoint(path: str, seed: int = 0, chunk_size: int = 2) -> str:
    """An untrained small policy (random weights from `seed`) saved at `path`; returns its id."""
    import torch

    from apo_ros.policies import build_policy, save_policy
    from apo_ros.policies.testing import default_statistics

    torch.manual_seed(seed)
    policy = build_policy("small", default_statistics(0.03 + 0.01 * seed), instructions=[INSTRUCTION],
                          chunk_size=chunk_size, device="cpu")
    return save_policy(policy, path)


def observation(stamp_ns: int, seed: int | None = None, size: int = 64) -> Observation:
    rng = np.random.default_rng(stamp_ns if seed is None else seed)
    return Observation(
        images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in ("front", "wrist")},
        joint_positions=rng.normal(size=9), ee_pose=np.array([0.5, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0]),
        gripper=1.0, instruction=INSTRUCTION, stamp_ns=stamp_ns)


def unused_port() -> int:
    """A port nothing listens on right now (bound to 0 and released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """`apo-ros serve` in a subprocess; `.url` once it listens. `kill()` is SIGKILL (a crash)."""

    def __init__(self, checkpoint: str, port: int = 0, extra: tuple[str, ...] = ()):
        self.checkpoint, self.extra = checkpoint, extra
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "apo_ros.cli", "serve", "--policy", self.checkpoint,
               "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=str(REPO))
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        match = re.search(r"on ws://[^:]+:(\d+)", line[0]) if line else None
        if match is None:
            self.stop()
            raise RuntimeError(f"apo-ros serve did not start: {line} {self.proc.stderr.read()[-2000:]}")
        self.port = int(match.group(1))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> str:
        """Stop it (SIGTERM, as Ctrl-C would) and return its stderr."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return err
