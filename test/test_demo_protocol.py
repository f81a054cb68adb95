"""The study's protocol pieces: the matched fresh-expert control's data, the recovery and
retention figures, the stability of the validation choice, and the named winner."""

import os

import numpy as np
import pytest

from apo_ros.demo.config import StudyConfig
from apo_ros.demo.jobs import job_match_fresh, job_session
from apo_ros.demo.keys import evaluation_key
from apo_ros.demo.plan import Study
from apo_ros.demo.report import build_results, winner, winner_line
from apo_ros.demo.study import method_videos_for, run_study


def test_matched_control_takes_whole_expert_episodes_until_the_corrections_steps(tmp_path):
    fresh = tmp_path / "fresh"
    rec = job_session("lemon_on_plate", "expert", "none", 3, str(fresh), seed=5, expert_noise=0.0,
                      max_steps=40, render=False)
    lengths = [e["steps"] for e in rec["per_episode"]]
    assert len(lengths) == 3 and all(n > 0 for n in lengths)
    # fewer steps than one episode: one whole episode
    one = job_match_fresh(str(fresh), {"human_steps": 1}, str(tmp_path / "m1"))
    assert one["episodes"] == 1 and one["steps"] == lengths[0]
    assert len(os.listdir(tmp_path / "m1")) == 1
    # just over the first episode: two; more than all of them: all three, and no more
    two = job_match_fresh(str(fresh), {"human_steps": lengths[0] + 1}, str(tmp_path / "m2"))
    assert two["episodes"] == 2 and two["steps"] == lengths[0] + lengths[1]
    every = job_match_fresh(str(fresh), {"human_steps": 10_000}, str(tmp_path / "m2"))
    assert every["episodes"] == 3 and len(os.listdir(tmp_path / "m2")) == 3  # rewritten, not added to


def test_winner_is_the_best_learning_method_and_says_whether_it_beats_the_base():
    policies = {"base": {"mean": 0.3}, "dagger": {"mean": 0.45}, "apo": {"mean": 0.35},
                "fresh": {"mean": 0.6}}
    paired = {"dagger - base": {"diff": 0.15, "ci95": [0.05, 0.25]},
              "apo - base": {"diff": 0.05, "ci95": [-0.05, 0.15]},
              "fresh - base": {"diff": 0.3, "ci95": [0.2, 0.4]}}
    w = winner(policies, paired, ["dagger", "apo", "fresh"])  # the control is not a method to run
    assert w["method"] == "dagger" and w["above_base"]
    assert "above the base" in winner_line("t", w)
    paired["dagger - base"]["ci95"] = [-0.01, 0.3]
    w = winner(policies, paired, ["dagger", "apo", "fresh"])
    assert not w["above_base"] and "not distinguishable" in winner_line("t", w)


def test_lifelong_methods_must_learn_from_deployments():
    with pytest.raises(ValueError, match="lifelong_methods"):
        StudyConfig(lifelong_methods=["fresh"])
    with pytest.raises(ValueError, match="lifelong_methods"):
        StudyConfig(methods=["dagger"], lifelong_methods=["apo"])
    with pytest.raises(ValueError, match="unknown task"):
        StudyConfig(demo_task="no_such_task")


def test_choice_stability_and_recovery_in_the_report(tmp_path):
    c = StudyConfig(tasks=["lemon_on_plate"], pipeline_seeds=2, methods=["dagger"], lifelong_methods=[],
                    sweep_lrs=[1e-4, 1e-3], sweep_steps=[10], validation_episodes=4, test_episodes=4,
                    rounds=0, out=str(tmp_path), bootstrap_draws=200)
    study = Study(c)
    val = {1e-4: [4, 0], 1e-3: [3, 3]}  # pooled best 1e-3 (6 of 8); seed 0 alone prefers 1e-4
    results = {f"lemon_on_plate/seed{p}/sweep/{study.sweep_name('dagger', lr, 10)}/val10": {"successes": v[p]}
               for lr, v in val.items() for p in range(2)}
    chosen = study.choose(results)
    ch = chosen["lemon_on_plate/dagger"]
    assert ch["lr"] == 1e-3 and ch["seeds_agreeing"] == 1 and ch["per_seed_choice"][0] == [1e-4, 10]
    base = [[1, 1, 0, 0], [1, 0, 0, 0]]
    dagger = [[1, 0, 1, 1], [1, 0, 1, 0]]  # solves 3 of the base's 5 failures, keeps 2 of its 3 successes
    for p in range(2):
        for name, rows in (("base", base), ("dagger", dagger)):
            results[evaluation_key("lemon_on_plate", p, name, chosen)] = {"success": rows[p], "failures": []}
        results[f"lemon_on_plate/seed{p}/round0"] = {"per_episode": [], "interventions": 0, "human_steps": 0,
                                                     "steps": 0, "successes": 0}
    out = build_results(c, results, chosen, wall_s=1, job_s=1)
    d = out["tasks"]["lemon_on_plate"]["policies"]["dagger"]
    assert d["recovery"]["mean"] == pytest.approx(3 / 5)
    assert d["retention"]["mean"] == pytest.approx(2 / 3)
    assert d["seeds_agreeing"] == 1
    assert np.isclose(out["tasks"]["lemon_on_plate"]["winner"]["minus_base"], 2 / 8)


def test_demo_films_every_compared_policy_on_one_test_state(tmp_path):
    import av

    c = StudyConfig(tasks=["lemon_on_plate"], out=str(tmp_path / "s"), pipeline_seeds=1, demo_episodes=2,
                    base_steps=3, batch_size=8, interaction_episodes=1, methods=["dagger"],
                    lifelong_methods=[], sweep_lrs=[1e-3], sweep_steps=[2], validation_episodes=1,
                    test_episodes=2, rounds=0, workers=1, max_steps=12, bootstrap_draws=50, eval_batch=2)
    results = run_study(c, progress=False, log=lambda m: None)
    videos = method_videos_for(c, results, log=lambda m: None)
    assert set(videos) >= {"base", "dagger", "grid", "still"}
    with av.open(videos["grid"]) as f:
        stream = f.streams.video[0]
        frames = sum(1 for _ in f.decode(stream))
        # two policies side by side: wider than one policy's own video
        grid_width = stream.codec_context.width
    with av.open(videos["base"]) as f:
        assert grid_width > f.streams.video[0].codec_context.width
    assert frames >= 12
