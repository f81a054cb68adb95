"""The simulated operator corrects from what it sees: its correction is a function of the current
state (the demos' expert at that state), it takes over after a reaction time when the policy
deviates from that expert, hands back when the policy is on track, and the agreement metrics on
recorded bags say so."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from operator_helpers import run_operator_episode  # noqa: E402

from apo_ros.sim import OperatorConfig, SimulatedOperator, make_env, make_expert  # noqa: E402
from apo_ros.sim.experts import StateExpert  # noqa: E402

TASK = "lemon_on_plate"


def drift_after(start: int):
    """A policy that is the expert until `start`, then slides sideways and up with the gripper
    open (until the first take-over; after it the expert again)."""
    def bad(step, action):
        return np.array([0.0, 0.015, 0.008, 0, 0, 0, 1.0]) if step >= start else None
    return bad


def run(task: str, seed: int, bad, config: OperatorConfig | None = None, max_steps: int | None = None,
        bad_always: bool = False):
    """One episode of an expert policy perturbed by `bad` (until the first take-over, or always)
    under the operator, ended when the person gives up. Returns (sources, operator, success)."""
    sources, operator, success, _ = run_operator_episode(task, seed, bad, config, max_steps=max_steps,
                                                         bad_always=bad_always, stop_on_give_up=True)
    return sources, operator, success


def test_the_same_state_gets_the_same_correction_whatever_the_history():
    """Drive to a state mid-descent with the person in control the whole way (a remembered plan
    would be in its descend phase), then reach the very same state by replaying those actions
    under a fresh operator that has seen nothing: the correction is the same, and it is the
    demos' expert's action there."""
    seed = 3
    env_a = make_env(TASK, render=False)
    env_a.reset(seed)
    demo = make_expert(TASK)
    demo.reset(env_a)
    a = SimulatedOperator(TASK, OperatorConfig(min_policy_steps_before_takeover=0), seed=0)
    a.reset(env_a)
    a._take_over(env_a, "deviation", 0)
    executed, differ = [], 0
    while demo.phase != "descend" or demo._phase_steps < 2:
        demo_action = demo.act(env_a)
        human = a.correction(env_a)
        differ += int(not np.allclose(human, demo_action, atol=1e-9))
        executed.append(human)
        env_a.step(human)
    assert differ <= 1  # the demos' action, but for the step where the demo switches to descend
    correction_a = a.correction(env_a)

    env_b = make_env(TASK, render=False)
    env_b.reset(seed)
    b = SimulatedOperator(TASK, seed=0)
    b.reset(env_b)
    for action in executed:  # deterministic physics: the same actions reach the same state
        b.step(env_b, np.r_[np.zeros(6), 1.0])
        env_b.step(action)
    np.testing.assert_allclose(env_b.tcp_pos(), env_a.tcp_pos(), atol=1e-9)
    correction_b = b._take_over(env_b, "deviation", 0)
    np.testing.assert_allclose(correction_b, correction_a, atol=1e-9)
    assert correction_a[2] < -0.005  # it goes on descending (a replanned phase would climb back up)
    np.testing.assert_allclose(correction_a, demo.act(env_a), atol=1e-9)
    env_a.close()
    env_b.close()


@pytest.mark.parametrize("task", ["lemon_on_plate", "square_on_stick", "hang_cup"])
def test_state_expert_matches_the_demos_expert_at_demo_states(task):
    """At the states of a demo the state-only expert gives the demo's action, except one step
    at a few phase changes (where the scripted expert emits its last move before switching)."""
    env = make_env(task, render=False)
    env.reset(1)
    demo, state = make_expert(task), StateExpert(task)
    demo.reset(env)
    same = total = 0
    done = False
    while not done:
        a, b = demo.act(env), state.act(env)
        same += int(np.allclose(a, b, atol=1e-3))
        total += 1
        _o, _r, term, trunc, info = env.step(a)
        done = term or trunc
    assert info["success"]
    assert total - same <= 6 and same / total >= 0.88


@pytest.mark.parametrize("reaction", [0, 2, 5])
def test_reaction_time_delays_the_takeover(reaction):
    cfg = OperatorConfig(reaction_steps=reaction)
    sources, operator, _ok = run(TASK, 1, drift_after(12), cfg)
    first = operator.history[0]
    assert first.rule == "deviation"
    assert first.start_step - first.trigger_step == reaction
    # the rule fires on the deviation_steps-th drifting step, whatever the reaction time
    assert first.trigger_step == 12 + cfg.deviation_steps - 1
    assert sources[first.trigger_step:first.start_step] == ["policy"] * reaction


@pytest.mark.parametrize("task", ["lemon_on_plate", "square_on_stick", "hang_cup"])
def test_no_takeover_for_an_expert_driven_episode(task):
    for seed in (0, 5):
        sources, operator, ok = run(task, seed, lambda step, a: None)
        assert ok and operator.interventions == 0 and set(sources) == {"policy"}
        deviated = sum(s["deviated"] for s in operator.steps)
        assert deviated <= 6  # only the one-step lags at phase changes


def test_a_deviating_policy_is_taken_over_and_its_last_steps_really_deviated():
    sources, operator, ok = run(TASK, 2, drift_after(10))
    first = operator.history[0]
    assert first.rule == "deviation" and sources[first.start_step] == "human"
    before = [s for s in operator.steps if s["step"] < first.start_step][-10:]
    assert all(not s["human"] for s in before)
    # the undesirable steps are the bad ones: all since it started drifting (the 5 that fired
    # the rule and the reaction time), the 3 before were fine
    assert [s["deviated"] for s in before] == [False] * 3 + [True] * 7
    # while correcting, the person commands the expert's action at each state
    for s in operator.steps:
        if s["human"]:
            np.testing.assert_allclose(s["executed"], s["expert"], atol=1e-12)
    assert ok


def test_hands_back_once_the_policy_is_on_track():
    cfg = OperatorConfig()
    sources, operator, ok = run(TASK, 2, drift_after(10), cfg)
    first = operator.history[0]
    assert first.outcome == "recovered" and first.end_step is not None
    # the policy is the expert again after the take-over: it agrees at once, so the person lets
    # go after the shortest hold plus the on-track confirmation
    held = first.end_step - first.start_step
    assert cfg.min_intervention_steps <= held <= cfg.min_intervention_steps + cfg.on_track_steps
    assert sources[first.end_step] == "policy" and ok


def test_no_handback_while_the_policy_would_go_on_deviating():
    cfg = OperatorConfig(max_intervention_steps=12, give_up_after_timeouts=1)
    sources, operator, ok = run(TASK, 2, drift_after(10), cfg, bad_always=True)
    first = operator.history[0]
    assert first.outcome == "timed_out" and first.end_step - first.start_step == 12
    assert operator.gave_up == "operator_gave_up" and not ok


def test_operator_noise_is_off_by_default_and_configurable():
    assert OperatorConfig().human_noise == 0.0
    env = make_env(TASK, render=False)
    env.reset(0)
    noisy = SimulatedOperator(TASK, OperatorConfig(human_noise=1.0), seed=0)
    noisy.reset(env)
    clean = SimulatedOperator(TASK, seed=0)
    clean.reset(env)
    assert not np.allclose(noisy.correction(env), clean.correction(env))
    np.testing.assert_allclose(clean.correction(env), clean.correction(env))
    env.close()


class DriftPolicy:
    """A checkpoint-like policy that only slides sideways and up: every correction it gets is
    recorded in the bags."""

    policy_id = "drift"

    def select_action(self, obs):
        return np.array([[0.0, 0.02, 0.01, 0, 0, 0, 1.0]]), True

    def reset(self):
        pass


def test_agreement_metrics_on_bags_are_high_for_the_operator(tmp_path):
    from apo_ros.runtime.session import run_session
    from apo_ros.sim.operator_metrics import operator_metrics

    run_session(TASK, "expert", "none", 2, str(tmp_path / "demos"), 7, max_steps=80, render=False,
                cameras=())
    run_session(TASK, DriftPolicy(), "scripted", 2, str(tmp_path / "deploy"), 7, max_steps=60,
                render=False, cameras=())
    m = operator_metrics([str(tmp_path / "deploy")], [str(tmp_path / "demos")])
    assert m["episodes"] == 2 and m["human_steps"] >= 20
    at_state = m["vs_expert_at_state"]
    assert at_state["xyz_sign_agreement"] >= 0.95 and at_state["gripper_agreement"] >= 0.95
    assert at_state["xyz_mean_abs_diff_m"] < 0.002
    assert m["undesirable_steps"] > 0 and m["undesirable_deviated_share"] >= 0.8
    assert m["vs_policy_proposal"]["xyz_sign_agreement"] is not None
    assert m["vs_nearest_demo_state"]["matched_human_steps"] >= 1


def test_restored_states_give_the_live_expert_action(tmp_path):
    """The metrics restore each recorded state in the simulator: the expert's action there is the
    one it gave live."""
    from apo_ros.recording.reader import read_episode
    from apo_ros.runtime.session import run_session
    from apo_ros.sim.operator_metrics import restore_state

    summary = run_session(TASK, "expert", "none", 1, str(tmp_path), 4, render=False, cameras=())
    ep = read_episode(summary.episodes[0].path, load_images=False)
    env = make_env(TASK, render=False)
    expert = StateExpert(TASK)
    same, previous = 0, 1.0
    for step in ep.steps:
        restore_state(env, step.observation, previous)
        previous = float(step.action[6])
        same += int(np.allclose(expert.act(env), step.action, atol=2e-3))
    env.close()
    assert same / len(ep.steps) >= 0.85


def test_session_operator_noise_flag(capsys):
    from apo_ros.cli import main as cli_main
    from apo_ros.runtime.session import _make_operator

    assert _make_operator("scripted", TASK, 0).config.human_noise == 0.0
    assert _make_operator("scripted", TASK, 0, 0.5).config.human_noise == 0.5
    assert cli_main(["session", "--task", TASK, "--policy", "expert", "--bags", "/nonexistent-never",
                     "--operator-noise", "-1"]) != 0
    assert "--operator-noise must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [dict(deviation_steps=7, deviation_window=6), dict(reaction_steps=-1),
                                 dict(human_noise=-0.1), dict(on_track_steps=0)])
def test_operator_config_rejects_nonsense(bad):
    with pytest.raises(ValueError, match="OperatorConfig"):
        OperatorConfig(**bad)


def test_a_square_caught_on_the_stick_is_let_go_not_pushed():
    """The square threaded onto the stick and still sliding down gets the demos' move (carry on
    down); held there and no longer moving (caught: a crooked grasp wedges it) the correction is
    to let go, so gravity finishes, instead of pushing on a jammed square until the person gives
    up. Still opening the gripper over it: keep letting go, no regrasp."""
    task = "square_on_stick"
    env = make_env(task, render=False)
    env.reset(1)
    demo, state = make_expert(task), StateExpert(task)
    demo.reset(env)
    spec = env.task
    steps = 0
    while not (spec.threaded(env) and env.is_grasped(spec.object_body)):
        env.step(demo.act(env))
        steps += 1
        assert steps < env.task.max_steps, "the demo never threaded the square"
    assert env.body_speed(spec.object_body) > state.config.stall_speed
    moving = state.act(env)
    assert state.phase == "transport" and moving[2] < -0.005 and moving[6] < 0.5

    env.data.qvel[:] = 0.0  # the same pose, caught: nothing moves
    env.forward()
    caught = state.act(env)
    assert state.phase == "release" and caught[6] >= 0.5
    np.testing.assert_allclose(caught[:6], 0.0)

    for _ in range(3):  # the fingers open and the square drops: letting go, never closing again
        env.step(caught)
        caught = state.act(env)
        assert caught[6] >= 0.5 and state.phase in ("release", "retreat"), state.phase
    assert spec.is_success(env)
    env.close()


def test_threaded_means_the_stick_is_through_the_hole():
    env = make_env("square_on_stick", render=False)
    env.reset(2)
    spec = env.task
    assert not spec.threaded(env)  # on the table, away from the stick
    stick = env.body_pos("stick")
    adr = env.free_qpos_adr("square")
    for offset, z, expected in ((0.0, 0.07, True), (0.01, 0.07, True), (0.03, 0.07, False),
                                (0.0, 0.12, False)):
        env.data.qpos[adr:adr + 3] = [stick[0] + offset, stick[1], z]
        env.forward()
        assert spec.threaded(env) is expected, (offset, z)
    env.close()
    lemon = make_env("lemon_on_plate", render=False)
    lemon.reset(2)
    assert not lemon.task.threaded(lemon)  # no fixture to thread onto
    lemon.close()
