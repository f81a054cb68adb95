"""Chunk provenance inside action messages: exact round trip (stamps of today's ROS time survive
float64), readers that match by name still read the action, and the bag reader exposes it."""

from __future__ import annotations

import numpy as np

from apo_ros.observation import Observation
from apo_ros.recording import chunks
from apo_ros.recording import messages as M
from apo_ros.recording.reader import read_episode
from apo_ros.recording.writer import EpisodeWriter

NOW = 1_764_900_000_123_456_789  # a 2025 ROS time in ns: more digits than float64 holds at once


def test_provenance_round_trips_exactly_in_a_standard_message():
    info = chunks.ChunkInfo(chunk_index=5, latency_ns=312_000_000, merge="crossfade", tick_stamp_ns=NOW)
    msg = chunks.make_policy_action(M.rosbags_types(), NOW - 500_000_000, np.arange(7) / 100, "policy", info)
    action, source, stamp = M.joint_state_to_action(msg)  # by name: the action as before
    assert np.allclose(action, np.arange(7) / 100) and source == "policy" and stamp == NOW - 500_000_000
    back = chunks.split(*M.joint_state_arrays(msg))
    assert back == info
    plain = M.make_action(M.rosbags_types(), NOW, np.zeros(7), "human")
    assert chunks.split(*M.joint_state_arrays(plain)) is None


def test_the_reader_returns_each_steps_provenance(tmp_path):
    obs = [Observation(images={}, joint_positions=np.zeros(3), ee_pose=np.array([0.4, 0, 0.2, 0, 0, 0, 1.0]),
                       gripper=1.0, instruction="t", stamp_ns=NOW + k * 100_000_000) for k in range(4)]
    with EpisodeWriter(str(tmp_path / "ep"), metadata={"task": "t"}, cameras=()) as writer:
        for o in obs:
            writer.write_observation(o)
        for k in range(1, 4):  # a chunk from observation 0, its actions 1..3 run at ticks 1..3
            info = chunks.ChunkInfo(k, 250_000_000, "replace" if k == 3 else "", obs[k].stamp_ns)
            writer.write_action(obs[k].stamp_ns, np.full(7, 0.001 * k), "policy", obs[0].stamp_ns,
                                chunk=info)
        writer.write_action(obs[3].stamp_ns + 1, np.zeros(7), "human", obs[3].stamp_ns)
        writer.close("success")
    episode = read_episode(str(tmp_path / "ep"), load_images=False)
    policy = [s for s in episode.steps if s.source == "policy"]
    assert [s.chunk.chunk_index for s in policy] == [1, 2, 3]
    assert all(s.observation.stamp_ns == NOW for s in policy)  # paired with what the policy saw
    assert [s.chunk.tick_stamp_ns for s in policy] == [o.stamp_ns for o in obs[1:]]
    assert [s.chunk.merge for s in policy] == ["", "", "replace"]
    assert policy[0].chunk.latency_ns == 250_000_000 and np.allclose(policy[2].action, 0.003)
    assert episode.steps[-1].source == "human" and episode.steps[-1].chunk is None
