"""The tabletop environment: the URDF, the model built from it, observations, reset determinism,
end-effector delta control, robustness to garbage actions."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from apo_ros.sim import make_env
from apo_ros.sim.scene import ARM_JOINTS, ARM_PREFIX, FINGER_JOINTS, JOINT_NAMES, urdf_path


@pytest.fixture(scope="module")
def env():
    e = make_env("lemon_on_plate", image_size=64)
    yield e
    e.close()


def test_urdf_parses_and_model_has_its_joints():
    import mujoco

    path = urdf_path()
    robot = ET.parse(path).getroot()
    urdf_joints = {j.get("name"): j for j in robot.iter("joint") if j.get("type") != "fixed"}
    assert tuple(urdf_joints) == JOINT_NAMES
    for link in robot.iter("link"):
        if link.get("name") != "tool0" and not link.get("name").endswith("_optical_frame"):
            assert float(link.find("inertial/mass").get("value")) > 0, link.get("name")

    arm = mujoco.MjSpec.from_file(str(path)).compile()
    assert [arm.joint(i).name for i in range(arm.njnt)] == list(JOINT_NAMES)

    model = make_env("hang_cup", render=False).model
    for name in ARM_JOINTS + FINGER_JOINTS:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, ARM_PREFIX + name)
        assert jid >= 0, name
        limit = urdf_joints[name].find("limit")
        np.testing.assert_allclose(model.jnt_range[jid], [float(limit.get("lower")),
                                                          float(limit.get("upper"))])
        expected = mujoco.mjtJoint.mjJNT_SLIDE if name in FINGER_JOINTS else mujoco.mjtJoint.mjJNT_HINGE
        assert model.jnt_type[jid] == expected
    assert model.nu == 8  # six arm servos + two finger servos
    assert {model.camera(i).name for i in range(model.ncam)} == {"front", ARM_PREFIX + "wrist"}


def test_observation_contents(env):
    obs = env.reset(0)
    assert set(obs.images) == {"front", "wrist"}
    for img in obs.images.values():
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank buffer
    assert obs.joint_positions.shape == (8,) and obs.joint_names == JOINT_NAMES
    assert obs.ee_pose.shape == (7,)
    assert abs(np.linalg.norm(obs.ee_pose[3:]) - 1) < 1e-6
    assert obs.gripper == pytest.approx(1.0, abs=0.02)
    assert obs.instruction == "put the lemon on the plate" == env.instruction
    assert obs.proprio().shape == (8,)
    stamp = obs.stamp_ns
    obs2, *_ = env.step(np.r_[np.zeros(6), 1.0])
    assert obs2.stamp_ns - stamp == pytest.approx(1e8, abs=1e5)  # 10 Hz
    assert env.step_count == 1
    big = env.render_image("front", 128)
    assert big.shape == (128, 128, 3)


def test_render_false_gives_no_images():
    e = make_env("square_on_stick", render=False)
    assert e.reset(1).images == {}


def test_reset_is_deterministic_per_seed(env):
    a, b, c = env.reset(7), env.reset(7), env.reset(8)
    lemon_c = env.body_pos("lemon")
    env.reset(7)
    lemon_a = env.body_pos("lemon")
    for cam in ("front", "wrist"):
        np.testing.assert_array_equal(a.images[cam], b.images[cam])
    np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
    np.testing.assert_array_equal(a.ee_pose, b.ee_pose)
    assert a.stamp_ns == b.stamp_ns
    assert np.linalg.norm(lemon_a - lemon_c) > 1e-3
    assert not np.array_equal(a.images["front"], c.images["front"])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ee_delta_moves_in_commanded_direction(axis):
    e = make_env("lemon_on_plate", render=False)
    e.reset(0)
    start = e.tcp_pos()
    rot0 = e.tcp_mat()
    action = np.zeros(7)
    action[axis] = 0.02
    action[6] = 1.0
    for _ in range(3):
        e.step(action)
    moved = e.tcp_pos() - start
    assert moved[axis] == pytest.approx(0.06, abs=0.004)
    others = np.delete(moved, axis)
    assert np.abs(others).max() < 0.003
    # Orientation held while translating.
    assert np.abs(e.tcp_mat() - rot0).max() < 0.01


def test_rotation_delta_rotates_about_base_axis():
    e = make_env("lemon_on_plate", render=False)
    e.reset(0)
    y0 = e.tcp_mat()[:, 1]
    pos0 = e.tcp_pos()
    for _ in range(2):
        e.step([0, 0, 0, 0, 0, 0.1, 1.0])  # +0.1 rad about base z per step
    y1 = e.tcp_mat()[:, 1]
    angle = np.arctan2(y0[0] * y1[1] - y0[1] * y1[0], y0 @ y1)
    assert angle == pytest.approx(0.2, abs=0.01)
    assert np.linalg.norm(e.tcp_pos() - pos0) < 0.003


def test_gripper_closes_and_opens():
    e = make_env("lemon_on_plate", render=False)
    e.reset(0)
    for _ in range(3):
        obs, *_ = e.step([0, 0, 0, 0, 0, 0, 0.0])
    assert obs.gripper < 0.05
    for _ in range(3):
        obs, *_ = e.step([0, 0, 0, 0, 0, 0, 1.0])
    assert obs.gripper > 0.95


def test_nan_and_huge_actions_do_not_break_the_sim():
    e = make_env("square_on_stick", render=False)
    e.reset(3)
    pos0 = e.tcp_pos()
    obs, reward, terminated, truncated, info = e.step([np.nan] * 7)
    assert np.all(np.isfinite(e.data.qpos)) and np.all(np.isfinite(obs.ee_pose))
    assert np.linalg.norm(e.tcp_pos() - pos0) < 1e-3  # NaN = no motion
    assert e.gripper_command == 1.0  # a NaN gripper keeps the last command
    e.step([np.inf, -np.inf, np.nan, np.inf, 0, 0, np.inf])
    assert np.all(np.isfinite(e.data.qpos))
    for _ in range(5):  # absurdly large commands are limited, the arm stays in its workspace
        e.step([5.0, -5.0, -5.0, 3.0, 3.0, 3.0, 7.0])
    assert np.all(np.isfinite(e.data.qpos))
    assert e.tcp_pos()[2] > 0.0  # never below the table top
    e.step([0.0, 0.0, 0.02, 0, 0, 0, 1])  # and it still obeys afterwards
    with pytest.raises(ValueError, match="7 values"):
        e.step([0.0, 1.0])


def test_truncation_at_max_steps():
    e = make_env("hang_cup", render=False, max_steps=3)
    assert e.max_steps == 3
    e.reset(0)
    results = [e.step([0, 0, 0, 0, 0, 0, 1.0]) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert results[-1][4] == {"success": False, "failure": None, "step": 3}


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        make_env("stack_blocks")
    with pytest.raises(ValueError, match="camera"):
        make_env("hang_cup", cameras=("top",))
    e = make_env("hang_cup", render=False)
    with pytest.raises(ValueError, match="camera"):
        e.render_image("top", 64)


def test_a_nudged_lemon_settles_on_the_table():
    """Rolling and torsional friction: a 0.6 m/s push sends the lemon centimetres and it comes to
    rest within seconds (with rolling-free contacts on a plane it rolled ~3 m and kept rocking)."""
    from apo_ros.sim.diagnostics import nudge

    pushed = nudge("lemon_on_plate", speed=0.6, seconds=6.0)
    assert pushed["distance_m"] < 0.3 and pushed["at_rest_after_s"] is not None
    assert pushed["at_rest_after_s"] < 4.0
    rocked = nudge("lemon_on_plate", speed=0.2, seconds=6.0)
    assert rocked["at_rest_after_s"] is not None and rocked["final_spin"] < 0.02


def test_the_table_has_an_edge_and_a_floor():
    """The table top is a finite box: off its edge an object falls to the floor."""
    import mujoco

    from apo_ros.sim.scene import FLOOR_Z, TABLE_CENTER, TABLE_SIZE

    env = make_env("lemon_on_plate", render=False)
    env.reset(0)
    adr = env.free_qpos_adr("lemon")
    env.data.qpos[adr:adr + 3] = [TABLE_CENTER[0] + TABLE_SIZE[0] + 0.05, 0.0, 0.03]  # past the edge
    mujoco.mj_step(env.model, env.data, nstep=500)  # 2 s
    assert env.body_pos("lemon")[2] < FLOOR_Z + 0.05
    env.data.qpos[adr:adr + 3] = [TABLE_CENTER[0] + TABLE_SIZE[0] - 0.05, 0.0, 0.03]  # on the table
    env.data.qvel[:] = 0
    mujoco.mj_step(env.model, env.data, nstep=500)
    assert abs(env.body_pos("lemon")[2] - 0.021) < 0.003


@pytest.mark.parametrize("where,reason", [((0.75, 0.0, 0.021), "object_left_workspace"),
                                          ((0.40, 0.0, -0.30), "object_fell")])
def test_an_unrecoverable_object_ends_the_episode_as_a_failure(where, reason):
    env = make_env("lemon_on_plate", render=False)
    env.reset(1)
    _o, _r, terminated, truncated, info = env.step(np.r_[np.zeros(6), 1.0])
    assert not terminated and info["failure"] is None
    adr = env.free_qpos_adr("lemon")
    env.data.qpos[adr:adr + 3] = where
    env.forward()
    _o, reward, terminated, truncated, info = env.step(np.r_[np.zeros(6), 1.0])
    assert terminated and not truncated and reward == 0.0
    assert info["success"] is False and info["failure"] == reason
