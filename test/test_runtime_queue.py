"""The action queue between inference and control: latency-aware merging (replace, ACT temporal
ensembling, cross-fade), the horizon, flushing, and PolicyRunner driving it in step (simulated
latency, sync against async) and from a background thread (a policy that really takes time)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from apo_ros.actions.safety import SafetyFilter
from apo_ros.control.action_queue import ActionQueue, QueueConfig
from apo_ros.control.policy_runner import PolicyRunner, RunnerConfig
from apo_ros.observation import Observation

S = 1_000_000_000
TICK = S // 10  # 10 Hz


def chunk(values, dim0=True):
    c = np.zeros((len(values), 7))
    c[:, 0 if dim0 else 1] = values
    c[:, 6] = 1.0
    return c


def obs(k: int, x: float = 0.5) -> Observation:
    return Observation(images={}, joint_positions=np.zeros(3), ee_pose=np.array([x, 0, 0.3, 0, 0, 0, 1.0]),
                       gripper=1.0, instruction="t", stamp_ns=S + k * TICK)


class TracePolicy:
    """Chunks whose dx encodes (the observation's tick, the index), so every executed action can
    be traced to the observation and index it came from; optional real sleep."""

    def __init__(self, T: int = 8, sleep_s: float = 0.0):
        self.T, self.sleep_s, self.calls, self.resets = T, sleep_s, 0, 0

    def select_action(self, o):
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        k = round((o.stamp_ns - S) / TICK)
        return chunk([1e-6 * (100 * k + i) for i in range(self.T)]), True

    def reset(self):
        self.resets += 1


def decode(action) -> tuple[int, int]:
    v = round(action[0] / 1e-6)
    return v // 100, v % 100


# ---- the queue alone -----------------------------------------------------------------------

def test_a_late_chunk_drops_the_actions_whose_tick_has_passed():
    q = ActionQueue()
    r = q.merge(chunk([0, 1, 2, 3, 4]), obs_tick=10, obs_stamp_ns=7, now_tick=13)
    assert (r.late, r.queued) == (3, 2) and q.late == 3
    assert q.take(12) is None  # the past is not replayed ...
    a = q.take(13)
    assert a.action[0] == 3 and a.chunk_index == 3 and a.obs_stamp_ns == 7  # ... index 3 runs at 13
    assert q.take(14).chunk_index == 4 and q.take(15) is None


def test_a_chunk_that_arrives_entirely_late_leaves_the_queue_alone():
    q = ActionQueue()
    q.merge(chunk([5, 6, 7]), 0, 1, 0)
    r = q.merge(chunk([9, 9]), obs_tick=0, obs_stamp_ns=2, now_tick=2)
    assert r.queued == 0 and q.take(2).action[0] == 7


def test_merge_rules_on_the_overlap():
    old, new = chunk([0.0] * 6), chunk([1.0] * 6)
    replace = ActionQueue(QueueConfig("replace"))
    replace.merge(old, 0, 100, 0)
    replace.merge(new, 2, 200, 3)  # from tick 2, arriving at 3: index 1 runs at 3
    got = [replace.take(t) for t in range(3, 8)]
    assert [g.action[0] for g in got] == [1.0] * 5 and got[0].chunk_index == 1
    assert [g.merge for g in got] == ["replace"] * 3 + [""] * 2  # ticks 3-5 overlapped the old plan

    fade = ActionQueue(QueueConfig("crossfade"))
    closed = old.copy()
    closed[:, 6] = 0.0  # the old plan closes the gripper, the new one opens it
    fade.merge(closed, 0, 100, 0)
    fade.merge(new, 2, 200, 3)  # overlap: ticks 3, 4, 5 -> 1/4, 2/4, 3/4 of the way, then new
    faded = [fade.take(t).action for t in range(3, 8)]
    assert [a[0] for a in faded] == pytest.approx([0.25, 0.5, 0.75, 1, 1])
    assert [a[6] for a in faded] == [1.0] * 5  # never a half-closed gripper: the newest plan decides

    ens = ActionQueue(QueueConfig("ensemble", ensemble_decay=0.5))
    ens.merge(old, 0, 100, 0)
    ens.merge(new, 2, 200, 3)
    w = np.exp(-0.5 * np.arange(2))  # oldest prediction weighs most (ACT)
    expected = w[1] / w.sum()
    a = ens.take(3)
    assert a.action[0] == pytest.approx(expected) and a.merge == "ensemble"
    assert a.obs_stamp_ns == 200 and a.chunk_index == 1  # provenance: the newest chunk
    assert ens.take(6).action[0] == 1.0 and ens.take(6) is None


def test_actions_older_than_the_horizon_never_run_and_flush_forgets():
    q = ActionQueue(QueueConfig(horizon_s=0.5))
    q.merge(chunk([1, 2, 3, 4, 5, 6, 7, 8]), 0, obs_stamp_ns=S, now_tick=0)
    assert q.take(0, now_ns=S).action[0] == 1
    assert q.take(5, now_ns=S + 5 * TICK).action[0] == 6  # 0.5 s: still inside
    assert q.take(6, now_ns=S + 6 * TICK) is None and q.expired == 1  # 0.6 s old: never runs
    assert q.skipped == 4  # ticks 1-4 were never served
    q.merge(chunk([1, 2]), 7, S + 7 * TICK, 7)
    assert q.flush() == 2 and q.take(7) is None


def test_queue_config_is_checked():
    with pytest.raises(ValueError, match="merge"):
        QueueConfig(merge="average")
    with pytest.raises(ValueError, match="execution"):
        RunnerConfig(execution="later")
    with pytest.raises(ValueError, match="delay_ticks"):
        RunnerConfig(background=True, delay_ticks=2)


# ---- the runner with simulated latency (in-step inference) ---------------------------------

def run_ticks(runner, n, start=0):
    return [runner.step(obs(k), now_ns=obs(k).stamp_ns) for k in range(start, start + n)]


@pytest.mark.parametrize("merge", ["replace", "ensemble", "crossfade"])
def test_async_with_three_ticks_latency_runs_every_tick_each_action_once_at_its_tick(merge):
    policy = TracePolicy(T=8)
    runner = PolicyRunner(policy, SafetyFilter(), RunnerConfig(delay_ticks=3, merge=merge))
    steps = run_ticks(runner, 60)
    served = [s for s in steps if not s.empty]
    assert [s.empty for s in steps[:3]] == [True] * 3  # the first chunk needs 3 ticks
    assert len(served) == 57 and runner.empty_ticks == 3  # after that, no tick without an action
    seen = set()
    for s in served:
        key = (s.obs_stamp_ns, s.chunk_index)
        assert key not in seen, "an action ran twice"
        seen.add(key)
        obs_tick = round((s.obs_stamp_ns - S) / TICK)
        assert obs_tick + s.chunk_index == s.tick  # it ran at the tick it was planned for
        assert s.latency_ns == 3 * TICK and s.tick_stamp_ns == obs(s.tick).stamp_ns
        if merge == "replace":
            assert decode(s.action) == (obs_tick, s.chunk_index)  # exactly what was planned
    assert runner.queue.late >= 3 * (policy.calls - 1)  # every chunk lost its 3 past actions


def test_sync_waits_for_each_chunk_and_runs_it_from_the_start():
    runner = PolicyRunner(TracePolicy(T=8), SafetyFilter(),
                          RunnerConfig(execution="sync", delay_ticks=3))
    steps = run_ticks(runner, 44)
    # 3 ticks of zero motion while the chunk is computed, then its 8 actions: 8 of every 11 ticks
    assert [not s.empty for s in steps[:11]] == [False] * 3 + [True] * 8
    assert sum(not s.empty for s in steps) == 32
    assert [s.chunk_index for s in steps[3:11]] == list(range(8))


def test_without_latency_async_is_the_synchronous_runner():
    a = [decode(s.action) for s in run_ticks(PolicyRunner(TracePolicy(5), SafetyFilter()), 23)]
    b = [decode(s.action) for s in run_ticks(
        PolicyRunner(TracePolicy(5), SafetyFilter(), RunnerConfig(execution="sync")), 23)]
    assert a == b and a[:6] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (5, 0)]


def test_hand_back_flushes_and_the_first_action_comes_from_a_later_observation():
    runner = PolicyRunner(TracePolicy(T=8), SafetyFilter(), RunnerConfig(delay_ticks=2))
    run_ticks(runner, 10)
    runner.flush(not_before_ns=obs(10).stamp_ns)
    steps = run_ticks(runner, 6, start=10)
    assert [s.empty for s in steps[:2]] == [True, True]  # nothing from before the hand-back
    first = next(s for s in steps if not s.empty)
    assert first.obs_stamp_ns >= obs(10).stamp_ns


def test_a_refill_threshold_in_seconds_asks_earlier():
    policy = TracePolicy(T=8)
    runner = PolicyRunner(policy, SafetyFilter(), RunnerConfig(refill_steps=0, refill_s=0.4))
    run_ticks(runner, 8)
    # 8 actions per chunk, a new one asked for when 4 remain: at ticks 0 and 4
    assert policy.calls == 2


# ---- background inference (policy_node's mode): real time ---------------------------------

def test_background_inference_never_blocks_the_tick_and_keeps_the_arm_fed():
    policy = TracePolicy(T=8, sleep_s=0.15)  # 1.5 control periods per inference
    runner = PolicyRunner(policy, SafetyFilter(), RunnerConfig(background=True))
    ready = threading.Event()
    runner.on_result = ready.set
    steps, slowest = [], 0.0
    try:
        t0 = time.monotonic()
        for k in range(40):
            while time.monotonic() < t0 + k * 0.1:
                time.sleep(0.002)
            tick_start = time.monotonic()
            now = time.time_ns()
            o = Observation(images={}, joint_positions=np.zeros(3),
                            ee_pose=np.array([0.5, 0, 0.3, 0, 0, 0, 1.0]), gripper=1.0,
                            instruction="t", stamp_ns=now)
            s = runner.step(o, now_ns=now)
            slowest = max(slowest, time.monotonic() - tick_start)
            steps.append(s)
    finally:
        runner.close()
    served = [s for s in steps if not s.empty]
    keys = [(s.obs_stamp_ns, s.chunk_index) for s in served]
    assert len(keys) == len(set(keys)), "an action ran twice"
    # generous: on a loaded machine ticks slip, but most of the 40 must get a policy action
    assert len(served) >= 20, (len(served), runner.stats())
    assert all(s.latency_ns > 0 for s in served)
    assert slowest < 0.15  # a tick never waited for the 150 ms inference
    assert runner.queue.late >= 1  # chunks did arrive late, and their past actions were dropped


# ---- the arbiter node's clock with a command that overtakes its observation ----------------

def test_a_command_that_arrives_before_its_observation_waits_for_its_step():
    from apo_ros.runtime.ros_io import ControlSteps

    steps = ControlSteps(deadline_s=0.06)
    steps.observe(1 * S, 1 * S)
    steps.close()
    assert not steps.accept(2 * S, 1 * S + 90 * 1_000_000)  # step 2 is not open yet: not now ...
    assert steps.early(2 * S, "cmd2")  # ... but kept for it
    assert not steps.early(1 * S, "old")  # one for a step already past is not kept
    assert steps.take_early() is None  # step 2 has not opened
    steps.observe(2 * S, 2 * S)
    assert steps.take_early() == (2 * S, "cmd2") and steps.accept(2 * S, 2 * S + 1)
    steps.close()
    steps.early(4 * S, "cmd4")
    steps.observe(3 * S, 3 * S)
    assert steps.take_early() is None  # for step 4: still waiting
    steps.observe(5 * S, 5 * S)
    assert steps.take_early() is None  # step 4 never opened: the command is dropped, not shifted


def test_inactive_runner_does_not_act_and_resumes_from_a_newer_observation():
    policy = TracePolicy(T=8)
    runner = PolicyRunner(policy, SafetyFilter(), RunnerConfig(delay_ticks=0))
    assert runner.tick(obs(0), obs(0).stamp_ns) is not None  # acting
    runner.set_active(False, obs(1).stamp_ns)  # the operator takes over
    assert runner.tick(obs(1), obs(1).stamp_ns) is None and policy.calls == 1  # no inference
    runner.set_active(True, obs(3).stamp_ns)  # hand-back, after observation 2 was taken
    assert runner.tick(obs(2), obs(2).stamp_ns) is None  # the old plan is gone; obs 2 is too old
    step = runner.tick(obs(3), obs(3).stamp_ns)
    assert step is not None and step.obs_stamp_ns == obs(3).stamp_ns and step.chunk_index == 0
