"""Runs from scratch in the study: DAgger as its authors define it (aggregate the data, train a new
policy on all of it with the base's recipe) and its matched control, planned, chosen, and carried
through the lifelong rounds; a method defined against a frozen reference cannot start from scratch."""

import pytest

from apo_ros.demo.config import StudyConfig
from apo_ros.demo.plan import Study


def config(tmp_path, **kw) -> StudyConfig:
    fields = dict(tasks=["lemon_on_plate"], out=str(tmp_path), pipeline_seeds=2, base_steps=800, base_lr=2e-3,
                  sweep_lrs=[1e-4, 3e-4], sweep_steps=[100, 300],
                  methods=["dagger", "dagger_retrain", "fresh_matched_retrain"], lifelong_methods=[],
                  rounds=0)
    fields.update(kw)
    return StudyConfig(**fields)


def sweep_jobs(study: Study, method: str) -> list:
    return [j for j in study.phase_a() if f"/sweep/{method}_lr" in j.key and "/val" not in j.key]


def test_a_retrain_is_one_run_of_the_base_recipe_from_a_new_policy(tmp_path):
    study = Study(config(tmp_path))
    runs = sweep_jobs(study, "dagger_retrain")
    assert len(runs) == 2  # one per pipeline seed: no sweep
    for p, job in enumerate(runs):
        kw = job.kwargs
        assert (kw["method"], kw["init"], kw["steps"], kw["lr"]) == ("dagger", "state", 800, 2e-3)
        assert kw["seed"] == p
        assert kw["data"] == [study.round_dir("lemon_on_plate", p, 0)]
        assert kw["checkpoint_steps"] == [800]  # one cosine run, as the base is trained
    fine_tunes = sweep_jobs(study, "dagger")
    assert len(fine_tunes) == 2 * 2 * 2 and all(j.kwargs["init"].endswith("base/policy") for j in fine_tunes)


def test_the_retrained_control_trains_on_the_matched_expert_steps(tmp_path):
    c = config(tmp_path)
    study = Study(c)
    keys = [j.key for j in study.phase_a()]
    assert "lemon_on_plate/seed0/fresh_matched" in keys  # the matched subset is drawn for it
    job = sweep_jobs(study, "fresh_matched_retrain")[0]
    assert job.kwargs["method"] == "bc" and job.kwargs["data"] == []
    assert job.kwargs["demos"][1] == study.matched_demos("lemon_on_plate", 0)
    assert c.is_control("fresh_matched_retrain") and not c.is_control("dagger_retrain")
    assert c.trainer("dagger_retrain") == ("dagger", {})  # the study's keys are not TrainConfig's


def test_the_choice_and_the_lifelong_generations_of_a_retrain(tmp_path):
    c = config(tmp_path, lifelong_methods=["dagger", "dagger_retrain"], rounds=2)
    study = Study(c)
    results = {}
    for job in study.phase_a():
        if "/val" in job.key:
            results[job.key] = {"successes": 7 if "retrain" in job.key else 3}
    chosen = study.choose(results)
    assert chosen["lemon_on_plate/dagger_retrain"]["lr"] == 2e-3
    assert chosen["lemon_on_plate/dagger_retrain"]["steps"] == 800
    assert len(chosen["lemon_on_plate/dagger_retrain"]["sweep"]) == 1
    assert len(chosen["lemon_on_plate/dagger"]["sweep"]) == 4
    gens = {j.key: j.kwargs for j in study.phase_b(chosen) if "/gen" in j.key}
    retrain = [kw for k, kw in gens.items() if "dagger_retrain" in k]
    fine_tune = [kw for k, kw in gens.items() if "dagger_retrain" not in k]
    assert retrain and all(kw["init"] == "state" and kw["steps"] == 800 for kw in retrain)
    assert fine_tune and all(kw["init"][0] == "result" for kw in fine_tune)  # from the deployed generation
    assert all(len(kw["data"]) == 2 for kw in retrain)  # round 0 and round 1: everything so far


def test_scratch_is_refused_for_a_method_with_a_reference_and_bad_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match="frozen reference"):
        config(tmp_path, variants={"apo_scratch": {"method": "apo", "init": "scratch"}},
               methods=["apo_scratch"])
    with pytest.raises(ValueError, match="init must be one of"):
        config(tmp_path, variants={"d": {"method": "dagger", "init": "zero"}}, methods=["d"])
    with pytest.raises(ValueError, match="lifelong_methods"):
        config(tmp_path, lifelong_methods=["fresh_matched_retrain"])
