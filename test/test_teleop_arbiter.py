"""TeleopArbiter: every mode change, timeouts, device loss, gripper buttons, stale commands."""

import numpy as np
import pytest

from apo_ros.teleop.arbiter import ArbiterConfig, Mode, PolicyCommand, TeleopArbiter
from apo_ros.teleop.device import DeviceState

MS = 1_000_000
CFG = ArbiterConfig(max_delta=(0.01, 0.02, 0.03, 0.1, 0.2, 0.3), takeover_deadzone=0.2,
                    takeover_button=2, idle_handback_s=1.0, policy_timeout_s=0.25,
                    device_timeout_s=0.25)


def dev(t, axes=(0, 0, 0, 0, 0, 0), buttons=(0, 0, 0), connected=True):
    return DeviceState(t=t, axes=tuple(float(a) for a in axes), buttons=buttons, connected=connected)


def cmd(x=0.005, obs=7, g=1.0):
    return PolicyCommand(np.array([x, 0, 0, 0, 0, 0, g]), obs_stamp_ns=obs)


def kinds(out):
    return [e.kind for e in out.events]


def test_autonomous_executes_policy_with_its_observation_stamp():
    arb = TeleopArbiter(CFG)
    out = arb.update(0, policy=cmd(obs=42), device=dev(0.0))
    assert out.mode is Mode.AUTONOMOUS and out.source == "policy"
    assert out.obs_stamp_ns == 42 and out.action[0] == pytest.approx(0.005)


def test_small_deflection_inside_deadzone_does_not_take_over():
    arb = TeleopArbiter(CFG)
    out = arb.update(0, policy=cmd(), device=dev(0.0, axes=(0.15, 0, 0, 0, 0, 0)))
    assert out.mode is Mode.AUTONOMOUS and out.source == "policy"


def test_takeover_on_deflection_same_tick_and_scaled_axes():
    arb = TeleopArbiter(CFG)
    arb.update(0, policy=cmd(), device=dev(0.0))
    out = arb.update(100 * MS, policy=cmd(obs=9), device=dev(0.1, axes=(0.5, -1, 0, 0, 0, 1)),
                     obs_stamp_ns=9)
    assert out.mode is Mode.INTERVENTION and out.source == "human"
    assert kinds(out) == ["intervention_start"]
    np.testing.assert_allclose(out.action[:6], [0.005, -0.02, 0, 0, 0, 0.3])
    assert out.action[6] == 1.0  # gripper kept at the last executed command
    assert out.obs_stamp_ns == 9
    np.testing.assert_allclose(out.proposed, cmd().action)  # the policy's proposal is still reported
    assert arb.interventions == 1


def test_takeover_and_handback_by_button_toggle():
    arb = TeleopArbiter(CFG)
    arb.update(0, policy=cmd(), device=dev(0.0))
    out = arb.update(1 * MS, policy=cmd(), device=dev(0.1, buttons=(0, 0, 1)))
    assert out.mode is Mode.INTERVENTION and kinds(out) == ["intervention_start"]
    # held button: no second edge, stays in intervention
    out = arb.update(2 * MS, policy=cmd(), device=dev(0.2, buttons=(0, 0, 1)))
    assert out.mode is Mode.INTERVENTION and kinds(out) == []
    out = arb.update(3 * MS, policy=cmd(), device=dev(0.3, buttons=(0, 0, 0)))
    assert out.mode is Mode.INTERVENTION
    out = arb.update(4 * MS, policy=cmd(), device=dev(0.4, buttons=(0, 0, 1)))
    assert out.mode is Mode.AUTONOMOUS and kinds(out) == ["intervention_end"]
    assert out.source == "policy"


def test_separate_handback_button():
    arb = TeleopArbiter(ArbiterConfig(takeover_button=2, handback_button=3, idle_handback_s=0))
    arb.update(0, policy=cmd(), device=dev(0.0, buttons=(0, 0, 1, 0)))
    assert arb.mode is Mode.INTERVENTION
    out = arb.update(MS, policy=cmd(), device=dev(0.1, buttons=(0, 0, 0, 1)))
    assert out.mode is Mode.AUTONOMOUS and kinds(out) == ["intervention_end"]


def test_idle_handback_after_timeout_only():
    arb = TeleopArbiter(CFG)
    arb.update(0, policy=cmd(), device=dev(0.0, axes=(1, 0, 0, 0, 0, 0)))
    assert arb.mode is Mode.INTERVENTION
    arb.update(800 * MS, policy=cmd(), device=dev(0.8, axes=(1, 0, 0, 0, 0, 0)))  # still moving
    out = arb.update(900 * MS, policy=cmd(), device=dev(0.9))  # released at 0.9 s
    assert out.mode is Mode.INTERVENTION and out.source == "human"
    assert np.all(out.action[:6] == 0)
    out = arb.update(1750 * MS, policy=cmd(), device=dev(1.75))  # 0.95 s idle < 1.0 s
    assert out.mode is Mode.INTERVENTION
    out = arb.update(1850 * MS, policy=cmd(), device=dev(1.85))  # 1.05 s idle
    assert out.mode is Mode.AUTONOMOUS and kinds(out) == ["intervention_end"]
    assert out.events[0].detail == "idle"


def test_idle_handback_disabled():
    arb = TeleopArbiter(ArbiterConfig(idle_handback_s=0))
    arb.update(0, policy=cmd(), device=dev(0.0, axes=(1, 0, 0, 0, 0, 0)))
    out = arb.update(60_000 * MS, policy=cmd(), device=dev(60.0))
    assert out.mode is Mode.INTERVENTION


def test_gripper_buttons_take_over_and_set_gripper():
    arb = TeleopArbiter(CFG)
    arb.update(0, policy=cmd(g=1.0), device=dev(0.0))
    out = arb.update(MS, policy=cmd(), device=dev(0.1, buttons=(1, 0, 0)))  # left = close
    assert out.mode is Mode.INTERVENTION and out.action[6] == 0.0
    out = arb.update(2 * MS, policy=cmd(), device=dev(0.2, buttons=(0, 0, 0)))
    assert out.action[6] == 0.0  # stays closed after release
    out = arb.update(3 * MS, policy=cmd(), device=dev(0.3, buttons=(0, 1, 0)))  # right = open
    assert out.action[6] == 1.0


def test_gripper_button_without_takeover_when_disabled():
    arb = TeleopArbiter(ArbiterConfig(gripper_takes_over=False))
    out = arb.update(0, policy=cmd(), device=dev(0.0, buttons=(1, 0)))
    assert out.mode is Mode.AUTONOMOUS and out.source == "policy"


def test_stale_policy_command_gives_zero_twist_not_a_repeat():
    arb = TeleopArbiter(CFG)
    out = arb.update(0, policy=cmd(x=0.009, g=0.0), device=dev(0.0))
    assert out.source == "policy" and out.action[0] == pytest.approx(0.009)
    out = arb.update(200 * MS, device=dev(0.0))  # within 0.25 s: still valid (twist_mux style)
    assert out.source == "policy"
    out = arb.update(300 * MS, device=dev(0.0))
    assert out.source == "none" and np.all(out.action[:6] == 0) and out.action[6] == 0.0
    assert kinds(out) == ["policy_stale"]
    out = arb.update(400 * MS, device=dev(0.0))
    assert out.source == "none" and kinds(out) == []  # reported once
    out = arb.update(500 * MS, policy=cmd(x=0.001), device=dev(0.0))  # fresh again
    assert out.source == "policy" and out.action[0] == pytest.approx(0.001)


def test_no_policy_yet_gives_zero_twist():
    out = TeleopArbiter(CFG, initial_gripper=0.7).update(0, device=dev(0.0))
    assert out.source == "none" and np.all(out.action[:6] == 0) and out.action[6] == 0.7


def test_stale_device_deflection_gives_zero_twist():
    arb = TeleopArbiter(CFG)
    arb.update(0, policy=cmd(), device=dev(0.0, axes=(1, 0, 0, 0, 0, 0)))
    out = arb.update(100 * MS, policy=cmd(), device=dev(0.0, axes=(1, 0, 0, 0, 0, 0)))  # same t
    assert out.source == "human" and out.action[0] == pytest.approx(0.01)
    out = arb.update(300 * MS, policy=cmd(), device=dev(0.0, axes=(1, 0, 0, 0, 0, 0)))
    assert out.mode is Mode.INTERVENTION and out.source == "human"
    assert np.all(out.action[:6] == 0) and "human_stale" in kinds(out)
    out = arb.update(400 * MS, policy=cmd(), device=dev(0.4, axes=(1, 0, 0, 0, 0, 0)))  # fresh
    assert out.action[0] == pytest.approx(0.01)


def test_device_loss_in_intervention_holds_and_ends_intervention():
    arb = TeleopArbiter(CFG)
    arb.update(0, policy=cmd(), device=dev(0.0, axes=(1, 0, 0, 0, 0, 0)))
    out = arb.update(MS, policy=cmd(), device=dev(0.0, connected=False))
    assert out.mode is Mode.HOLD and out.source == "none"
    assert kinds(out) == ["device_lost", "intervention_end", "hold"]
    assert np.all(out.action[:6] == 0)
    # fresh policy commands do not move the arm while holding
    out = arb.update(2 * MS, policy=cmd(x=0.01), device=dev(0.0, connected=False))
    assert out.mode is Mode.HOLD and np.all(out.action[:6] == 0) and kinds(out) == []
    # reconnecting alone does not restart motion
    out = arb.update(3 * MS, policy=cmd(), device=dev(0.3))
    assert out.mode is Mode.HOLD and kinds(out) == ["device_restored"]
    assert kinds_of(arb.resume(4 * MS)) == ["resume"]
    out = arb.update(5 * MS, policy=cmd(x=0.002), device=dev(0.5))
    assert out.mode is Mode.AUTONOMOUS and out.action[0] == pytest.approx(0.002)


def kinds_of(events):
    return [e.kind for e in events]


def test_device_loss_in_autonomous_holds():
    arb = TeleopArbiter(CFG)
    arb.update(0, policy=cmd(), device=dev(0.0))
    out = arb.update(MS, policy=cmd(), device=dev(0.0, connected=False))
    assert out.mode is Mode.HOLD and kinds(out) == ["device_lost", "hold"]


def test_device_loss_without_hold_returns_to_policy():
    arb = TeleopArbiter(ArbiterConfig(hold_on_device_loss=False))
    arb.update(0, policy=cmd(), device=dev(0.0, axes=(1, 0, 0, 0, 0, 0)))
    out = arb.update(MS, policy=cmd(), device=dev(0.0, connected=False))
    assert out.mode is Mode.AUTONOMOUS and out.source == "policy"
    assert kinds(out) == ["device_lost", "intervention_end"]


def test_hold_left_by_takeover_button():
    arb = TeleopArbiter(CFG)
    arb.update(0, policy=cmd(), device=dev(0.0))
    assert kinds_of(arb.hold(MS, "estop")) == ["hold"]
    out = arb.update(2 * MS, policy=cmd(), device=dev(0.1, axes=(1, 0, 0, 0, 0, 0)))
    assert out.mode is Mode.HOLD  # deflection alone does not leave HOLD
    out = arb.update(3 * MS, policy=cmd(), device=dev(0.2, buttons=(0, 0, 1)))
    assert out.mode is Mode.INTERVENTION and kinds(out) == ["intervention_start"]


def test_non_finite_policy_command_never_executed():
    arb = TeleopArbiter(CFG)
    out = arb.update(0, policy=PolicyCommand(np.full(7, np.nan), 1), device=dev(0.0))
    assert out.source == "none" and np.all(np.isfinite(out.action))


def test_bad_config_and_command_rejected():
    with pytest.raises(ValueError, match="max_delta"):
        ArbiterConfig(max_delta=(1, 2))
    with pytest.raises(ValueError, match="takeover_deadzone"):
        ArbiterConfig(takeover_deadzone=1.5)
    with pytest.raises(ValueError, match="7-D"):
        TeleopArbiter().on_policy(PolicyCommand(np.zeros(3), 0), 0)
