"""`bag_statistics`: the human-step statistics of recorded bags, on bags written here with known
answers (which steps chase the object, which yaw actions leave the demos' range)."""

import numpy as np

from apo_ros.observation import Observation
from apo_ros.recording import EpisodeWriter
from apo_ros.sim.diagnostics import bag_statistics

NOW = 1_700_000_000_000_000_000
EE = np.array([0.4, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0])


def _write(path, steps):
    """steps: (source, action (7,), object x) per control tick."""
    with EpisodeWriter(str(path), metadata={"task": "t"}, cameras=()) as writer:
        for k, (source, action, x) in enumerate(steps):
            stamp = NOW + k * 100_000_000
            pose = np.array([[x, 0.0, 0.02, 0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
            writer.write_observation(Observation(images={}, joint_positions=np.zeros(3), ee_pose=EE,
                                                 gripper=1.0, instruction="t", stamp_ns=stamp,
                                                 object_poses=pose))
            writer.write_action(stamp + 1, np.asarray(action, dtype=float), source, stamp)
        writer.close("success")


def _action(move: float, yaw: float, gripper: float) -> list[float]:
    return [move, 0.0, 0.0, 0.0, 0.0, yaw, gripper]


def test_bag_statistics_counts_chasing_and_out_of_range_yaw(tmp_path):
    # demos: yaw actions spread evenly over [-0.1, 0.1]: the 1st-99th percentile is +-0.098
    _write(tmp_path / "demos" / "ep0", [("human", _action(0.01, yaw, 1.0), 0.4)
                                        for yaw in np.linspace(-0.1, 0.1, 11)])
    _write(tmp_path / "deploy" / "ep0", [
        ("policy", _action(0.01, 0.0, 1.0), 0.40),
        ("human", _action(0.01, 0.0, 1.0), 0.41),    # open, moving, object moved 10 mm: chasing
        ("human", _action(0.01, 0.5, 1.0), 0.411),   # open, moving, object moved 1 mm; yaw outside
        ("human", _action(0.01, -0.5, 0.0), 0.411),  # gripper closed (carrying); yaw outside
        ("human", _action(0.0, 0.0, 1.0), 0.431),    # open, object moved 20 mm, arm still: no chase
    ])
    stats = bag_statistics([str(tmp_path / "demos")], [str(tmp_path / "deploy")])
    assert stats["episodes"] == 1
    assert stats["human_steps"] == 4
    assert stats["open_gripper_human_steps"] == 3
    assert stats["chasing_share_of_open_gripper_steps"] == round(1 / 3, 3)
    assert stats["yaw_outside_demo_q01_q99_share"] == 0.5
    assert stats["demo_yaw_q01_q99"] == [-0.098, 0.098]
