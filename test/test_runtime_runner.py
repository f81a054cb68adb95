"""PolicyRunner: chunk execution, the SafetyFilter in the loop, hot-swap, latency figures."""

import threading

import numpy as np
import pytest

from apo_ros.actions.safety import SafetyConfig, SafetyFilter
from apo_ros.control.policy_runner import PolicyRunner, RunnerConfig
from apo_ros.observation import Observation


def obs(stamp, x=0.5, gripper=1.0):
    return Observation(images={}, joint_positions=np.zeros(3), ee_pose=np.array([x, 0, 0.3, 0, 0, 0, 1.0]),
                       gripper=gripper, instruction="test", stamp_ns=stamp)


class ChunkPolicy:
    """Returns chunks whose dx encodes (call number, index) so the test can trace every action."""

    def __init__(self, T=3, scale=1e-3, ok=True):
        self.T, self.scale, self.ok = T, scale, ok
        self.calls = 0
        self.resets = 0

    def select_action(self, o):
        self.calls += 1
        chunk = np.zeros((self.T, 7))
        chunk[:, 0] = self.scale * (10 * self.calls + np.arange(self.T))
        chunk[:, 6] = 1.0
        return chunk, self.ok

    def reset(self):
        self.resets += 1


class NanPolicy(ChunkPolicy):
    def select_action(self, o):
        self.calls += 1
        return np.full((2, 7), np.nan), True


def test_chunk_executed_step_by_step_then_replanned():
    policy = ChunkPolicy(T=3)
    runner = PolicyRunner(policy, SafetyFilter(), RunnerConfig())
    steps = [runner.step(obs(100 + i)) for i in range(7)]
    assert [s.planned for s in steps] == [True, False, False, True, False, False, True]
    assert [s.chunk_index for s in steps] == [0, 1, 2, 0, 1, 2, 0]
    # every action is stamped with the observation its chunk was computed from
    assert [s.obs_stamp_ns for s in steps] == [100, 100, 100, 103, 103, 103, 106]
    np.testing.assert_allclose([s.action[0] for s in steps],
                               [0.010, 0.011, 0.012, 0.020, 0.021, 0.022, 0.030])
    assert policy.calls == 3 and all(s.ok for s in steps)


def test_replan_every_and_request():
    policy = ChunkPolicy(T=5)
    runner = PolicyRunner(policy, SafetyFilter(), RunnerConfig(replan_every=2))
    planned = [runner.step(obs(i)).planned for i in range(5)]
    assert planned == [True, False, True, False, True]
    runner.request_replan()
    assert runner.step(obs(5)).planned


def test_nan_policy_never_reaches_the_arm():
    policy = NanPolicy()
    flt = SafetyFilter()
    runner = PolicyRunner(policy, flt)
    for i in range(5):
        s = runner.step(obs(i, gripper=0.3))
        assert not s.ok and np.all(np.isfinite(s.action))
        assert np.all(s.action[:6] == 0) and s.action[6] == pytest.approx(0.3)  # gripper held
        assert np.isnan(s.proposed).all() and "nan" in s.reasons
        assert s.planned  # the rest of a bad chunk is dropped, so it re-plans every step
    assert flt.rejected == 5 and flt.counts["nan"] == 5


def test_decode_failure_is_zero_motion():
    runner = PolicyRunner(ChunkPolicy(ok=False), SafetyFilter())
    s = runner.step(obs(0, gripper=0.6))
    assert not s.ok and s.reasons == ["decode_failed"] and np.all(s.action[:6] == 0)
    assert s.action[6] == 0.6 and runner.decode_failures == 1


def test_filter_clamps_and_workspace_use_current_state():
    policy = ChunkPolicy(T=1, scale=1.0)  # dx = 10 m: far above the per-step limit
    flt = SafetyFilter(SafetyConfig(max_delta=(0.05,) * 3 + (0.25,) * 3, workspace_max=(0.85, 0.5, 0.7)))
    runner = PolicyRunner(policy, flt)
    assert runner.step(obs(0, x=0.5)).action[0] == pytest.approx(0.05)
    s = runner.step(obs(1, x=0.84))  # 1 cm from the wall
    assert s.action[0] == pytest.approx(0.01) and "workspace:x_max" in s.reasons


def test_stale_observation_rejected_when_now_given():
    # (a horizon long enough that the queued action itself is not too old to run)
    runner = PolicyRunner(ChunkPolicy(), SafetyFilter(SafetyConfig(max_input_age_s=0.5)),
                          RunnerConfig(horizon_s=5.0))
    assert runner.step(obs(0), now_ns=100_000_000).ok
    s = runner.step(obs(0), now_ns=2_000_000_000)
    assert not s.ok and "stale" in s.reasons


def test_policy_exception_stops_arm_not_loop():
    class Boom(ChunkPolicy):
        def select_action(self, o):
            raise RuntimeError("cuda out of memory")

    runner = PolicyRunner(Boom(), SafetyFilter())
    s = runner.step(obs(0))
    assert not s.ok and np.all(s.action[:6] == 0)


def test_hot_swap_between_steps_mid_chunk():
    a, b = ChunkPolicy(T=4, scale=1e-3), ChunkPolicy(T=4, scale=2e-3)
    runner = PolicyRunner(a, SafetyFilter(), policy_id="a")
    s0, s1 = runner.step(obs(0)), runner.step(obs(1))
    assert s0.policy_id == s1.policy_id == "a"
    runner.swap_policy(b, "b")
    s2 = runner.step(obs(2))
    # the new policy plans immediately (the old chunk is dropped) and was reset
    assert s2.planned and s2.policy_id == "b" and s2.obs_stamp_ns == 2 and b.resets == 1
    assert s2.action[0] == pytest.approx(0.02)
    assert runner.swaps == 1 and a.calls == 1


def test_hot_swap_from_another_thread_never_drops_a_step():
    policies = [ChunkPolicy(T=2, scale=1e-4 * (k + 1)) for k in range(20)]
    runner = PolicyRunner(policies[0], SafetyFilter(), policy_id="0")
    stop = threading.Event()

    def swapper():
        for k, p in enumerate(policies[1:], start=1):
            runner.swap_policy(p, str(k))
            if stop.wait(0.001):
                return

    t = threading.Thread(target=swapper)
    t.start()
    outs = [runner.step(obs(i)) for i in range(2000)]
    stop.set()
    t.join()
    assert len(outs) == 2000 and all(o.ok for o in outs)
    assert runner.steps == 2000 and runner.swaps >= 1
    ids = [int(o.policy_id) for o in outs]
    assert ids == sorted(ids)  # swaps apply in order, between steps


def test_latency_and_stats():
    runner = PolicyRunner(ChunkPolicy(T=1), SafetyFilter())
    assert runner.latency_ms()["n"] == 0
    for i in range(10):
        runner.step(obs(i))
    st = runner.stats()
    assert st["latency_ms"]["n"] == 10 and st["latency_ms"]["p99"] >= st["latency_ms"]["p50"] >= 0
    assert st["filter"]["calls"] == 10 and st["plans"] == 10


def test_config_validation():
    with pytest.raises(ValueError, match="rate_hz"):
        RunnerConfig(rate_hz=0)
