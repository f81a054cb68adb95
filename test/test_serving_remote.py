"""`apo-ros serve` as a real subprocess: openpi's own client talks to it, a session with a remote
policy records what the local checkpoint would, and a server killed mid-episode gives a hold and
then a recovery, never a stale action."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from serving_helpers import INSTRUCTION, REPO, ServeProcess, make_checkpoint, unused_port  # noqa: E402

from apo_ros.cli import main as cli_main  # noqa: E402
from apo_ros.policies import load_policy  # noqa: E402
from apo_ros.recording.reader import read_episode  # noqa: E402
from apo_ros.runtime.session import run_session  # noqa: E402
from apo_ros.serving.client import RemotePolicy  # noqa: E402

TASK = "lemon_on_plate"
OPENPI_VENV = REPO / ".venv-openpi-client"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("remote") / "ckpt")
    make_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def server(checkpoint):
    proc = ServeProcess(checkpoint)
    yield proc
    proc.stop()


OPENPI_SCRIPT = r"""
import json, sys
import numpy as np
from openpi_client import websocket_client_policy

port, out = int(sys.argv[1]), sys.argv[2]
client = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port)
rng = np.random.default_rng(0)
obs = {"observation/image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
       "observation/wrist_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
       "observation/state": np.array([0.5, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0, 1.0], np.float32),
       "prompt": sys.argv[3]}
first = client.infer(obs)
try:
    client.infer({"prompt": sys.argv[3]})
    error = None
except RuntimeError as err:
    error = str(err)
second = client.infer(obs)
np.savez(out, actions=first["actions"], again=second["actions"], **{k.replace("/", "."): v
         for k, v in obs.items() if k != "prompt"})
print(json.dumps({"metadata": client.get_server_metadata(), "numpy": np.__version__, "error": error,
                  "policy_id": first["policy_id"], "statistics_id": first["statistics_id"],
                  "ok": bool(first["ok"]), "dtype": str(first["actions"].dtype),
                  "infer_ms": first["server_timing"]["infer_ms"]}))
"""


def test_openpi_client_gets_actions_from_apo_ros_serve(server, checkpoint, tmp_path, one_thread):
    python = OPENPI_VENV / "bin" / "python"
    if not (OPENPI_VENV / ".installed").exists():
        failed = Path(f"{OPENPI_VENV}.failed")
        why = failed.read_text().strip() if failed.exists() else "not built"
        pytest.skip(f"openpi-client venv {OPENPI_VENV} unavailable ({why}); `make openpi-client-venv` "
                    "builds it from test/openpi_client_requirements.txt")
    out = tmp_path / "openpi.npz"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    run = subprocess.run([str(python), "-c", OPENPI_SCRIPT, str(server.port), str(out), INSTRUCTION],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["numpy"].startswith("1.")  # really openpi-client's own numpy < 2 environment
    local = load_policy(checkpoint, device="cpu")
    meta = result["metadata"]
    assert meta["policy_id"] == result["policy_id"] == local.policy_id
    assert meta["statistics_id"] == result["statistics_id"] == local.stats.statistics_id()
    assert meta["action_layout"] == ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    assert meta["image_keys"] == {"front": "observation/image", "wrist": "observation/wrist_image"}
    assert result["ok"] and result["infer_ms"] > 0
    # the malformed request raised openpi-client's server-error RuntimeError, naming the problem,
    # and the same connection answered the next request
    assert "bad request" in result["error"] and "observation/image" in result["error"]
    data = np.load(out)
    assert data["actions"].shape == (2, 7) and np.array_equal(data["actions"], data["again"])
    # the same actions as the checkpoint run in this process on the same observation
    from apo_ros.observation import Observation

    state = data["observation.state"]
    obs = Observation(images={"front": data["observation.image"], "wrist": data["observation.wrist_image"]},
                      joint_positions=np.zeros(0), ee_pose=state[:7], gripper=float(state[7]),
                      instruction=INSTRUCTION)
    expected, ok = local.select_action(obs)
    assert ok and np.array_equal(data["actions"], expected)


def _episodes(summary):
    return [read_episode(e.path, load_images=False) for e in summary.episodes]


def test_session_with_a_remote_policy_records_what_the_local_one_does(server, checkpoint, tmp_path,
                                                                      capsys, one_thread):
    local = run_session(TASK, checkpoint, "none", episodes=2, bags_dir=str(tmp_path / "local"), seed=5,
                        max_steps=10, device="cpu")
    # a generous timeout: under a loaded test machine a hold would (rightly) change the actions
    rc = cli_main(["session", "--task", TASK, "--policy", server.url + "?timeout_s=30", "--operator", "none",
                   "--episodes", "2", "--seed", "5", "--max-steps", "10", "--bags", str(tmp_path / "remote"),
                   "--json"])
    assert rc == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["policy_id"] == local.policy_id == load_policy(checkpoint).policy_id
    stats_id = load_policy(checkpoint).stats.statistics_id()
    for ep_local, ep_remote_summary in zip(_episodes(local), remote["episodes"]):
        ep_remote = read_episode(ep_remote_summary["path"], load_images=False)
        assert len(ep_remote.steps) == len(ep_local.steps) == 10
        np.testing.assert_array_equal(ep_remote.actions(), ep_local.actions())
        for a, b in zip(ep_remote.steps, ep_local.steps):
            assert a.proposed is not None and np.array_equal(a.proposed, b.proposed)
            assert a.observation.stamp_ns == b.observation.stamp_ns
        # provenance: the server's ids, exactly as the local checkpoint's
        for key, value in (("policy_id", local.policy_id), ("stats_id", stats_id)):
            assert ep_remote.metadata[key] == ep_local.metadata[key] == value


def test_sim_eval_with_a_remote_policy(server, checkpoint, capsys):
    assert cli_main(["sim", "eval", "--task", TASK, "--policy", server.url + "?timeout_s=30",
                     "--episodes", "1", "--max-steps", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 1 and result["mean_steps"] == 4


def test_unreachable_server_is_a_one_line_cli_error(capsys, tmp_path):
    url = f"ws://127.0.0.1:{unused_port()}"
    assert cli_main(["sim", "eval", "--task", TASK, "--policy", url + "?connect_timeout_s=1",
                     "--episodes", "1"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach the policy server at {url}" in err
    assert cli_main(["serve", "--policy", str(tmp_path / "missing")]) != 0
    assert "no such policy checkpoint directory" in capsys.readouterr().err


def test_serve_on_a_taken_port_is_a_one_line_error(server, checkpoint, capsys):
    assert cli_main(["serve", "--policy", checkpoint, "--host", "127.0.0.1", "--port", str(server.port),
                     "--device", "cpu"]) != 0
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{server.port}" in err and "Traceback" not in err


class KillingPolicy:
    """A RemotePolicy whose server is SIGKILLed at plan `kill_at` and restarted (same port) at
    plan `restart_at`; it records what every plan returned."""

    reports_policy_id = True

    def __init__(self, server: ServeProcess, kill_at: int, restart_at: int):
        self.server, self.kill_at, self.restart_at = server, kill_at, restart_at
        self.remote = RemotePolicy(server.url + "?timeout_s=2&backoff_s=0.05&max_backoff_s=0.2")
        self.plans: list[tuple[int, bool]] = []

    @property
    def policy_id(self):
        return self.remote.policy_id

    @property
    def statistics_id(self):
        return self.remote.statistics_id

    @property
    def failure_reason(self):
        return self.remote.failure_reason

    def select_action(self, obs):
        if len(self.plans) == self.kill_at:
            self.server.kill()
        if len(self.plans) == self.restart_at:
            self.server.start()  # blocks until it listens again
            time.sleep(0.25)  # past the client's longest backoff: the next plan reconnects
        chunk, ok = self.remote.select_action(obs)
        self.plans.append((obs.stamp_ns, ok))
        return chunk, ok

    def reset(self):
        self.remote.reset()


@pytest.mark.slow  # starts the server twice and waits out a hold: ~10 s
def test_server_killed_mid_episode_holds_then_recovers_without_stale_actions(checkpoint, tmp_path,
                                                                              caplog, one_thread):
    server = ServeProcess(checkpoint)
    try:
        policy = KillingPolicy(server, kill_at=3, restart_at=6)
        summary = run_session(TASK, policy, "none", episodes=1, bags_dir=str(tmp_path), seed=2,
                              max_steps=24)
    finally:
        server.stop()
    ok = [o for _, o in policy.plans]
    assert ok[:3] == [True] * 3 and ok[3:6] == [False] * 3 and all(ok[6:]) and len(ok) > 8
    ep = read_episode(summary.episodes[0].path)
    local = load_policy(checkpoint, device="cpu")
    held, fresh = 0, 0
    for i, step in enumerate(ep.steps):
        if not np.all(step.action[:6] == 0):
            # every executed policy action is the local checkpoint's action for the observation it
            # is stamped with, at its position in that observation's chunk (the gripper command
            # clipped to [0, 1] by the safety filter)
            index = sum(1 for s in ep.steps[:i] if s.observation.stamp_ns == step.observation.stamp_ns)
            expected = local.select_action(step.observation)[0][index].copy()
            expected[6] = np.clip(expected[6], 0.0, 1.0)
            np.testing.assert_allclose(step.action, expected, rtol=0, atol=1e-12)
            fresh += index == 0
        else:  # a hold: zero motion, no proposal
            held += 1
            assert step.proposed is None
    assert held == 3 and fresh == ok.count(True)
    # after the outage, the first action is planned from the observation of its own step
    recovered = next(s for s in ep.steps[6:] if s.proposed is not None)
    assert recovered.observation.stamp_ns == recovered.stamp_ns
    assert ep.metadata["policy_id"] == local.policy_id
    assert any("holding (zero motion)" in r.message for r in caplog.records)
    assert any("is back after" in r.message for r in caplog.records)
