"""`evaluate()` with every policy shape it accepts (the expert, chunked policies, plain callables and
factories, checkpoint directories), and the `apo-ros sim` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apo_ros.cli import main
from apo_ros.sim.evaluate import evaluate


def test_evaluate_expert_reports_the_summary():
    result = evaluate("lemon_on_plate", "expert", episodes=2, seed0=4)
    assert {"task", "episodes", "successes", "success_rate", "mean_steps"} <= set(result)
    assert result["episodes"] == 2 and result["successes"] == 2 and result["success_rate"] == 1.0
    assert [r["seed"] for r in result["per_episode"]] == [4, 5]
    assert result["mean_steps"] == np.mean([r["steps"] for r in result["per_episode"]])


class ChunkPolicy:
    """select_action -> (chunk [T, 7], ok), like apo_ros TokenPolicy; fails every 3rd call."""

    def __init__(self):
        self.calls = 0
        self.resets = 0
        self.seen_shapes = set()

    def reset(self):
        self.resets += 1

    def select_action(self, observation):
        self.calls += 1
        self.seen_shapes.update(img.shape for img in observation.images.values())
        chunk = np.zeros((4, 7))
        chunk[:, 2] = 0.01  # up
        chunk[:, 6] = 0.0  # close
        return chunk, self.calls % 3 != 0


def test_evaluate_runs_chunks_one_step_at_a_time():
    policy = ChunkPolicy()
    result = evaluate("hang_cup", policy, episodes=2, max_steps=10, image_size=32)
    assert result["successes"] == 0 and result["mean_steps"] == 10
    assert policy.resets == 2
    assert policy.seen_shapes == {(32, 32, 3)}
    # 10 steps per episode from 4-step chunks with every third decode failing (a failed decode
    # is one zero-motion step): 3 chunks + 1 failure per episode, give or take the boundary.
    assert 6 <= policy.calls <= 10


def test_evaluate_accepts_plain_callables_and_factories():
    steps = []

    def up(observation):
        steps.append(observation.stamp_ns)
        return np.array([0, 0, 0.01, 0, 0, 0, 1.0])

    evaluate("square_on_stick", up, episodes=1, max_steps=5, render=False)
    assert len(steps) == 5 and steps == sorted(steps)

    built = []

    def factory(env):
        built.append(env.task.name)
        return lambda observation: np.zeros((2, 7))

    result = evaluate("square_on_stick", factory, episodes=2, max_steps=4, render=False,
                      factory=True)
    assert built == ["square_on_stick"] * 2 and result["mean_steps"] == 4
    with pytest.raises(ValueError, match="unknown policy"):
        evaluate("square_on_stick", "oracle", episodes=1)


def test_sim_eval_json(capsys):
    assert main(["sim", "eval", "--task", "square_on_stick", "--policy", "expert",
                 "--episodes", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"task", "episodes", "successes", "success_rate", "mean_steps"}
    assert out["task"] == "square_on_stick" and out["episodes"] == 2
    assert out["success_rate"] == 1.0


def test_sim_view_writes_a_contact_sheet(tmp_path, capsys):
    import cv2

    path = tmp_path / "sheet.png"
    assert main(["sim", "view", "--task", "lemon_on_plate", "--seed", "1", "-o", str(path),
                 "--size", "48", "--frames", "4"]) == 0
    image = cv2.imread(str(path))
    assert image is not None
    # Title bar + two camera rows of 48 px frames, four columns.
    assert image.shape[0] > 2 * 48 and image.shape[1] > 4 * 48
    assert "success" in capsys.readouterr().out


def test_sim_commands_report_user_errors(tmp_path, capsys):
    assert main(["sim", "eval", "--task", "stack_blocks", "--episodes", "1"]) == 2
    assert "unknown task" in capsys.readouterr().err
    missing = tmp_path / "no_such_checkpoint"
    assert main(["sim", "eval", "--task", "hang_cup", "--policy", str(missing)]) == 2
    assert "checkpoint directory" in capsys.readouterr().err
    empty = tmp_path / "empty_checkpoint"
    empty.mkdir()
    assert main(["sim", "eval", "--task", "hang_cup", "--policy", str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err
    assert main(["sim", "tasks"]) == 0
    assert "insert the square into the stick" in capsys.readouterr().out


def test_sim_eval_loads_a_checkpoint_directory(tmp_path, capsys):
    """`--policy DIR` goes through apo_ros.policies.checkpoint.load_policy and runs the policy on
    rendered observations (an untrained small policy: it fails, but it runs)."""
    checkpoint = tmp_path / "small"
    assert main(["policy", "new", "small", "-o", str(checkpoint)]) == 0
    capsys.readouterr()
    assert main(["sim", "eval", "--task", "lemon_on_plate", "--policy", str(checkpoint),
                 "--episodes", "1", "--max-steps", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"task": "lemon_on_plate", "episodes": 1, "successes": 0, "success_rate": 0.0,
                   "mean_steps": 3.0}
