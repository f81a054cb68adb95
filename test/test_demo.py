"""The study behind `apo-ros demo` at toy size: every stage runs for real (sim, bags, the sweep of
every method, validation, selection, test evaluation on shared seeds, lifelong rounds), methods
really start from the base, a rerun resumes, and the statistics are what they claim."""

import json

import numpy as np
import pytest

from apo_ros.cli import main
from apo_ros.demo.config import learning_methods, study_methods
from apo_ros.demo.report import POLICY_LABEL
from apo_ros.demo.stats import bootstrap_difference, bootstrap_mean, bootstrap_ratio
from apo_ros.demo.study import StudyConfig, run_study
from apo_ros.errors import ConfigError


def test_bootstrap_interval_contains_between_seed_variance():
    rng = np.random.default_rng(0)
    # three pipeline seeds with very different rates: the interval must be much wider than the
    # binomial interval of 300 pooled episodes (about +-0.05)
    spread = np.stack([rng.random(100) < p for p in (0.1, 0.5, 0.9)]).astype(float)
    wide = bootstrap_mean(spread)
    assert wide["mean"] == pytest.approx(spread.mean())
    assert wide["ci95"][1] - wide["ci95"][0] > 0.3
    assert wide["per_seed"] == pytest.approx(list(spread.mean(1)))
    same = np.stack([rng.random(100) < 0.5 for _ in range(3)]).astype(float)
    narrow = bootstrap_mean(same)
    assert narrow["ci95"][1] - narrow["ci95"][0] < 0.2
    assert narrow["ci95"][0] < 0.5 < narrow["ci95"][1]


def test_paired_difference_cancels_shared_difficulty():
    rng = np.random.default_rng(1)
    hard = rng.random((3, 100)) < 0.5  # states every policy fails on
    a = (~hard).astype(float)
    b = a.copy()
    b[:, :10] = 0  # b fails on 10 more states per seed
    d = bootstrap_difference(a, b)
    assert d["diff"] == pytest.approx(a.mean() - b.mean())
    assert d["ci95"][0] > 0 and d["p_above_zero"] > 0.99
    none = bootstrap_difference(a, a)
    assert none["diff"] == 0 and none["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="shape"):
        bootstrap_difference(a, b[:2])
    r = bootstrap_ratio([[1, 3], [2, 2]], [[10, 10], [10, 10]])
    assert r["mean"] == pytest.approx(0.2) and r["per_seed"] == pytest.approx([0.2, 0.2])


def test_batched_evaluation_matches_one_at_a_time():
    import torch

    from apo_ros.actions.statistics import ActionStatistics
    from apo_ros.policies import build_policy
    from apo_ros.sim.evaluate import evaluate

    torch.manual_seed(0)
    stats = ActionStatistics.from_actions(np.random.default_rng(0).uniform(-0.02, 0.02, (50, 7)))
    policy = build_policy("state", stats, instructions=["put the lemon on the plate"], chunk_size=2)
    one = evaluate("lemon_on_plate", policy, episodes=3, seed0=7, render=False, cameras=(), max_steps=12)
    many = evaluate("lemon_on_plate", policy, episodes=3, seed0=7, render=False, cameras=(), max_steps=12,
                    batch=2)
    assert [r["steps"] for r in one["per_episode"]] == [r["steps"] for r in many["per_episode"]]
    assert [r["seed"] for r in many["per_episode"]] == [7, 8, 9]


def _tiny(out, **kw):
    base = dict(tasks=["lemon_on_plate"], out=str(out), pipeline_seeds=2, demo_episodes=3,
                demo_noise=0.0, base_steps=3, batch_size=8, interaction_episodes=2,
                sweep_lrs=[1e-4, 1e-3], sweep_steps=[2, 4], sweep_schedule="constant",
                validation_episodes=2, test_episodes=3,
                rounds=2, round_episodes=1, round_test_episodes=3, workers=1, max_steps=40,
                bootstrap_draws=200, eval_batch=2, methods=[*study_methods(), "apo_natural"],
                lifelong_methods=["apo", "dagger"])
    base.update(kw)
    return StudyConfig(**base)


COMPARED = (*study_methods(), "apo_natural")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """One toy study shared by the tests below: (its OUT, its results)."""
    out = tmp_path_factory.mktemp("demo") / "study"
    return out, run_study(_tiny(out), progress=False, log=lambda m: None)


# the tests sharing the study run on one xdist worker, so it runs once (about a minute: slow)
def study_tests(test):
    return pytest.mark.slow(pytest.mark.xdist_group("demo_tiny_study")(test))


@study_tests
def test_tiny_study_writes_its_results_as_json_markdown_and_figure(tiny_study):
    out, results = tiny_study
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    # the policy table: a row per policy in the tables' order, each with its success and interval
    md = (out / "results.md").read_text()
    rows = md.split("| policy | success")[1].split("\n\n")[0].splitlines()[2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    policies = results["tasks"]["lemon_on_plate"]["policies"]
    assert [c[0] for c in cells] == ["base", *learning_methods(), POLICY_LABEL["fresh"],
                                     POLICY_LABEL["fresh_matched"], "apo_natural (apo: sampling=natural)"]
    for c, name in zip(cells, ["base", *study_methods(), "apo_natural"]):
        e = policies[name]
        assert c[1] == f"{e['mean']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]", name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@study_tests
def test_tiny_study_reports_every_policy_with_its_interval_and_chosen_setting(tiny_study):
    _, results = tiny_study
    t = results["tasks"]["lemon_on_plate"]
    assert set(t["policies"]) == {"base", *COMPARED}
    for name, entry in t["policies"].items():
        # the same number of test episodes per pipeline seed: the mean is the mean of the seeds'
        assert len(entry["per_seed"]) == 2
        assert entry["mean"] == pytest.approx(sum(entry["per_seed"]) / 2), name
        assert 0.0 <= entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1] <= 1.0, name
        if name != "base":  # chosen by the same sweep (every setting validated), on validation
            assert (entry["lr"], entry["steps"]) in {(lr, s) for lr in (1e-4, 1e-3) for s in (2, 4)}
            assert sorted((r["lr"], r["steps"]) for r in t["sweep"][name]) == [
                (1e-4, 2), (1e-4, 4), (1e-3, 2), (1e-3, 4)], name


@study_tests
def test_tiny_study_pairs_every_method_with_the_base_and_apo_with_every_other(tiny_study):
    # (a toy base solves nothing: the values of the differences are checked in test_demo_report.py)
    _, results = tiny_study
    t = results["tasks"]["lemon_on_plate"]
    assert set(t["paired"]) == ({f"{m} - base" for m in COMPARED}
                                | {f"apo - {m}" for m in COMPARED if m != "apo"})
    for name, d in t["paired"].items():
        assert d["ci95"][0] <= d["diff"] <= d["ci95"][1] and len(d["per_seed"]) == 2, name


@study_tests
def test_tiny_study_runs_the_lifelong_rounds_from_the_deployments(tiny_study):
    _, results = tiny_study
    t = results["tasks"]["lemon_on_plate"]
    r0 = t["round0"]
    assert set(t["rounds"]) == {"apo", "dagger"}
    for m, rows in t["rounds"].items():
        assert [r["round"] for r in rows] == [0, 1, 2]
        # round 0 is the base's deployment: the base's test success and round 0's take-overs
        assert rows[0]["success"]["mean"] == t["policies"]["base"]["mean"]
        assert rows[0]["interventions"] == r0["interventions"]
        assert rows[0]["deployment_episodes"] == r0["episodes"] == 2 * 2  # 2 seeds x 2 episodes
        # round 1 is the comparison's checkpoint; later rounds one deployment per seed
        assert rows[1]["success"]["mean"] == t["policies"][m]["mean"]
        assert [r["deployment_episodes"] for r in rows[1:]] == [2, 2]
        assert all(0.0 <= r["intervention_ratio"]["mean"] <= 1.0 for r in rows)


@study_tests
def test_tiny_study_starts_every_method_from_its_seeds_base(tiny_study):
    """Every method, every pipeline seed: trained from that seed's base (its policy id, and weights
    far closer to the base than a fresh initialization is)."""
    import torch

    from apo_ros.policies import build_policy, load_policy

    out, _ = tiny_study
    for p in range(2):
        base_dir = out / "lemon_on_plate" / f"seed{p}" / "base" / "policy"
        base = load_policy(str(base_dir), device="cpu")
        base_w = torch.cat([x.detach().flatten() for x in base.parameters()])
        fresh = build_policy("state", base.stats, instructions=["put the lemon on the plate"],
                             **_tiny(out).policy)
        fresh_w = torch.cat([x.detach().flatten() for x in fresh.parameters()])
        for m in COMPARED:
            run = out / "lemon_on_plate" / f"seed{p}" / "sweep" / f"{m}_lr1e-3_to4"
            facts = json.loads((run / "train_config.json").read_text())
            init, config = facts["init"], facts["config"]
            if m.startswith("apo"):  # the variant is apo with its own sampling, tuned the same way
                assert config["method"] == "apo"
                assert config["sampling"] == ("natural" if m == "apo_natural" else None), m
            assert init["init_policy_id"] == base.policy_id, m
            trained = load_policy(str(run / "policy"), device="cpu")
            w = torch.cat([x.detach().flatten() for x in trained.parameters()])
            assert (w - base_w).norm() < 0.2 * (fresh_w - base_w).norm(), m


@study_tests
def test_tiny_study_resumes_without_redoing_work(tiny_study):
    out, results = tiny_study
    mtime = (out / "jobs" / "lemon_on_plate__seed0__base.json").stat().st_mtime
    again = run_study(_tiny(out), progress=False, log=lambda m: None)
    assert (out / "jobs" / "lemon_on_plate__seed0__base.json").stat().st_mtime == mtime
    assert again["tasks"] == results["tasks"]
    # the test of each method names the setting chosen for it (a resumed study that chooses
    # otherwise evaluates its new choice instead of reusing the old one's result)
    chosen = results["tasks"]["lemon_on_plate"]["policies"]["apo"]
    assert (out / "jobs" / f"lemon_on_plate__seed0__test__apo_lr{chosen['lr']:.0e}_s{chosen['steps']}.json"
            .replace("e-0", "e-")).exists()


@study_tests
def test_tiny_study_refuses_to_resume_with_other_result_shaping_settings(tiny_study):
    out, _ = tiny_study
    with pytest.raises(ConfigError, match="base_steps: 3 there, 5 now"):
        run_study(_tiny(out, base_steps=5), progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="variants"):  # a variant redefined under its old name
        run_study(_tiny(out, variants={"apo_natural": {"method": "apo", "k": 3}}), progress=False,
                  log=lambda m: None)


def test_a_variant_must_name_a_trainable_method(tmp_path):
    with pytest.raises(ValueError, match="variant 'x'"):
        _tiny(tmp_path, variants={"x": {"method": "nonsense"}})


def test_demo_rejects_bad_options_in_one_line(tmp_path, capsys):
    assert main(["demo", "--tasks", "[no_such_task]", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no_such_task" in err and "Traceback" not in err
    assert main(["demo", "--pipeline_seeds", "two", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "pipeline_seeds" in capsys.readouterr().err
