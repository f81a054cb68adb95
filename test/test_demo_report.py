"""The study's report on job results made by hand, where every figure is known: the paired
differences point the right way, the lifelong rounds read the right jobs, round 0 is the base's
deployment, and the markdown shows each figure in the tables' order."""

import pytest

from apo_ros.demo.config import StudyConfig
from apo_ros.demo.keys import evaluation_key, lifelong_key
from apo_ros.demo.plan import Study
from apo_ros.demo.report import build_results, study_markdown

TASK = "lemon_on_plate"
# test successes [pipeline seed][test episode] per policy
TESTS = {"base": [[1, 0, 0, 0], [0, 0, 0, 0]],  # 1 of 8
         "dagger": [[1, 1, 0, 0], [1, 0, 0, 0]],  # 3 of 8
         "apo": [[1, 1, 1, 0], [1, 1, 0, 0]],  # 5 of 8
         "fresh": [[0, 0, 0, 0], [0, 0, 0, 0]]}  # 0 of 8
APO_GEN2_TEST = [[1, 1, 1, 1], [1, 1, 1, 0]]  # 7 of 8


def _session(human_steps: list[int], ends=("time_limit",)) -> dict:
    episodes = [{"human_steps": h, "steps": 10, "end_reason": ends[i % len(ends)],
                 "intervention_outcomes": ["recovered"] * (h > 0)} for i, h in enumerate(human_steps)]
    return {"per_episode": episodes, "interventions": sum(h > 0 for h in human_steps),
            "human_steps": sum(human_steps), "steps": 10 * len(human_steps), "successes": 0}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    c = StudyConfig(tasks=[TASK], pipeline_seeds=2, methods=["dagger", "apo", "fresh"],
                    lifelong_methods=["apo"], sweep_lrs=[1e-3], sweep_steps=[10], validation_episodes=4,
                    test_episodes=4, rounds=2, round_episodes=2, round_test_episodes=4,
                    out=str(tmp_path_factory.mktemp("report")), bootstrap_draws=500)
    study = Study(c)
    results = {f"{TASK}/seed{p}/sweep/{study.sweep_name(m, 1e-3, 10)}/val10": {"successes": 2}
               for m in c.methods for p in range(2)}
    chosen = study.choose(results)
    for p in range(2):
        for name, rows in TESTS.items():
            results[evaluation_key(TASK, p, name, chosen)] = {
                "success": rows[p], "failures": ["dropped" if not s else None for s in rows[p]]}
        lk = lifelong_key(TASK, p, "apo", chosen)
        results[f"{TASK}/seed{p}/round0"] = _session([3, 1] if p == 0 else [0, 0], ends=("time_limit", None))
        results[f"{lk}/round1"] = _session([2, 0] if p == 0 else [0, 0])
        results[f"{lk}/round2"] = _session([0, 0])
        results[f"{lk}/test2"] = {"success": APO_GEN2_TEST[p]}
    return build_results(c, results, chosen, wall_s=60, job_s=120)


def test_paired_differences_point_the_right_way(report):
    paired = report["tasks"][TASK]["paired"]
    assert paired["apo - base"]["diff"] == pytest.approx(4 / 8)
    assert paired["dagger - base"]["diff"] == pytest.approx(2 / 8)
    assert paired["fresh - base"]["diff"] == pytest.approx(-1 / 8)
    assert paired["apo - dagger"]["diff"] == pytest.approx(2 / 8)
    assert paired["apo - fresh"]["diff"] == pytest.approx(5 / 8)
    assert paired["apo - base"]["ci95"][0] > 0  # every seed, every resample: apo solves more
    assert paired["fresh - base"]["ci95"][1] <= 0
    w = report["tasks"][TASK]["winner"]
    assert (w["method"], w["above_base"]) == ("apo", True)


def test_lifelong_rounds_read_the_base_the_chosen_checkpoint_then_each_generation(report):
    rows = report["tasks"][TASK]["rounds"]["apo"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    # success: the base, the comparison's apo checkpoint, generation 2
    assert [r["success"]["mean"] for r in rows] == pytest.approx([1 / 8, 5 / 8, 7 / 8])
    # each round's share of steps by the operator, over its deployments (4 episodes of 10 steps)
    assert [r["intervention_ratio"]["mean"] for r in rows] == pytest.approx([4 / 40, 2 / 40, 0.0])
    assert [r["interventions"] for r in rows] == [2, 1, 0]
    assert [r["deployment_episodes"] for r in rows] == [4, 4, 4]


def test_round_zero_and_the_base_failures_are_counted(report):
    t = report["tasks"][TASK]
    assert t["round0"] == {"episodes": 4, "interventions": 2, "human_steps": 4, "steps": 40,
                           "intervention_outcomes": {"recovered": 2},
                           "episode_ends": {"time_limit": 2, "success": 2}}
    assert t["base_test_failures"] == {"dropped": 7, "success_or_time_limit": 1}
    assert t["policies"]["apo"]["recovery"]["mean"] == pytest.approx(4 / 7)  # of the 7 the base failed
    assert t["policies"]["apo"]["retention"]["mean"] == pytest.approx(1.0)


def test_markdown_shows_the_figures_in_the_tables_order(report):
    md = study_markdown(report)
    table = md.split("| policy | success")[1].split("\n\n")[0].splitlines()[2:]
    names = [row.split("|")[1].strip().split(" ")[0] for row in table]
    assert names == ["base", "dagger", "apo", "fresh-expert"]
    assert table[2].split("|")[2].strip().startswith("0.625 [")
    assert "| apo - base | +0.500 [" in md
    assert "| 2 | apo | 0.875 [" in md and "**lemon_on_plate: best method apo (0.625, +0.500" in md
