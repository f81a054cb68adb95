"""The flywheel end to end at toy size: every stage runs for real (sim, bags, training of all six
methods, evaluation on shared seeds, a lifelong round) and the results files have the promised shape."""

import json
import os

from apo_ros.cli import main
from apo_ros.demo.flywheel import METHODS, DemoConfig, run_demo
from apo_ros.demo.report import method_entry, wilson_ci
from apo_ros.recording import read_episodes


def test_wilson_interval_properties():
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson_ci(10, 10)
    assert abs(hi - 1.0) < 1e-12 and 0.65 < lo < 0.8
    lo, hi = wilson_ci(5, 10)
    assert lo < 0.5 < hi and abs((0.5 - lo) - (hi - 0.5)) < 1e-9
    assert wilson_ci(50, 100)[1] - wilson_ci(50, 100)[0] < hi - lo  # more trials, narrower
    entry = method_entry([(3, 10), (5, 10)])
    assert entry["success_rate"] == 0.4 and entry["episodes"] == 20 and entry["per_seed"] == [0.3, 0.5]


def test_tiny_flywheel_writes_results(tmp_path):
    out = tmp_path / "demo"
    # base_steps=2: a nearly untrained base drifts, so the simulated operator must step in
    config = DemoConfig(out=str(out), rounds=2, seeds=1, demo_episodes=3, demo_noise=0.0, base_steps=2,
                        interaction_episodes=2, round_episodes=1, method_steps=4, batch_size=8,
                        eval_episodes=2, workers=1, max_steps=60)
    results = run_demo(config, progress=False, log=lambda m: None)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(results["methods"]) == {"base", *METHODS}
    for entry in results["methods"].values():
        assert entry["episodes"] == 2
        assert 0.0 <= entry["ci95"][0] <= entry["success_rate"] <= entry["ci95"][1] <= 1.0
    rounds = results["rounds"]
    assert {(r["round"], r["method"]) for r in rounds} == {
        (r, m) for r in (0, 1, 2) for m in ("apo", "dagger")}
    assert all(0.0 <= r["intervention_ratio"] <= 1.0 for r in rounds)
    assert results["data"]["demo_episodes"] == 3 and results["data"]["interventions"] >= 1
    assert results["data"]["interaction_episodes"] == 2 + 2 * 2
    assert (out / "results.md").read_text().count("|") > 20
    assert (out / "results.png").stat().st_size > 1000
    # every bag is kept and readable: demos, round 0, and both lineages' rounds
    episodes, errors = read_episodes([str(out / "demos"), str(out / "rounds")])
    assert not errors and len(episodes) == 3 + 2 + 2 * 2
    assert {s.source for s in episodes[0].steps} == {"expert"}
    # every method's checkpoint exists and was started from the base
    for m in METHODS:
        assert os.path.exists(out / "methods" / f"{m}_seed0" / "policy" / "apo_policy.json")


def test_demo_rejects_unknown_task(tmp_path, capsys):
    assert main(["demo", "--task", "no_such_task", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "no_such_task" in capsys.readouterr().err
