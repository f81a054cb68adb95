"""The simulated operator: no take-over while the policy does well; a late take-over after a
policy goes wrong (never before), driven by the expert, and a hand-back. (Corrections as a
function of the state, reaction time and agreement: test_sim_operator_state.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from operator_helpers import run_operator_episode

from apo_ros.sim import OperatorConfig, SimulatedOperator, make_env, make_expert
from apo_ros.sim.experts import ProgressTracker


def run_with_operator(task: str, seed: int, bad, config: OperatorConfig | None = None):
    """(sources per step, operator, succeeded, step at which the policy started going wrong)."""
    return run_operator_episode(task, seed, bad, config)


@pytest.mark.parametrize("task", ["lemon_on_plate", "hang_cup"])
def test_no_takeover_while_the_policy_does_well(task):
    sources, operator, terminated, _ = run_with_operator(task, 0, lambda step, a: None)
    assert terminated
    assert operator.interventions == 0 and set(sources) == {"policy"}


def _check_late_takeover_and_handback(sources, operator, went_wrong, min_bad_steps):
    assert operator.interventions >= 1
    first = operator.history[0]
    start = first.start_step
    assert sources.index("human") == start
    # Late: the policy had been going wrong for a while, and every step before the take-over
    # since then was the policy's.
    assert start - went_wrong >= min_bad_steps
    assert set(sources[went_wrong:start]) == {"policy"}
    assert start >= OperatorConfig().min_policy_steps_before_takeover
    # Short, and it hands back: the policy drives again afterwards.
    assert first.end_step is not None
    assert 1 <= first.end_step - start <= OperatorConfig().max_intervention_steps
    assert set(sources[start:first.end_step]) == {"human"}
    assert "policy" in sources[first.end_step:]


@pytest.mark.parametrize("task", ["lemon_on_plate", "square_on_stick"])
def test_drifting_policy_gets_corrected_late_and_handed_back(task):
    def drift(step, action):  # from step 8 the policy wanders off sideways and up
        return np.array([0.0, 0.015, 0.008, 0, 0, 0, action[6]]) if step >= 8 else None

    sources, operator, terminated, went_wrong = run_with_operator(task, 1, drift)
    assert operator.history[0].rule == "deviation"
    cfg = OperatorConfig()
    # the 5th deviating step fires the rule, the person grabs the device reaction_steps later
    _check_late_takeover_and_handback(sources, operator, went_wrong,
                                      min_bad_steps=cfg.deviation_steps - 1 + cfg.reaction_steps)
    assert terminated  # after the correction the (now well-behaved) policy finishes the task


def close_early(step, action):
    """A bad policy that closes the gripper long before reaching the lemon."""
    if step >= 6:
        a = action.copy()
        a[6] = 0.0
        return a
    return None


def test_early_gripper_close_is_a_grasp_miss():
    sources, operator, terminated, went_wrong = run_with_operator("lemon_on_plate", 2, close_early)
    first = operator.history[0]
    assert first.rule == "grasp_miss" and first.failed_stage == 0
    _check_late_takeover_and_handback(sources, operator, went_wrong, min_bad_steps=3)
    # The human hands back once the policy wants the right thing again, and the task succeeds.
    assert first.outcome == "recovered"
    assert terminated


def test_knocked_object_triggers_a_takeover():
    """A policy that comes down beside the lemon and sweeps the fingers through it."""
    env = make_env("lemon_on_plate", render=False)
    env.reset(5)
    # Only the knock rule: the sweep also deviates from the expert, which would fire first.
    operator = SimulatedOperator("lemon_on_plate", OperatorConfig(deviation_enabled=False), seed=5)
    operator.reset(env)
    start = env.body_pos("lemon")
    beside = np.array([start[0], start[1] - 0.09, 0.025])
    low = False
    for _ in range(60):
        tcp, lemon = env.tcp_pos(), env.body_pos("lemon")
        low = low or np.linalg.norm(tcp - beside) < 0.01
        if low:
            target = np.array([lemon[0], lemon[1] + 0.05, 0.025])  # sweep along +y
        elif np.linalg.norm(tcp[:2] - beside[:2]) < 0.01:
            target = beside
        else:
            target = np.array([beside[0], beside[1], max(tcp[2], 0.1)])
        action = np.r_[np.clip(target - tcp, -0.015, 0.015), 0, 0, 0, 1.0]
        if operator.step(env, action) is not None:
            break
        env.step(action)
    assert operator.interventions == 1 and operator.history[0].rule == "knocked"
    assert np.linalg.norm(env.body_pos("lemon")[:2] - start[:2]) > OperatorConfig().knock_distance


def test_min_policy_steps_are_respected():
    cfg = OperatorConfig(min_policy_steps_before_takeover=15)

    def close_now(step, action):
        a = action.copy()
        a[6] = 0.0
        return a

    sources, operator, _t, _w = run_with_operator("lemon_on_plate", 3, close_now, cfg)
    assert operator.history[0].start_step >= 15
    assert sources[:15] == ["policy"] * 15


def test_disabled_rules_never_take_over():
    cfg = OperatorConfig(deviation_enabled=False, miss_enabled=False, drop_enabled=False)
    sources, operator, _t, _w = run_with_operator(
        "lemon_on_plate", 1, lambda step, a: np.array([0.0, 0.015, 0.0, 0, 0, 0, 0.0]), cfg)
    assert operator.interventions == 0 and not operator.intervening


def test_progress_tracker_counts_lift_as_progress():
    env = make_env("lemon_on_plate", render=False)
    expert = make_expert("lemon_on_plate")
    tracker = ProgressTracker(make_expert("lemon_on_plate"))
    env.reset(0)
    expert.reset(env)
    last = None
    while expert.phase != "transport":
        env.step(expert.act(env))
        stage, to_go = tracker.update(env)
        if stage == 1 and expert.phase == "lift" and last is not None:
            assert to_go <= last + 1e-3
        last = to_go if stage == 1 else None


def test_alignment_keeps_its_side_near_ninety_degrees():
    """The fingers may close along a grasp direction or its opposite; near 90 degrees off the two
    are equally far, and a small wobble of the object must not flip the wrist by 180 degrees."""
    from apo_ros.sim.experts import _aligned

    current = np.array([0.0, 1.0, 0.0])
    signs = []
    sign = 0.0
    for wobble in (0.05, -0.05, 0.05, -0.05):  # the object's axis rocks across 90 degrees
        direction = np.array([np.cos(wobble), np.sin(wobble), 0.0])
        _d, sign = _aligned(direction, current, sign)
        signs.append(sign)
    assert len(set(signs)) == 1
    # a clear reversal still flips
    _d, flipped = _aligned(np.array([0.0, -1.0, 0.0]), current, 1.0)
    assert flipped == -1.0


def test_operator_waits_for_a_rolling_object_before_moving():
    env = make_env("lemon_on_plate", render=False)
    env.reset(4)
    operator = SimulatedOperator("lemon_on_plate", seed=4)
    operator.reset(env)
    operator._take_over(env, "knocked", 0)  # the person has grabbed the device
    dof = env.model.jnt_dofadr[env.model.body_jntadr[env.body_id("lemon")]]
    env.data.qvel[dof + 1] = 0.5  # the lemon was just pushed and rolls
    env.step(np.r_[np.zeros(6), 1.0])
    held, moved = [], None
    for _ in range(40):
        human = operator.step(env, np.r_[np.zeros(6), 1.0])
        if human is None:
            break  # handed back after redoing the grasp
        still = not np.any(human[:6])
        held.append(still)
        if not still and moved is None:
            moved = operator.object_speed
        env.step(human)
    assert held[0] and held[1]  # it waited while the lemon rolled ...
    assert not all(held) and moved is not None and moved <= OperatorConfig().settle_speed  # ... then acted
    assert operator.history[0].wait_steps >= 2


def test_interventions_record_their_outcome_and_the_operator_gives_up():
    """An intervention that runs out of time is recorded as timed out; after
    give_up_after_timeouts of them the person gives up on the episode."""
    cfg = OperatorConfig(max_intervention_steps=5, give_up_after_timeouts=2, on_track_steps=50,
                         min_policy_steps_before_takeover=2)
    env = make_env("lemon_on_plate", render=False)
    env.reset(2)
    operator = SimulatedOperator("lemon_on_plate", cfg, seed=2)
    operator.reset(env)
    close_far = np.r_[0.0, 0.0, 0.01, 0, 0, 0, 0.0]  # closes the gripper high above the lemon
    for _ in range(150):
        human = operator.step(env, close_far)
        if operator.gave_up:
            break
        env.step(human if human is not None else close_far)
    assert operator.gave_up == "operator_gave_up"
    assert [i.outcome for i in operator.history] == ["timed_out", "timed_out"]


def test_a_correction_that_succeeds_is_recorded_as_recovered():
    _sources, operator, succeeded, _w = run_with_operator("lemon_on_plate", 2, close_early)
    operator.end_episode(succeeded)
    assert operator.history[0].outcome == "recovered"
    assert set(operator.intervention_outcomes()) <= {"recovered", "task_done"}
