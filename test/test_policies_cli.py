"""`apo-ros policy new` / `apo-ros policy info`."""

from __future__ import annotations

import json

import pytest
import torch

from apo_ros.actions.statistics import ActionStatistics, save_statistics
from apo_ros.cli import main
from apo_ros.policies import load_policy


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_new_small_then_info(tmp_path, capsys):
    out = str(tmp_path / "small")
    assert main(["policy", "new", "small", "-o", out, "--instructions", "open it", "close it"]) == 0
    assert "small policy" in capsys.readouterr().out
    assert main(["policy", "info", out, "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "small" and info["verified"] is True
    assert info["config"]["instructions"] == ["open it", "close it"]
    weights = load_policy(out).state_dict().values()
    assert info["parameters"]["model.safetensors"] == sum(p.numel() for p in weights)
    assert info["statistics"]["q99"][:6] == [0.05] * 6  # the identity-like default
    assert info["action_tokenizer"]["id_range"] == [0, 255]


def test_new_small_default_instructions_are_the_task_instructions_once(tmp_path, capsys):
    # task variants (lemon_on_plate_easy) share an instruction; the list must not repeat it
    out = str(tmp_path / "small")
    assert main(["policy", "new", "small", "-o", out]) == 0
    capsys.readouterr()
    assert main(["policy", "info", out, "--json"]) == 0
    instructions = json.loads(capsys.readouterr().out)["config"]["instructions"]
    assert instructions == ["put the lemon on the plate", "insert the square into the stick",
                            "hang the cup on the rack"]


def test_new_vla_with_openvla_statistics(tmp_path, capsys):
    stats = ActionStatistics(q01=[-0.02] * 6 + [0.0], q99=[0.03] * 6 + [1.0], mask=[True] * 6 + [False])
    stats_file = tmp_path / "dataset_statistics.json"
    save_statistics(str(stats_file), {"bridge_orig": stats, "fractal": stats})  # OpenVLA: keyed by dataset
    out = str(tmp_path / "vla")
    assert main(["policy", "new", "--kind", "vla_bins", "--out", out, "--stats-from", str(stats_file),
                 "--stats-key", "bridge_orig", "--no-lora", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["policy", "info", out]) == 0
    text = capsys.readouterr().out
    assert "(vla_bins)" in text and "backbone/model.safetensors" in text and "0.03" in text
    assert not load_policy(out, device="cpu").uses_lora


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["policy", "info", str(tmp_path / "missing")]) == 2
    assert "no such policy checkpoint" in capsys.readouterr().err
    stats_file = tmp_path / "two.json"
    stats = ActionStatistics(q01=[-1.0] * 7, q99=[1.0] * 7, mask=[True] * 7)
    save_statistics(str(stats_file), {"a": stats, "b": stats})
    assert main(["policy", "new", "--kind", "small", "-o", str(tmp_path / "x"),
                 "--stats-from", str(stats_file)]) == 2
    assert "choose one by name" in capsys.readouterr().err
    assert main(["policy", "new", "-o", str(tmp_path / "y")]) == 2
    assert "give the kind" in capsys.readouterr().err
