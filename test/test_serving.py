"""Remote policy serving: the wire format, the server's replies to good and bad requests, a slow or
hot-swapped server seen from the client, and ws:// wherever a checkpoint is accepted."""

from __future__ import annotations

import logging
import time

import msgpack
import numpy as np
import pytest
from serving_helpers import INSTRUCTION, make_checkpoint, observation

from apo_ros.actions.safety import SafetyFilter
from apo_ros.control.policy_runner import PolicyRunner
from apo_ros.policies import load_policy, policy_id
from apo_ros.serving import open_policy, protocol, provenance
from apo_ros.serving.client import RemoteConfig, RemotePolicy, RemotePolicyError, parse_url
from apo_ros.serving.server import PolicyServer, ServeConfig


def serve(policy, **config) -> PolicyServer:
    return PolicyServer(policy, ServeConfig(host="127.0.0.1", port=0, **config)).start()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("serving") / "ckpt")
    make_checkpoint(path)
    return path


# ---- the wire format ---------------------------------------------------------------------------
def test_arrays_travel_in_openpi_msgpack_numpy_layout():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    raw = msgpack.unpackb(protocol.packb({"x": a, "n": np.int64(7)}))  # no hook: the wire as is
    assert raw["x"] == {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": "<f4", b"shape": [3, 4]}
    assert raw["n"] == {b"__npgeneric__": True, b"data": 7, b"dtype": "<i8"}
    back = protocol.unpackb(protocol.packb({"x": a, "n": np.int64(7)}))
    assert back["x"].dtype == np.float32 and np.array_equal(back["x"], a) and back["x"].flags.writeable
    assert back["n"] == 7 and isinstance(back["n"], np.int64)


@pytest.mark.parametrize("bad, why", [
    (b"\xc1garbage", "not a valid msgpack"),
    ({b"__ndarray__": True, b"data": b"\x00" * 7, b"dtype": "<f4", b"shape": [2]}, "needs 8 bytes"),
    ({b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "|O", b"shape": [1]}, "not allowed"),
    ({b"__ndarray__": True, b"data": b"", b"dtype": "nonsense", b"shape": [0]}, "unknown array dtype"),
])
def test_malformed_arrays_are_refused_with_a_reason(bad, why):
    data = bad if isinstance(bad, bytes) else msgpack.packb(bad)
    with pytest.raises(protocol.ProtocolError, match=why):
        protocol.unpackb(data)
    with pytest.raises(protocol.ProtocolError, match="object"):
        protocol.packb(np.array([object()]))


def test_observation_round_trips_through_a_request():
    obs = observation(42)
    obs.object_poses = np.ones((2, 7), np.float32)
    request = protocol.unpackb(protocol.packb(protocol.observation_to_request(obs)))
    assert set(request) == {"observation/image", "observation/wrist_image", "observation/state",
                            "prompt", "observation/joint_position", "observation/object_poses",
                            "observation/stamp_ns"}
    back = protocol.request_to_observation(request, ("front", "wrist"))
    assert np.array_equal(back.images["front"], obs.images["front"])
    assert np.array_equal(back.proprio(), obs.proprio()) and back.instruction == INSTRUCTION
    assert back.stamp_ns == 42 and np.array_equal(back.object_state(), obs.object_state())


def test_url_options():
    assert parse_url("ws://gpu:8000?timeout_s=0.2")[1].timeout_s == 0.2
    with pytest.raises(RemotePolicyError, match="unknown option"):
        parse_url("ws://gpu:8000?timeout=1")
    with pytest.raises(RemotePolicyError, match="ws://HOST:PORT"):
        parse_url("ws://")


# ---- server and client in one process ------------------------------------------------------------
def test_remote_actions_equal_local_and_carry_the_ids(checkpoint, one_thread):
    local = load_policy(checkpoint, device="cpu")
    with serve(load_policy(checkpoint, device="cpu")) as server, \
            RemotePolicy(server.url + "?timeout_s=30") as remote:
        assert remote.metadata["policy_id"] == policy_id(checkpoint)
        assert remote.metadata["cameras"] == ["front", "wrist"] and remote.metadata["chunk_size"] == 2
        for stamp in (1, 2, 3):
            chunk, ok = remote.select_action(observation(stamp))
            expected, expected_ok = local.select_action(observation(stamp))
            assert ok and expected_ok and chunk.shape == (2, 7)
            np.testing.assert_array_equal(chunk, expected)
        assert provenance(remote) == provenance(local) == {
            "policy_id": policy_id(checkpoint), "stats_id": local.stats.statistics_id()}


def _raw_exchange(url: str, frames: list) -> list:
    from websockets.sync.client import connect

    with connect(url, compression=None, max_size=None) as ws:
        protocol.unpackb(ws.recv(timeout=10))  # metadata first
        replies = []
        for frame in frames:
            ws.send(frame)
            replies.append(ws.recv(timeout=10))
        return replies


def test_malformed_requests_get_an_error_reply_and_the_server_keeps_serving(checkpoint, one_thread):
    good = protocol.observation_to_request(observation(5))
    wrong_dtype = dict(good, **{"observation/image": good["observation/image"].astype(np.float32)})
    short_state = dict(good, **{"observation/state": np.zeros(3, np.float32)})
    no_prompt = {k: v for k, v in good.items() if k != "prompt"}
    bad_array = msgpack.packb({"observation/image": {b"__ndarray__": True, b"data": b"123",
                                                     b"dtype": "|u1", b"shape": [64, 64, 3]}})
    frames = [b"\x00\x01not msgpack", "a text frame", protocol.packb([1, 2, 3]),
              protocol.packb(wrong_dtype), protocol.packb(short_state), protocol.packb(no_prompt),
              bad_array, protocol.packb(good)]
    with serve(load_policy(checkpoint, device="cpu")) as server:
        replies = _raw_exchange(server.url, frames)
        assert server.errors == 7
    expected = ["not a valid msgpack", "text frame", "must be a map", "must be uint8", "8 values",
                "lacks ['prompt']", "needs 12288 bytes"]
    for reply, why in zip(replies, expected):
        assert isinstance(reply, str) and reply.startswith("error: bad request") and why in reply, reply
    last = protocol.unpackb(replies[-1])  # the same connection still answers a good request
    assert last["actions"].shape == (2, 7) and last["ok"] and last["stamp_ns"] == 5
    assert last["policy_id"] == policy_id(checkpoint)


class StampPolicy:
    """Answers with actions that encode the observation's stamp (dx = stamp * 1e-4), after
    `delays[stamp]` seconds: which observation an executed action came from is visible."""

    policy_id, cameras, chunk_size = "stamp-policy", ("front", "wrist"), 3

    def __init__(self, delays: dict[int, float]):
        self.delays = delays

    def select_action(self, obs):
        time.sleep(self.delays.get(obs.stamp_ns, 0.0))
        chunk = np.zeros((self.chunk_size, 7))
        chunk[:, 0] = obs.stamp_ns * 1e-4
        chunk[:, 6] = 1.0
        return chunk, True

    def reset(self):
        pass


def test_a_slow_reply_holds_and_is_never_executed_later(caplog):
    """Observation 4's inference takes 2.5 s against a 0.8 s timeout: its step holds (zero
    motion) and its late chunk is never executed; every executed action came from the observation
    it is stamped with."""
    with serve(StampPolicy({4: 2.5})) as server:
        remote = RemotePolicy(server.url + "?timeout_s=0.8&backoff_s=0.01&max_backoff_s=0.01")
        runner = PolicyRunner(remote, SafetyFilter(), policy_id="given")
        with caplog.at_level(logging.WARNING, logger="apo_ros.serving"):
            steps = []
            for stamp in range(1, 400):  # a 10 Hz loop until it has recovered (at most 40 s)
                steps.append(runner.step(observation(stamp, seed=0)))
                if stamp > 4 and steps[-1].ok and steps[-1].planned:
                    break
                time.sleep(0.1)
        remote.close()
    held = [s for s in steps if not s.ok]
    assert 4 in [s.obs_stamp_ns for s in held]
    assert all(s.reasons == ["policy_unavailable"] and np.all(s.action[:6] == 0) for s in held)
    for s in steps:
        if s.ok:  # dx encodes the stamp of the observation that produced it
            assert s.action[0] == pytest.approx(s.obs_stamp_ns * 1e-4)
            assert s.obs_stamp_ns != 4
    assert steps[-1].ok and steps[-1].obs_stamp_ns > 4  # recovered: planned from a new observation
    assert runner.policy_id == "stamp-policy"  # the id the server reports, not the one given
    assert any("no reply within 0.8 s; holding (zero motion)" in r.message for r in caplog.records)


def test_hot_swap_on_the_server_shows_in_the_replies(tmp_path, one_thread):
    path = str(tmp_path / "ckpt")
    first = make_checkpoint(path, seed=0)
    config = ServeConfig(host="127.0.0.1", port=0, watch_s=0.05)
    server = PolicyServer(load_policy(path, device="cpu"), config, checkpoint=path).start()
    try:
        remote = RemotePolicy(server.url)
        runner = PolicyRunner(remote, SafetyFilter())
        assert runner.step(observation(1)).policy_id == first
        second = make_checkpoint(path, seed=1)  # a new checkpoint saved over the served one
        assert second != first
        deadline = time.monotonic() + 20
        while server.slot.policy_id != second and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.request_replan()
        step = runner.step(observation(2))
        assert step.ok and step.policy_id == second == remote.policy_id
        assert remote.statistics_id == load_policy(path, device="cpu").stats.statistics_id()
        remote.reset()  # a new episode starts with the ids the server serves now
        assert remote.metadata["policy_id"] == second
        remote.close()
    finally:
        server.close()


def test_unreachable_server_is_one_clear_error_at_start_then_hold(checkpoint):
    with serve(load_policy(checkpoint, device="cpu")) as server:
        url = server.url
    with pytest.raises(RemotePolicyError, match=f"cannot reach the policy server at {url}"):
        open_policy(url + "?connect_timeout_s=1")
    remote = RemotePolicy(url, RemoteConfig(backoff_s=0.01), connect=False)
    chunk, ok = remote.select_action(observation(1))
    assert not ok and np.isnan(chunk).all() and remote.failure_reason == "policy_unavailable"


def test_a_state_policy_is_served_from_object_poses_without_images(one_thread):
    """A camera-less policy: the client sends no image (the server's metadata lists no camera),
    the object poses travel, and the actions are the local ones."""
    from apo_ros.policies import build_policy
    from apo_ros.policies.testing import default_statistics

    policy = build_policy("state", default_statistics(), instructions=[INSTRUCTION], chunk_size=2,
                          device="cpu")
    obs = observation(9)
    obs.object_poses = np.array([[0.5, 0.1, 0.05, 0, 0, 0, 1], [0.6, -0.1, 0.0, 0, 0, 0, 1]], np.float32)
    with serve(policy) as server, RemotePolicy(server.url + "?timeout_s=30") as remote:
        assert remote.metadata["cameras"] == []
        sent = protocol.observation_to_request(obs, tuple(remote.metadata["cameras"]))
        assert not [k for k in sent if k.endswith("image")] and "observation/object_poses" in sent
        chunk, ok = remote.select_action(obs)
    expected, _ = policy.select_action(obs)
    assert ok and np.array_equal(chunk, expected)
