"""Episode bags: every field written by EpisodeWriter comes back from read_episode; the files are
real ROS 2 MCAP (decoded by the official mcap + mcap-ros2-support readers); CDR input takes the same
path as message objects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from apo_ros.actions.space import ACTION_NAMES
from apo_ros.recording import BagError, EpisodeWriter, read_episode, schema
from apo_ros.recording import messages as M
from apo_ros.recording.synthetic import JOINT_NAMES, START_NS, STEP_NS, synthetic_observation


def _write_reference(path, *, image_format="raw", serialized=False):
    """Write a small episode by hand, remembering every value written."""
    rng = np.random.default_rng(7)
    expected = []
    meta = {"task": "lift", "instruction": "lift the red cube", "policy_id": "ckpt-7",
            "operator": "alice", "stats_id": "abc123", "extra_number": 3}
    sources = ["policy", "policy", "human", "human", "policy", "expert"]
    with EpisodeWriter(str(path), metadata=meta, image_format=image_format) as w:
        w.write_event(START_NS, "start")
        for i, src in enumerate(sources):
            stamp = START_NS + (i + 1) * STEP_NS
            obs = synthetic_observation(rng, stamp, size=24, index=i, instruction=meta["instruction"])
            action = rng.uniform(-0.05, 0.05, size=7)
            proposed = None if src == "expert" else rng.uniform(-0.05, 0.05, size=7)
            human = action if src == "human" else None
            if serialized:  # the ROS recorder's path: CDR bytes as rclpy hands them over
                t = w.types
                store = w.typestore
                for cam in w.cameras:
                    msg = M.make_image(t, stamp, obs.images[cam], frame_id=cam) if image_format == "raw" \
                        else M.make_compressed_image(t, stamp, obs.images[cam], frame_id=cam)
                    w.write_serialized(schema.image_topic(cam, image_format), msg.__msgtype__, stamp,
                                       store.serialize_cdr(msg, msg.__msgtype__))
                joints = M.make_joint_state(t, stamp, obs.joint_names, obs.joint_positions)
                parts = [(schema.JOINT_STATES, joints),
                         (schema.EE_POSE, M.make_pose_stamped(t, stamp, obs.ee_pose)),
                         (schema.GRIPPER_STATE, M.make_gripper_state(t, stamp, obs.gripper)),
                         (schema.OBJECT_POSES, M.make_pose_array(t, stamp, obs.object_poses))]
                for topic, msg in parts:
                    cdr = store.serialize_cdr(msg, msg.__msgtype__)
                    w.write_serialized(topic, msg.__msgtype__, stamp, cdr)
                if human is not None:
                    msg = M.make_action(t, stamp, human, "human")
                    w.write_serialized(schema.ACTION_HUMAN, schema.JOINT_STATE, stamp + 1000,
                                       store.serialize_cdr(msg, schema.JOINT_STATE))
                if proposed is not None:
                    msg = M.make_action(t, stamp, proposed, "policy")
                    w.write_serialized(schema.ACTION_PROPOSED, schema.JOINT_STATE, stamp + 2000,
                                       store.serialize_cdr(msg, schema.JOINT_STATE))
                msg = M.make_action(t, stamp, action, src)
                w.write_serialized(schema.ACTION_EXECUTED, schema.JOINT_STATE, stamp + 2000,
                                   store.serialize_cdr(msg, schema.JOINT_STATE))
            else:
                w.write_observation(obs)
                if human is not None:
                    w.write_human_command(stamp + 1000, human, stamp)
                w.write_action(stamp + 2000, action, src, stamp, proposed=proposed)
            expected.append((obs, action, src, stamp + 2000, proposed, human))
            if src == "human" and sources[i - 1] != "human":
                w.write_event(stamp, "intervention_start")
        w.write_event(START_NS + 10 * STEP_NS, "success")
        w.close("success")
    return expected, meta


@pytest.mark.parametrize("image_format", ["raw", "jpeg"])
def test_round_trip_every_field(tmp_path, image_format):
    expected, meta = _write_reference(tmp_path / "ep", image_format=image_format)
    ep = read_episode(str(tmp_path / "ep"))
    assert len(ep.steps) == len(expected) and ep.dropped_steps == 0
    for step, (obs, action, src, stamp, proposed, human) in zip(ep.steps, expected):
        o = step.observation
        assert step.source == src and step.stamp_ns == stamp
        assert o.stamp_ns == obs.stamp_ns  # exact linkage to the observation the action came from
        np.testing.assert_array_equal(step.action, action)
        if proposed is None:
            assert step.proposed is None
        else:
            np.testing.assert_array_equal(step.proposed, proposed)
        if human is None:
            assert step.human is None
        else:
            np.testing.assert_array_equal(step.human, human)
        np.testing.assert_array_equal(o.joint_positions, obs.joint_positions)
        assert o.joint_names == JOINT_NAMES
        np.testing.assert_array_equal(o.ee_pose, obs.ee_pose)
        assert o.object_poses.shape == (2, 7)
        np.testing.assert_array_equal(o.object_poses, obs.object_poses)
        assert o.gripper == obs.gripper
        assert o.instruction == meta["instruction"]
        assert set(o.images) == {"front", "wrist"}
        for cam, img in obs.images.items():
            assert o.images[cam].shape == img.shape and o.images[cam].dtype == np.uint8
            if image_format == "raw":
                np.testing.assert_array_equal(o.images[cam], img)
            else:  # JPEG is lossy: close, not equal
                assert np.abs(o.images[cam].astype(int) - img).mean() < 6
    assert ep.outcome == "success" and not ep.truncated
    assert [k for _, k in ep.events] == ["start", "intervention_start", "success"]
    for key in ("task", "instruction", "policy_id", "operator", "stats_id"):
        assert ep.metadata[key] == str(meta[key])
    assert ep.metadata["extra_number"] == "3"
    assert ep.metadata["outcome"] == "success" and ep.metadata["apo_ros_version"]
    assert ep.interventions() == [(2, 4)]


def test_bag_metadata_is_rosbag2_v8_mcap_zstd_with_qos(tmp_path):
    _write_reference(tmp_path / "ep")
    info = yaml.safe_load((tmp_path / "ep" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8 and info["storage_identifier"] == "mcap"
    assert info["compression_mode"] == "" and info["compression_format"] == ""  # zstd is per chunk
    assert info["custom_data"]["outcome"] == "success"
    assert all(isinstance(v, str) for v in info["custom_data"].values())
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"] for t in info["topics_with_message_count"]}
    assert topics[schema.ACTION_EXECUTED]["type"] == "sensor_msgs/msg/JointState"
    latched = yaml.safe_load(topics[schema.INSTRUCTION]["offered_qos_profiles"])
    assert latched[0]["durability"] == 1  # transient local (v8 enum)
    assert yaml.safe_load(topics[schema.ACTION_EXECUTED]["offered_qos_profiles"])[0]["durability"] == 2
    # chunks are zstd-compressed inside the MCAP
    from mcap.reader import make_reader

    with open(tmp_path / "ep" / "ep.mcap", "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary.chunk_indexes and {c.compression for c in summary.chunk_indexes} == {"zstd"}


def test_official_mcap_ros2_decoder_reads_every_message(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    expected, _ = _write_reference(tmp_path / "ep")
    info = yaml.safe_load((tmp_path / "ep" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    counts: dict[str, int] = {}
    executed = []
    with open(tmp_path / "ep" / "ep.mcap", "rb") as f:
        for schema_, channel, _message, decoded in make_reader(
                f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            assert schema_.encoding == "ros2msg"
            if channel.topic == schema.ACTION_EXECUTED:
                executed.append((decoded.header.frame_id, list(decoded.name), list(decoded.position),
                                 decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec))
            if channel.topic == "camera/front/image_raw":
                assert decoded.encoding == "rgb8" and decoded.height == 24
    assert sum(counts.values()) == info["message_count"]
    assert [e[0] for e in executed] == [e[2] for e in expected]
    assert all(e[1] == list(ACTION_NAMES) for e in executed)
    np.testing.assert_allclose([e[2] for e in executed], [e[1] for e in expected])
    assert [e[3] for e in executed] == [e[0].stamp_ns for e in expected]


def test_serialized_path_gives_the_same_bag_content(tmp_path):
    _write_reference(tmp_path / "objects")
    _write_reference(tmp_path / "cdr", serialized=True)
    from rosbags.rosbag2 import Reader

    def content(path):
        with Reader(path) as r:
            return sorted((c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in r.messages())

    a, b = content(tmp_path / "objects"), content(tmp_path / "cdr")
    assert len(a) == len(b) and a == b


def test_write_serialized_checks_topic_type_and_adds_extra_topics(tmp_path):
    with EpisodeWriter(str(tmp_path / "ep"), metadata={}) as w:
        msg = M.make_string(w.types, "hello")
        cdr = w.typestore.serialize_cdr(msg, schema.STRING)
        with pytest.raises(ValueError, match="expected sensor_msgs/msg/JointState"):
            w.write_serialized(schema.ACTION_EXECUTED, schema.STRING, 5, cdr)
        with pytest.raises(ValueError, match="not a standard type"):
            w.write_serialized("diagnostics_custom", "my_pkg/msg/Thing", 5, b"\x00\x01\x00\x00")
        w.write_serialized("operator/note", schema.STRING, 5, w.typestore.serialize_cdr(msg, schema.STRING))
        w.close("failure")
    info = yaml.safe_load((tmp_path / "ep" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_count"]}
    assert counts["operator/note"] == 1 and counts[schema.EPISODE_EVENTS] == 1  # close wrote "failure"
    ep = read_episode(str(tmp_path / "ep"))
    assert ep.outcome == "failure" and ep.steps == [] and [k for _, k in ep.events] == ["failure"]
    info_msg = json.loads(_info_topic(tmp_path / "ep"))
    assert info_msg["outcome"] == "unknown"  # episode/info is written at the start


def _info_topic(path):
    from rosbags.rosbag2 import Reader

    store = M.get_typestore()
    with Reader(path) as r:
        conns = [c for c in r.connections if c.topic == schema.EPISODE_INFO]
        for c, _, raw in r.messages(connections=conns):
            return store.deserialize_cdr(raw, c.msgtype).data
    return "{}"


def test_writer_rejects_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    with EpisodeWriter(str(tmp_path / "ep"), metadata={}) as w:
        with pytest.raises(ValueError, match="7 values"):
            w.write_action(1, np.zeros(6), "policy", 1)
        with pytest.raises(ValueError, match="source"):
            w.write_action(1, np.zeros(7), "robot", 1)
        with pytest.raises(ValueError, match="event kind"):
            w.write_event(1, "crash")
        obs = synthetic_observation(rng, 10, size=8, cameras=("front",))
        with pytest.raises(ValueError, match="lacks camera images"):
            w.write_observation(obs)
        with pytest.raises(ValueError, match="outcome"):
            w.close("great")
    with pytest.raises(FileExistsError):
        EpisodeWriter(str(tmp_path / "ep"), metadata={})


def test_actions_link_by_stamp_not_arrival(tmp_path):
    """Actions written out of order relative to observations still find their own observation."""
    rng = np.random.default_rng(3)
    obs = [synthetic_observation(rng, START_NS + i * STEP_NS, size=8, index=i) for i in range(4)]
    with EpisodeWriter(str(tmp_path / "ep"), metadata={}) as w:
        for o in obs:
            w.write_observation(o)
        # all actions arrive after the last observation, and for observation 1 before 0
        w.write_action(START_NS + 10 * STEP_NS, np.full(7, 1.0), "policy", obs[1].stamp_ns)
        w.write_action(START_NS + 11 * STEP_NS, np.full(7, 0.0), "policy", obs[0].stamp_ns)
        w.write_action(START_NS + 12 * STEP_NS, np.full(7, 3.0), "human", obs[3].stamp_ns)
        w.write_action(START_NS + 13 * STEP_NS, np.full(7, 9.0), "policy", START_NS + 99)  # no such obs
    ep = read_episode(str(tmp_path / "ep"))
    assert [s.observation.stamp_ns for s in ep.steps] == [obs[1].stamp_ns, obs[0].stamp_ns, obs[3].stamp_ns]
    for s in ep.steps:
        o = obs[[x.stamp_ns for x in obs].index(s.observation.stamp_ns)]
        np.testing.assert_array_equal(s.observation.images["front"], o.images["front"])
    assert ep.dropped_steps == 1 and ep.outcome == "unknown"


def test_chunk_steps_keep_their_own_proposals(tmp_path):
    """A chunked policy executes several actions planned from one observation: each step reads
    back its own proposal, not the chunk's last one."""
    rng = np.random.default_rng(3)
    chunk = rng.uniform(-0.05, 0.05, size=(3, 7))
    with EpisodeWriter(str(tmp_path / "ep"), metadata={"task": "t"}) as w:
        obs = synthetic_observation(rng, START_NS, size=16)
        w.write_observation(obs)
        for k in range(3):  # executed = proposal + a safety-filter-like change
            w.write_action(START_NS + (k + 1) * STEP_NS, chunk[k] * 0.5, "policy", START_NS,
                           proposed=chunk[k])
        w.close("failure")
    ep = read_episode(str(tmp_path / "ep"), load_images=False)
    assert len(ep.steps) == 3
    for k, step in enumerate(ep.steps):
        np.testing.assert_array_equal(step.proposed, chunk[k])
        np.testing.assert_array_equal(step.action, chunk[k] * 0.5)


def test_messages_helpers_round_trip():
    t = M.rosbags_types("jazzy")
    ns = 1_700_000_123_456_789_012
    assert M.stamp_to_ns(M.ns_to_stamp(t, ns)) == ns
    img = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    np.testing.assert_array_equal(M.image_to_numpy(M.make_image(t, ns, img)), img)
    bgr = t.Image(header=M.make_header(t, ns), height=5, width=4, encoding="bgr8", is_bigendian=0,
                  step=16, data=np.pad(img[:, :, ::-1].reshape(5, 12), ((0, 0), (0, 4))).reshape(-1))
    np.testing.assert_array_equal(M.image_to_numpy(bgr), img)  # padded rows + BGR handled
    a = np.arange(7) / 10
    action, source, stamp = M.joint_state_to_action(M.make_action(t, ns, a, "human"))
    np.testing.assert_array_equal(action, a)
    assert source == "human" and stamp == ns
    shuffled = M.make_joint_state(t, ns, list(reversed(ACTION_NAMES)), a[::-1], frame_id="policy")
    np.testing.assert_array_equal(M.joint_state_to_action(shuffled)[0], a)
    pose = np.array([0.1, 0.2, 0.3, 0, 0, 0, 1.0])
    np.testing.assert_array_equal(M.pose_stamped_to_array(M.make_pose_stamped(t, ns, pose)), pose)
    lin, ang = M.twist_stamped_to_arrays(M.make_twist_stamped(t, ns, [1, 2, 3], [4, 5, 6]))
    assert lin.tolist() == [1, 2, 3] and ang.tolist() == [4, 5, 6]
    with pytest.raises(ValueError, match="7 values"):
        M.make_action(t, ns, np.zeros(3), "policy")
    with pytest.raises(ValueError):
        M.ns_to_stamp(t, -1)


def test_messages_rclpy_flavor_uses_array_array():
    """rclpy message classes want array.array for numeric sequences; the helpers give them that."""
    import array
    from types import SimpleNamespace

    class Msg:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    t = SimpleNamespace(flavor="rclpy", **{n: Msg for n in ("Time", "Header", "JointState", "Image")})
    js = M.make_joint_state(t, 5, ["a", "b"], [1.0, 2.0])
    assert isinstance(js.position, array.array) and js.position.typecode == "d"
    assert list(js.position) == [1, 2]
    im = M.make_image(t, 5, np.zeros((2, 2, 3), np.uint8))
    assert isinstance(im.data, array.array) and im.data.typecode == "B" and len(im.data) == 12


def test_not_a_bag_errors_name_the_path(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        read_episode(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"empty: not a bag \(no metadata.yaml\)"):
        read_episode(str(tmp_path / "empty"))


def test_fast_cdr_decoders_match_rosbags():
    from apo_ros.recording import cdr

    t = M.rosbags_types()
    store = t.typestore
    ns = 1_700_000_000_123_456_789
    cases = [([], ""), (["a"], "x"), (["abc", "de", "f" * 7], "policy"), (list(ACTION_NAMES), "human")]
    for names, frame in cases:
        msg = M.make_joint_state(t, ns, names, np.arange(len(names)) * 0.5, frame_id=frame)
        raw = store.serialize_cdr(msg, schema.JOINT_STATE)
        cache: list = []
        for _ in range(2):  # second time through the names cache
            stamp, frame_id, got_names, pos = cdr.joint_state(raw, cache)
            assert (stamp, frame_id, list(got_names)) == (ns, frame, names)
            np.testing.assert_array_equal(pos, msg.position)
    for frame in ("", "ab", "base_link"):
        pose = np.array([1, 2, 3, 0.5, 0.5, 0.5, 0.5])
        raw = store.serialize_cdr(M.make_pose_stamped(t, ns, pose, frame_id=frame), schema.POSE_STAMPED)
        stamp, got = cdr.pose_stamped(raw)
        assert stamp == ns
        np.testing.assert_array_equal(got, pose)
    img = np.random.default_rng(0).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    for enc, data, step in [("rgb8", img, 9), ("bgr8", img[:, :, ::-1], 12), ("mono8", img[:, :, :1], 4)]:
        rows = np.zeros((5, step), np.uint8)
        rows[:, :data.shape[1] * data.shape[2]] = data.reshape(5, -1)
        msg = t.Image(header=M.make_header(t, ns, "cam"), height=5, width=3, encoding=enc, is_bigendian=0,
                      step=step, data=rows.reshape(-1))
        raw = store.serialize_cdr(msg, schema.IMAGE)
        stamp, got = cdr.image(raw)
        assert stamp == ns
        np.testing.assert_array_equal(got, M.image_to_numpy(msg))
        assert got.flags.writeable  # a copy, not a read-only view of the reader's buffer
    assert cdr.string(store.serialize_cdr(M.make_string(t, "héllo"), schema.STRING)) == "héllo"
    big_endian = b"\x00\x00\x00\x00" + bytes(40)
    with pytest.raises(cdr.CdrLayoutError):
        cdr.joint_state(big_endian)


def test_tolerance_links_independent_sensor_streams(tmp_path):
    """Bags recorded from independent streams (a camera at 30 Hz, joints at 500 Hz): exact
    linkage drops the step; a tolerance takes the latest part at most that much older."""
    img = np.zeros((4, 4, 3), np.uint8)
    with EpisodeWriter(str(tmp_path / "ep"), metadata={}, cameras=("front",)) as w:
        w.write_joint_state(START_NS - 1_000_000, np.ones(2), ["a", "b"])
        w.write_joint_state(START_NS - 3_000_000, np.zeros(2), ["a", "b"])  # older, arrives later
        w.write_ee_pose(START_NS - 500_000, [0, 0, 0, 0, 0, 0, 1])
        w.write_gripper(START_NS - 2_000_000, 0.25)
        w.write_image("front", START_NS, img)
        w.write_action(START_NS + 10, np.zeros(7), "policy", START_NS)
    exact = read_episode(str(tmp_path / "ep"))
    assert exact.steps == [] and exact.dropped_steps == 1
    loose = read_episode(str(tmp_path / "ep"), tolerance_ns=5_000_000)
    (step,) = loose.steps
    assert step.observation.stamp_ns == START_NS and step.observation.gripper == 0.25
    np.testing.assert_array_equal(step.observation.joint_positions, np.ones(2))  # the latest, by stamp
    tight = read_episode(str(tmp_path / "ep"), tolerance_ns=1_500_000)
    assert tight.dropped_steps == 1  # the gripper state is 2 ms old: outside 1.5 ms
