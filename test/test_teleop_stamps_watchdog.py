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
