"""`bags info` / `bags plot` on an `apo-ros demo` output folder: per-round and per-method summaries."""

from __future__ import annotations

import json

import pytest

from apo_ros.cli import main
from apo_ros.recording.groups import run_group
from apo_ros.recording.synthetic import write_synthetic_episode

CORRECTED = ["policy"] * 12 + ["human"] * 3 + ["policy"] * 5  # 20 steps, 3 human
CLEAN = ["policy"] * 10


def _demo_tree(root):
    """The folder layout `apo-ros demo` writes, with small real bags in it."""
    for p in (0, 1):
        seed = root / "lemon_on_plate" / f"seed{p}"
        write_synthetic_episode(str(seed / "demos" / "d0"), ["expert"] * 8, size=8, seed=p)
        write_synthetic_episode(str(seed / "rounds" / "round0" / "r0"), CORRECTED, size=8, seed=p)
        write_synthetic_episode(str(seed / "rounds" / "round0" / "r1"), CORRECTED, size=8, seed=p,
                                outcome="failure")
        write_synthetic_episode(str(seed / "rounds" / "round1" / "apo_lr1e-4_s300" / "a0"), CLEAN, size=8,
                                seed=p)
        write_synthetic_episode(str(seed / "rounds" / "round1" / "dagger_lr3e-5_s300" / "g0"), CORRECTED,
                                size=8, seed=p, outcome="failure")
    (root / "study_config.json").write_text("{}")


def test_run_group_reads_the_demo_layout(tmp_path):
    g = run_group(str(tmp_path / "t" / "seed3" / "rounds" / "round2" / "apo_lr1e-4_s300" / "bag"))
    assert (g.task, g.seed, g.part, g.round, g.method) == ("t", 3, "round", 2, "apo")
    g = run_group(str(tmp_path / "t" / "seed0" / "rounds" / "round0" / "bag"))
    assert (g.part, g.round, g.method) == ("round", 0, "base")
    assert run_group(str(tmp_path / "t" / "seed0" / "fresh_demos" / "bag")).method == "expert"
    assert run_group(str(tmp_path / "some" / "bags" / "bag")) is None


def test_info_summarizes_rounds_and_methods(tmp_path, capsys):
    _demo_tree(tmp_path)
    assert main(["bags", "info", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rounds = {(r["part"], r["round"], r["method"]): r for r in doc["rounds"]}
    assert set(rounds) == {("demos", -1, "expert"), ("round", 0, "base"), ("round", 1, "apo"),
                           ("round", 1, "dagger")}
    base = rounds[("round", 0, "base")]
    assert (base["episodes"], base["successes"], base["pipeline_seeds"]) == (4, 2, 2)
    assert (base["interventions"], base["human_steps"], base["steps"]) == (4, 12, 80)
    assert base["intervention_ratio"] == round(12 / 80, 6)
    apo = rounds[("round", 1, "apo")]
    assert (apo["episodes"], apo["success_rate"], apo["interventions"]) == (2, 1.0, 0)
    methods = {m["method"]: m for m in doc["methods"]}
    assert set(methods) == {"base", "apo", "dagger"}  # demos are not a deployment
    assert methods["dagger"]["success_rate"] == 0.0 and methods["dagger"]["human_steps"] == 6
    assert main(["bags", "info", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "per round:" in text and "per method (deployment rounds):" in text
    assert "round1  apo" in text


@pytest.mark.slow  # renders a figure of every episode: ~10 s
def test_plot_writes_the_summary_next_to_the_timeline(tmp_path, capsys):
    _demo_tree(tmp_path / "demo_out")
    out = tmp_path / "timeline.png"
    assert main(["bags", "plot", str(tmp_path / "demo_out"), "-o", str(out)]) == 0
    assert "timeline_summary.png" in capsys.readouterr().out
    import matplotlib.image as mpimg

    img = mpimg.imread(str(tmp_path / "timeline_summary.png"))
    assert img.shape[0] > 100 and img.shape[1] > 400
    # plain bag folders get no summary
    write_synthetic_episode(str(tmp_path / "plain" / "ep"), CLEAN, size=8)
    assert main(["bags", "plot", str(tmp_path / "plain"), "-o", str(tmp_path / "p.png")]) == 0
    assert not (tmp_path / "p_summary.png").exists()
