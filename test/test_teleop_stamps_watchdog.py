"""The arbiter's guards, without processes: which observation stamps open a control step (a
future stamp never poisons the stream, a clock that steps back starts it over), and the policy
watchdog (lost once after the timeout, back once when it answers)."""

from __future__ import annotations

from apo_ros.teleop.stamp_gate import StampGate
from apo_ros.teleop.watchdog import PolicyWatchdog

S = 1_000_000_000
MS = 1_000_000
NOW = 1_800_000_000 * S


def test_a_future_stamp_is_refused_and_the_stream_goes_on():
    gate = StampGate(tolerance_s=0.5)
    assert gate.check(NOW, NOW + 2 * MS) == "ok"
    assert gate.check(NOW + 3600 * S, NOW + 100 * MS) == "future"  # an hour ahead
    assert gate.check(NOW + 100 * MS, NOW + 102 * MS) == "ok"  # the next real one still opens a step
    assert gate.check(NOW + 300 * MS, NOW + 100 * MS) == "ok"  # within tolerance: a clock a bit ahead
    assert gate.counts == {"ok": 3, "future": 1, "old": 0, "reset": 0}


def test_old_and_duplicate_stamps_are_refused():
    gate = StampGate(tolerance_s=0.5)
    assert gate.check(NOW, NOW) == "ok"
    assert gate.check(NOW, NOW + 100 * MS) == "old"  # the same observation again
    assert gate.check(NOW - 50 * MS, NOW + 100 * MS) == "old"  # reordered
    assert gate.check(0, NOW) == "old"  # a zero stamp


def test_a_clock_that_steps_back_starts_the_stream_over():
    gate = StampGate(tolerance_s=0.5)
    assert gate.check(NOW, NOW) == "ok"
    # the sender's clock jumped back 60 s, and so did ours (a simulation reset, sim time)
    assert gate.check(NOW - 60 * S, NOW - 60 * S + 2 * MS) == "reset"
    assert gate.check(NOW - 60 * S + 100 * MS, NOW - 60 * S + 102 * MS) == "ok"
    # a receiver whose clock did not step back refuses the old stamps (they are stale)
    gate = StampGate(tolerance_s=0.5)
    gate.check(NOW, NOW)
    assert gate.check(NOW - 60 * S, NOW + 100 * MS) == "old"


def test_the_watchdog_holds_once_and_comes_back_once():
    dog = PolicyWatchdog(timeout_s=0.5)
    assert dog.check(NOW) is None  # not expecting anything yet
    dog.expect(NOW)
    assert dog.check(NOW + 400 * MS) is None
    assert dog.answered(NOW + 450 * MS) is None
    assert dog.check(NOW + 900 * MS) is None
    assert dog.check(NOW + 951 * MS) == "lost"
    assert dog.check(NOW + 2 * S) is None  # said once
    assert dog.answered(NOW + 3 * S) == "back"
    assert dog.answered(NOW + 3 * S + 100 * MS) is None
    assert dog.losses == 1 and not dog.lost


def test_control_steps_survive_a_future_stamp_and_a_clock_that_steps_back():
    import pytest

    from apo_ros.runtime.ros_io import ControlSteps

    steps = ControlSteps(deadline_s=0.06, tolerance_s=0.5)
    assert steps.observe(NOW, NOW + 2 * MS)
    steps.close()
    with pytest.raises(ValueError, match="ahead of this node's clock"):
        steps.observe(NOW + 3600 * S, NOW + 100 * MS)  # used to become "the last observation"
    assert steps.observe(NOW + 100 * MS, NOW + 102 * MS)  # the next real one is a step
    assert steps.accept(NOW + 100 * MS, NOW + 110 * MS)
    steps.close()
    # the sender's and our clock jump back a minute (a reset simulation on sim time)
    back = NOW - 60 * S
    assert steps.observe(back, back + 2 * MS)
    assert steps.accept(back, back + 10 * MS)  # and its command is accepted
    assert steps.gate.counts["future"] == 1 and steps.gate.counts["reset"] == 1


def test_the_watchdog_holds_the_arbiter_and_resumes_it_unless_the_operator_decided():
    from apo_ros.teleop.arbiter import ArbiterConfig, Mode, TeleopArbiter
    from apo_ros.teleop.watchdog import WatchdogHold

    arbiter = TeleopArbiter(ArbiterConfig())
    guard = WatchdogHold(arbiter, timeout_s=1.0)
    assert guard.on_step(NOW) == []  # starts expecting
    guard.on_answer(NOW + 100 * MS)
    assert guard.on_step(NOW + 1000 * MS) == []
    events = guard.on_step(NOW + 1200 * MS)  # silent for 1.1 s
    assert [e.kind for e in events] == ["hold"] and arbiter.mode is Mode.HOLD and guard.holding
    assert "has not answered" in events[0].detail
    assert guard.on_step(NOW + 1300 * MS) == []  # once
    assert [e.kind for e in guard.on_answer(NOW + 2 * S)] == ["resume"] and arbiter.mode is Mode.AUTONOMOUS
    # an operator's hold is the operator's: an answer does not end it
    arbiter.hold(NOW + 3 * S, "teleop/hold")
    guard.operator_decided()
    assert guard.on_answer(NOW + 3 * S + 100 * MS) == [] and arbiter.mode is Mode.HOLD
