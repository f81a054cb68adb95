"""`apo-ros bench serve`: what running the policy behind `apo-ros serve` costs per action chunk.

For a 2-camera 64x64 and a 2-camera 224x224 observation, the same small-policy checkpoint is run
(a) in this process (`select_action`, the baseline) and (b) through `apo-ros serve` in its own
process on localhost (`RemotePolicy.select_action`: msgpack encoding, websocket round trip,
decoding, the server's inference). They take turns on the same observations (never at the same
time, both under the same machine load), each with one torch thread (on a CPU a second thread
only adds contention on a small shared machine); p50 / p99 in milliseconds and the request size.
The overhead is what the hop adds on localhost (on a LAN add the wire time: a 224x224 request is
~0.3 MB, ~2.5 ms at 1 Gbit/s).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch

from apo_ros.observation import Observation
from apo_ros.policies import build_policy, load_policy, save_policy
from apo_ros.policies.testing import default_statistics
from apo_ros.serving.client import RemotePolicy
from apo_ros.serving.protocol import observation_to_request, packb

CASES = (("2 cameras 64x64", 64), ("2 cameras 224x224", 224))
INSTRUCTION = "put the lemon on the plate"


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "n": len(seconds)}


def _start_server(checkpoint: str, device: str) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "apo_ros.cli", "serve", "--policy", checkpoint, "--host", "127.0.0.1",
           "--port", "0", "--device", device, "--watch-s", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(180)
    match = re.search(r"on ws://[^:]+:(\d+)", line[0]) if line else None
    if match is None:
        proc.kill()
        raise RuntimeError(f"apo-ros serve did not start: {line}")
    return proc, int(match.group(1))


def _case(size: int, n: int, device: str, workdir: str) -> dict:
    torch.manual_seed(0)
    checkpoint = os.path.join(workdir, f"small_{size}")
    save_policy(build_policy("small", default_statistics(), instructions=[INSTRUCTION], image_size=size,
                             chunk_size=4, device="cpu"), checkpoint)
    rng = np.random.default_rng(0)
    observations = [Observation(images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                                        for c in ("front", "wrist")},
                                joint_positions=rng.normal(size=9),
                                ee_pose=np.array([0.5, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0]), gripper=1.0,
                                instruction=INSTRUCTION, stamp_ns=i + 1) for i in range(n + 5)]

    def timed(policy, obs: Observation) -> float:
        t0 = time.perf_counter()
        _chunk, ok = policy.select_action(obs)
        elapsed = time.perf_counter() - t0
        if not ok:
            raise RuntimeError(f"policy failed: {getattr(policy, 'failure_reason', '')}")
        return elapsed

    local = load_policy(checkpoint, device=device)
    local.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    proc, port = _start_server(checkpoint, device)
    in_process, remote_times, transport = [], [], []
    try:
        with RemotePolicy(f"ws://127.0.0.1:{port}?timeout_s=30") as remote:
            for i, obs in enumerate(observations):  # alternating: both see the same machine load
                t_local, t_remote = timed(local, obs), timed(remote, obs)
                if i >= 5:  # warm-up excluded
                    in_process.append(t_local)
                    remote_times.append(t_remote)
                    transport.append(t_remote - remote.last_server_infer_s)
    finally:
        torch.set_num_threads(threads)
        proc.terminate()
        proc.wait(timeout=30)
    local_p, remote_p = _percentiles(in_process), _percentiles(remote_times)
    return {"in_process": local_p, "remote": remote_p,
            "added_p50_ms": round(remote_p["p50_ms"] - local_p["p50_ms"], 2),
            # round trip minus the server's own inference: encoding, websocket, decoding
            "transport": _percentiles(transport),
            "request_bytes": len(packb(observation_to_request(observations[0]))),
            "device": device}


def run(quick: bool = False) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 60 if quick else 300
    with tempfile.TemporaryDirectory(prefix="apo_bench_serve_") as workdir:
        return {name: _case(size, n, device, workdir) for name, size in CASES}
