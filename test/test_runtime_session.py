"""The in-process session on the real MuJoCo simulator, real bags, the real simulated operator."""

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from apo_ros.cli import main as cli_main  # noqa: E402
from apo_ros.recording.reader import read_episode  # noqa: E402
from apo_ros.runtime.session import OperatorDevice, run_session  # noqa: E402
from apo_ros.sim.operator import SimulatedOperator  # noqa: E402

TASK = "lemon_on_plate"


class DriftPolicy:
    """Deliberately bad: slides sideways and up, away from the lemon, so the operator steps in."""

    policy_id = "drift"

    def select_action(self, obs):
        chunk = np.zeros((2, 7))
        chunk[:, 1], chunk[:, 2], chunk[:, 6] = 0.02, 0.01, 1.0
        return chunk, True

    def reset(self):
        pass


class LoggingOperator(SimulatedOperator):
    """The real simulated operator, remembering what it commanded at each step."""

    def reset(self, env):
        super().reset(env)
        self.log = []

    def step(self, env, proposed_action):
        out = super().step(env, proposed_action)
        self.log.append(None if out is None else np.array(out, dtype=float))
        return out


def bags_info_json(capsys, path):
    assert cli_main(["bags", "info", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def test_bad_policy_gets_corrected_and_bags_carry_the_interventions(tmp_path, capsys):
    op = LoggingOperator(TASK, seed=0)
    logs = []
    original_reset = op.reset

    def reset_and_keep(env):
        if getattr(op, "log", None):
            logs.append(op.log)
        original_reset(env)

    op.reset = reset_and_keep
    summary = run_session(TASK, DriftPolicy(), op, episodes=2, bags_dir=str(tmp_path), seed=0,
                          max_steps=45)
    logs.append(op.log)
    assert summary.interventions >= 2 and summary.policy_id == "drift"
    info = bags_info_json(capsys, tmp_path)
    assert info["totals"]["episodes"] == 2
    assert [e["interventions"] for e in info["episodes"]] == [e.interventions for e in summary.episodes]
    assert info["totals"]["interventions"] == summary.interventions
    assert info["totals"]["human_steps"] == summary.human_steps > 0
    assert info["totals"]["undesirable_steps"] > 0  # K policy steps before each take-over
    for ep_summary, log in zip(summary.episodes, logs):
        ep = read_episode(ep_summary.path, load_images=False)
        assert ep.metadata["operator"] == "LoggingOperator" and ep.outcome in ("success", "failure")
        # every step the operator commanded was executed as human, every other one as policy
        assert ep.sources == ["human" if a is not None else "policy" for a in log]
        # the human command went through the device adapter and the arbiter unchanged
        for step, commanded in zip(ep.steps, log):
            if commanded is not None:
                np.testing.assert_allclose(step.action[:6], commanded[:6], atol=1e-9)
                assert step.action[6] == (0.0 if commanded[6] < 0.5 else 1.0)
                assert step.proposed is not None  # the policy's proposal is kept for training
        spans = ep.interventions()
        assert len(spans) == ep_summary.interventions
        # each intervention is preceded by at least 10 policy steps (the operator's rule)
        assert all(start >= 10 for start, _ in spans)
        # every action is linked to the observation it came from
        assert all(s.observation.stamp_ns > 0 for s in ep.steps)


class NanPolicy:
    policy_id = "nan"

    def select_action(self, obs):
        return np.full((1, 7), np.nan), True

    def reset(self):
        pass


def test_nan_policy_never_reaches_the_arm(tmp_path):
    from apo_ros.sim.env import make_env

    start = make_env(TASK, render=False).reset(0).ee_pose[:3]
    summary = run_session(TASK, NanPolicy(), "none", episodes=1, bags_dir=str(tmp_path), max_steps=8)
    assert summary.filter["rejected"] == 8 and summary.filter["kinds"]["nan"] == 8
    ep = read_episode(summary.episodes[0].path, load_images=False)
    actions = np.stack([s.action for s in ep.steps])
    assert np.all(np.isfinite(actions)) and np.all(actions[:, :6] == 0)
    assert all(s.proposed is None for s in ep.steps)
    np.testing.assert_allclose(ep.steps[-1].observation.ee_pose[:3], start, atol=2e-3)


def test_expert_demos_recorded_as_expert(tmp_path, capsys):
    summary = run_session(TASK, "expert", "none", episodes=1, bags_dir=str(tmp_path), seed=3)
    assert summary.successes == 1 and summary.interventions == 0
    ep = read_episode(summary.episodes[0].path, load_images=False)
    assert set(ep.sources) == {"expert"} and ep.outcome == "success"
    assert ep.metadata["policy_id"] == "expert" and ep.metadata["seed"] == "3"
    # the simulator's object poses (object, then target) are recorded for state-based policies
    first, last = ep.steps[0].observation.object_poses, ep.steps[-1].observation.object_poses
    assert first.shape == (2, 7) and last.shape == (2, 7)
    assert np.linalg.norm(last[0, :3] - first[0, :3]) > 0.05  # the object was carried
    np.testing.assert_allclose(last[1], first[1], atol=1e-6)  # the target stays put
    info = bags_info_json(capsys, tmp_path)
    assert info["totals"]["interventions"] == 0 and info["episodes"][0]["outcome"] == "success"


def test_cli_session_with_a_checkpoint(tmp_path, capsys):
    import torch

    from apo_ros.actions.statistics import ActionStatistics
    from apo_ros.policies import build_policy, policy_id, save_policy

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = ActionStatistics.from_actions(np.concatenate([rng.normal(0, 0.01, (64, 6)),
                                                          rng.uniform(0, 1, (64, 1))], axis=1))
    policy = build_policy("small", stats, instructions=["put the lemon on the plate"], chunk_size=2)
    ckpt = str(tmp_path / "ckpt")
    assert save_policy(policy, ckpt) == policy_id(ckpt)
    bags = tmp_path / "bags"
    rc = cli_main(["session", "--task", TASK, "--policy", ckpt, "--operator", "none", "--episodes", "1",
                   "--max-steps", "6", "--bags", str(bags), "--device", "cpu", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy_id"] == policy_id(ckpt) and out["steps"] == 6
    assert out["latency_ms"]["n"] == 3  # chunks of 2: the policy planned every other step
    ep = read_episode(out["episodes"][0]["path"], load_images=False)
    assert ep.metadata["policy_id"] == policy_id(ckpt) and set(ep.sources) == {"policy"}
    # chunk actions are stamped with the observation their chunk was computed from
    stamps = [s.observation.stamp_ns for s in ep.steps]
    assert stamps[0] == stamps[1] and stamps[2] == stamps[3] and stamps[1] < stamps[2]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["session", "--task", TASK, "--policy", str(tmp_path / "missing"),
                     "--bags", str(tmp_path / "b")]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err
    assert cli_main(["session", "--task", "nope", "--policy", "expert", "--operator", "none",
                     "--bags", str(tmp_path / "b")]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_operator_device_buttons():
    dev = OperatorDevice((0.05,) * 3 + (0.25,) * 3)
    dev.feed(None)
    assert dev.read().buttons == (0, 0, 0, 0)
    dev.feed(np.array([0.025, 0, 0, 0, 0, 0.5, 0.0]))
    s = dev.read()
    assert s.buttons == (1, 0, 1, 0) and s.axes[0] == pytest.approx(0.5) and s.axes[5] == 1.0
    dev.feed(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert dev.read().buttons == (0, 1, 0, 0)
    dev.feed(None)
    assert dev.read().buttons == (0, 0, 0, 1)


class LongChunkPolicy:
    """Plans 8-action chunks of a slow upward drift (so chunk continuations are the norm)."""

    policy_id = "long-chunks"

    def select_action(self, obs):
        chunk = np.zeros((8, 7))
        chunk[:, 2], chunk[:, 6] = 0.002, 1.0
        return chunk, True

    def reset(self):
        pass


class ScheduledOperator:
    """A person who takes over on fixed steps (holding the arm still), and at `knock_at` pushes
    the lemon out of the arm's reach."""

    def __init__(self, human_steps, knock_at=None):
        self.human_steps, self.knock_at = set(human_steps), knock_at
        self.interventions = 0

    def reset(self, env):
        self.interventions = 0

    def step(self, env, proposed_action):
        if env.step_count == self.knock_at:
            adr = env.free_qpos_adr("lemon")
            env.data.qpos[adr:adr + 2] = [0.75, 0.0]
            env.forward()
        return np.r_[np.zeros(6), 1.0] if env.step_count in self.human_steps else None


def test_hand_back_replans_before_the_first_policy_step(tmp_path):
    """No policy action after a hand-back comes from a chunk planned during the intervention:
    the first policy step after each intervention is planned on its own observation."""
    human = list(range(12, 17)) + list(range(30, 37))  # hand-backs at steps 17 and 37
    summary = run_session(TASK, LongChunkPolicy(), ScheduledOperator(human), episodes=1,
                          bags_dir=str(tmp_path), max_steps=45, render=False, cameras=())
    ep = read_episode(summary.episodes[0].path, load_images=False)
    spans = ep.interventions()
    assert spans == [(12, 17), (30, 37)]
    for _start, end in spans:
        first = ep.steps[end]
        assert first.source == "policy"
        assert first.observation.stamp_ns == first.stamp_ns  # planned now, not during the take-over
    # away from hand-backs the chunk is continued as usual (planned 1..7 steps earlier)
    assert ep.steps[5].observation.stamp_ns < ep.steps[5].stamp_ns


def test_an_unrecoverable_episode_ends_with_its_reason_in_the_bag(tmp_path):
    summary = run_session(TASK, LongChunkPolicy(), ScheduledOperator([], knock_at=6), episodes=1,
                          bags_dir=str(tmp_path), max_steps=45, render=False, cameras=())
    episode = summary.episodes[0]
    assert episode.outcome == "failure" and episode.end_reason == "object_left_workspace"
    assert episode.steps < 10  # it ended there, not at the time limit
    ep = read_episode(episode.path, load_images=False)
    assert ep.outcome == "failure" and ep.metadata["end_reason"] == "object_left_workspace"


def test_operator_give_up_and_intervention_outcomes_reach_the_bag(tmp_path):
    from apo_ros.sim.operator import OperatorConfig

    cfg = OperatorConfig(max_intervention_steps=5, give_up_after_timeouts=2, on_track_steps=50,
                         min_policy_steps_before_takeover=2)

    class CloseHigh(LongChunkPolicy):  # closes the gripper far above the lemon: a grasp miss
        def select_action(self, obs):
            chunk, ok = super().select_action(obs)
            chunk[:, 6] = 0.0
            return chunk, ok

    summary = run_session(TASK, CloseHigh(), SimulatedOperator(TASK, cfg, seed=0), episodes=1,
                          bags_dir=str(tmp_path), max_steps=120, render=False, cameras=())
    episode = summary.episodes[0]
    assert episode.end_reason == "operator_gave_up" and episode.outcome == "failure"
    assert episode.intervention_outcomes == ["timed_out", "timed_out"]
    ep = read_episode(episode.path, load_images=False)
    assert ep.metadata["end_reason"] == "operator_gave_up"
    assert ep.metadata["intervention_outcomes"] == "timed_out,timed_out"
