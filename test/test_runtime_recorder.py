"""EpisodeRecorder over the real EpisodeWriter: lifecycle, interventions, buttons, raw CDR path."""

import numpy as np
import pytest

from apo_ros.recording import messages as M
from apo_ros.recording.reader import read_episode
from apo_ros.recording.synthetic import synthetic_observation
from apo_ros.runtime.recorder import EpisodeRecorder, RecorderConfig, episode_name
from apo_ros.runtime.ros_io import cdr_header_stamp_ns
from apo_ros.teleop.arbiter import ArbiterEvent, ArbiterOutput, Mode
from apo_ros.teleop.device import DeviceState

MS = 1_000_000


def out(source, action, obs, events=()):
    return ArbiterOutput(np.asarray(action, float), source, Mode.AUTONOMOUS, obs,
                         [ArbiterEvent(k, s) for k, s in events], proposed=np.full(7, 0.001))


def test_lifecycle_interventions_and_sources(tmp_path):
    rec = EpisodeRecorder(RecorderConfig(bags_dir=str(tmp_path), task="lift cube", operator="sim"))
    rng = np.random.default_rng(0)
    path = rec.start(0, instruction="lift the red cube", policy_id="ckpt-1")
    assert rec.active and "lift-cube_001" in path
    with pytest.raises(RuntimeError, match="already"):
        rec.start(1)
    sources = ["policy", "policy", "human", "human", "none", "policy", "human"]
    for i, src in enumerate(sources):
        stamp = (i + 1) * 100 * MS
        rec.record_observation(synthetic_observation(rng, stamp, size=16, index=i))
        events = []
        if src == "human" and (i == 0 or sources[i - 1] != "human"):
            events.append(("intervention_start", stamp))
        if src != "human" and i > 0 and sources[i - 1] == "human":
            events.append(("intervention_end", stamp))
        rec.record_arbiter(stamp + MS, out(src, [0.001 * i, 0, 0, 0, 0, 0, 1.0], stamp, events))
    record = rec.failure()  # ends inside an intervention: the recorder closes it
    assert not rec.active
    assert (record.outcome, record.steps, record.human_steps, record.interventions) == ("failure", 6, 3, 2)
    ep = read_episode(path, load_images=False)
    assert ep.outcome == "failure"
    assert ep.sources == ["policy", "policy", "human", "human", "policy", "human"]  # "none" not written
    assert ep.interventions() == [(2, 4), (5, 6)]
    assert ep.metadata["policy_id"] == "ckpt-1" and ep.metadata["operator"] == "sim"
    # actions are linked to the observation they came from
    assert [s.observation.stamp_ns for s in ep.steps] == [100 * MS, 200 * MS, 300 * MS, 400 * MS,
                                                           600 * MS, 700 * MS]


def test_second_episode_gets_a_new_bag_and_buttons_drive_lifecycle(tmp_path):
    cfg = RecorderConfig(bags_dir=str(tmp_path), task="t", start_button=2, success_button=3,
                         abort_button=4)
    rec = EpisodeRecorder(cfg)
    pressed = DeviceState(t=1, buttons=(0, 0, 1, 0, 0))
    assert rec.on_device(pressed, 0) == "start"
    assert rec.on_device(DeviceState(t=2, buttons=(0, 0, 1, 0, 0)), 1) is None  # held, no edge
    rec.record_observation(synthetic_observation(np.random.default_rng(1), 5, size=8))
    rec.record_action(6, np.zeros(7), "expert", 5)
    assert rec.on_device(DeviceState(t=3, buttons=(0, 0, 0, 1, 0)), 10) == "success"
    assert rec.on_device(DeviceState(t=4, buttons=(0, 0, 1, 0, 0)), 20) == "start"
    assert rec.on_device(DeviceState(t=5, buttons=(0, 0, 0, 0, 1)), 30) == "abort"
    paths = [r.path for r in rec.records]
    assert len(set(paths)) == 2 and [r.outcome for r in rec.records] == ["success", "abort"]
    assert read_episode(paths[0], load_images=False).sources == ["expert"]


def test_raw_cdr_path_written_at_header_stamp(tmp_path):
    """The recorder node's path: bytes as rclpy hands them (here serialized by rosbags, same CDR)."""
    rec = EpisodeRecorder(RecorderConfig(bags_dir=str(tmp_path), task="raw", cameras=("front",)))
    path = rec.start(0)
    types = M.rosbags_types()
    ts = types.typestore
    img = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    stamp = 1_500_000_123
    msgs = [("camera/front/image_raw", M.make_image(types, stamp, img)),
            ("joint_states", M.make_joint_state(types, stamp, ["j1"], [0.1])),
            ("ee_pose", M.make_pose_stamped(types, stamp, [0.5, 0, 0.3, 0, 0, 0, 1])),
            ("gripper/state", M.make_gripper_state(types, stamp, 0.8)),
            ("action/executed", M.make_action(types, stamp, np.arange(7) / 100, "policy"))]
    for topic, msg in msgs:
        cdr = ts.serialize_cdr(msg, msg.__msgtype__)
        assert cdr_header_stamp_ns(cdr) == stamp
        rec.record_serialized(topic, msg.__msgtype__, cdr_header_stamp_ns(cdr), cdr)
    rec.success()
    ep = read_episode(path)
    assert len(ep.steps) == 1 and ep.steps[0].observation.stamp_ns == stamp
    np.testing.assert_array_equal(ep.steps[0].observation.images["front"], img)
    np.testing.assert_allclose(ep.steps[0].action, np.arange(7) / 100)


def test_no_episode_errors_and_close_aborts(tmp_path):
    rec = EpisodeRecorder(RecorderConfig(bags_dir=str(tmp_path)))
    with pytest.raises(RuntimeError, match="start one first"):
        rec.record_action(0, np.zeros(7), "policy", 0)
    with pytest.raises(RuntimeError, match="start one first"):
        rec.success()
    rec.start(0)
    rec.close()
    assert rec.records[-1].outcome == "abort"
    assert episode_name("a b/c", 7, when=0).endswith("_a-b-c_007")
