"""Intervention labels on hand-built episodes: the K policy steps before each take-over are
undesirable, every other step desirable; the Sirius classes; the no-op filter."""

from __future__ import annotations

import numpy as np
import pytest

from apo_ros.actions.statistics import ActionStatistics
from apo_ros.observation import Observation
from apo_ros.recording import SIRIUS_CLASSES, Episode, Step, label_episode, label_sources, read_episode
from apo_ros.recording.synthetic import write_synthetic_episode


def _episode(sources, actions=None) -> Episode:
    n = len(sources)
    actions = np.full((n, 7), 0.5) if actions is None else np.asarray(actions, dtype=float)
    obs = Observation(images={}, joint_positions=np.zeros(0), ee_pose=np.zeros(7), gripper=1.0,
                      instruction="")
    return Episode(path="hand-built", steps=[Step(obs, actions[i], s, i) for i, s in enumerate(sources)])


def _idx(mask) -> list[int]:
    return np.flatnonzero(mask).tolist()


def test_no_intervention_means_nothing_undesirable():
    lab = label_episode(_episode(["policy"] * 20))
    assert lab.num_undesirable == 0 and lab.desirable.all() and lab.intervention_spans == []
    assert set(lab.sirius_names()) == {"rollout"}


def test_intervention_at_the_start_has_no_policy_steps_before_it():
    lab = label_episode(_episode(["human"] * 3 + ["policy"] * 5))
    assert lab.num_undesirable == 0 and lab.intervention_spans == [(0, 3)]
    assert lab.sirius_names() == ["intervention"] * 3 + ["rollout"] * 5


def test_k_policy_steps_before_each_intervention_back_to_back():
    sources = ["policy"] * 12 + ["human"] * 2 + ["policy"] * 3 + ["human"] * 2 + ["policy"] * 4
    lab = label_episode(_episode(sources), k=10)
    # first intervention at 12 takes 2..11; the second at 17 has only 14..16 before it (the
    # count stops at the earlier intervention's human steps)
    assert _idx(lab.undesirable) == list(range(2, 12)) + [14, 15, 16]
    assert lab.intervention_spans == [(12, 14), (17, 19)]
    assert not lab.undesirable[lab.is_human].any()  # human steps are always desirable
    assert (lab.desirable == ~lab.undesirable).all()
    assert _idx(lab.is_human) == [12, 13, 17, 18]


def test_intervention_at_the_end_and_k_larger_than_available():
    lab = label_episode(_episode(["policy"] * 5 + ["human"] * 3), k=10)
    assert _idx(lab.undesirable) == [0, 1, 2, 3, 4]
    lab0 = label_episode(_episode(["policy"] * 5 + ["human"] * 3), k=0)
    assert lab0.num_undesirable == 0


def test_k_is_configurable():
    sources = ["policy"] * 8 + ["human"]
    assert _idx(label_episode(_episode(sources), k=3).undesirable) == [5, 6, 7]
    assert _idx(label_episode(_episode(sources), k=1).undesirable) == [7]


def test_noop_filter_skips_noop_policy_steps_when_counting_k():
    big, noop = np.full(7, 0.2), np.array([0.001] * 6 + [1.0])
    actions = [big, big, noop, big, noop, noop, big]
    sources = ["policy"] * 6 + ["human"]
    plain = label_episode(_episode(sources, actions), k=3)
    assert _idx(plain.undesirable) == [3, 4, 5]
    filt = label_episode(_episode(sources, actions), k=3, noop_filter=True)
    assert _idx(filt.undesirable) == [0, 1, 3]  # 5, 4 and 2 are no-ops: skipped, not counted
    assert _idx(filt.noop) == [2, 4, 5]


def test_noop_filter_on_normalized_actions_with_statistics():
    # raw 0.005 per axis: sum 0.03 < 0.05 is a no-op in raw units, but with q01/q99 = -/+0.01 it
    # normalizes to 0.5 per axis (sum 3.0), a real motion
    small = np.array([0.005] * 6 + [1.0])
    stats = ActionStatistics(q01=[-0.01] * 6 + [0.0], q99=[0.01] * 6 + [1.0], mask=[True] * 6 + [False])
    ep = _episode(["policy"] * 4 + ["human"], [small] * 5)
    assert label_episode(ep, k=2, noop_filter=True).num_undesirable == 0
    assert _idx(label_episode(ep, k=2, noop_filter=True, stats=stats).undesirable) == [2, 3]
    assert _idx(label_episode(ep, k=2, noop_filter=True, noop_threshold=0.01).undesirable) == [2, 3]


def test_sirius_classes_and_window():
    sources = ["expert"] * 2 + ["policy"] * 20 + ["human"] * 3 + ["policy"] * 2
    lab = label_episode(_episode(sources), k=10, sirius_window=15)
    names = lab.sirius_names()
    assert names[:2] == ["demo", "demo"]
    assert names[2:7] == ["rollout"] * 5 and names[7:22] == ["pre_intervention"] * 15
    assert names[22:25] == ["intervention"] * 3 and names[25:] == ["rollout"] * 2
    assert SIRIUS_CLASSES == ("demo", "rollout", "intervention", "pre_intervention")
    # the window stops at expert steps just like K
    short = label_episode(_episode(["expert"] * 2 + ["policy"] * 3 + ["human"]), sirius_window=15)
    assert short.sirius_names() == ["demo"] * 2 + ["pre_intervention"] * 3 + ["intervention"]


def test_expert_demo_episode_is_all_desirable_demo():
    lab = label_episode(_episode(["expert"] * 10))
    assert lab.desirable.all() and set(lab.sirius_names()) == {"demo"}


def test_unknown_source_and_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown action source 'robot'"):
        label_sources(["policy", "robot"])
    with pytest.raises(ValueError, match="no-op filter needs the actions"):
        label_sources(["policy"], noop_filter=True)
    with pytest.raises(ValueError, match=">= 0"):
        label_sources(["policy"], k=-1)


def test_labels_from_a_written_bag(tmp_path):
    sources = ["policy"] * 15 + ["human"] * 4 + ["policy"] * 6 + ["human"] * 2
    write_synthetic_episode(str(tmp_path / "ep"), sources, size=8)
    ep = read_episode(str(tmp_path / "ep"), load_images=False)
    assert ep.sources == sources
    lab = label_episode(ep, k=10)
    assert _idx(lab.undesirable) == list(range(5, 15)) + list(range(19, 25))
    kinds = [k for _, k in ep.events]
    assert kinds.count("intervention_start") == 2 and kinds.count("intervention_end") == 1
