"""The in-process session with simulated inference latency: the same rules as the graph. Every
tick after the first chunk gets a policy action (async), each action runs once at the tick it was
planned for and is recorded with its chunk's observation, index, latency and merge rule; the
operator's take-over decides its first tick; after the hand-back the first policy action comes
from an observation taken at or after it. Sync execution with the same latency waits instead."""

from __future__ import annotations

import numpy as np
import pytest

from apo_ros.recording.reader import read_episode
from apo_ros.runtime.session import run_session

TICK_NS = 100_000_000
TAKE, GIVE = 20, 25  # the operator drives ticks 20..24


class SlowDrift:
    """Chunks of 8 small moves; the chunk's dx encodes its observation's tick."""

    policy_id = "slow-drift"

    def __init__(self):
        self.calls = 0

    def select_action(self, observation):
        self.calls += 1
        chunk = np.zeros((8, 7))
        chunk[:, 1] = 1e-4 * (1 + np.arange(8))  # y: index, so each action is traceable
        chunk[:, 6] = 1.0
        return chunk, True

    def reset(self):
        pass


class TakeOver:
    """Drives ticks TAKE..GIVE-1 (zero motion, gripper open), then hands back."""

    def __init__(self):
        self.tick = 0

    def reset(self, env):
        self.tick = 0

    def step(self, env, proposed):
        self.tick += 1
        if TAKE <= self.tick - 1 < GIVE:
            action = np.zeros(7)
            action[6] = 1.0
            return action
        return None


def _run(tmp_path, execution):
    summary = run_session("lemon_on_plate", SlowDrift(), TakeOver(), 1, str(tmp_path / execution),
                          max_steps=60, render=False, cameras=(), execution=execution,
                          delay_ticks=3, progress=False)
    episode = read_episode(summary.episodes[0].path, load_images=False)
    return summary, episode


def test_async_session_with_latency_keeps_every_tick_fed_and_records_the_truth(tmp_path):
    summary, episode = _run(tmp_path, "async")
    steps = episode.steps
    sources = [s.source for s in steps]
    first_human = sources.index("human")
    policy = [s for s in steps if s.source == "policy"]
    # take-over: the operator's first tick is the one the button was pressed at
    assert sources.count("human") == GIVE - TAKE
    t0 = steps[0].stamp_ns - 3 * TICK_NS  # ticks 0-2 waited for the first chunk (not recorded)
    assert (steps[first_human].stamp_ns - t0) // TICK_NS == TAKE
    # every other tick but the first chunk's 3 and the 3 after the hand-back ran a policy action
    assert len(policy) == 60 - 3 - (GIVE - TAKE) - 3
    keys = [(s.observation.stamp_ns, s.chunk.chunk_index) for s in policy]
    assert len(set(keys)) == len(keys), "an action ran twice"
    for s in policy:  # ran at the tick it was planned for, recorded with its provenance
        assert s.chunk.tick_stamp_ns == s.stamp_ns
        assert s.stamp_ns - s.observation.stamp_ns == s.chunk.chunk_index * TICK_NS
        assert s.chunk.latency_ns == 3 * TICK_NS and s.chunk.merge in ("", "replace")
        assert s.action[1] == pytest.approx(1e-4 * (1 + s.chunk.chunk_index))
    # hand-back: the first policy action after it comes from the hand-back tick or later
    back = next(s for s in steps[first_human:] if s.source == "policy")
    last_human = max(s.stamp_ns for s in steps if s.source == "human")
    assert back.observation.stamp_ns > last_human
    assert summary.runner["empty_ticks"] == 6 and summary.runner["late"] >= 3


def test_sync_session_with_the_same_latency_waits_for_every_chunk(tmp_path):
    _summary, episode = _run(tmp_path, "sync")
    policy = [s for s in episode.steps if s.source == "policy"]
    # 3 ticks of waiting per chunk of 8: far fewer policy actions in the same 60 ticks
    assert len(policy) <= 60 - (GIVE - TAKE) - 3 * 4
    assert all(s.chunk.chunk_index == (s.stamp_ns - s.observation.stamp_ns) // TICK_NS - 3
               for s in policy)  # the chunk ran from its first action, 3 ticks after its observation
