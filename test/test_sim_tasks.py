"""Tasks: instructions, seeded placement, success predicates on hand-placed states, experts."""

from __future__ import annotations

import numpy as np
import pytest

from apo_ros.sim import TASKS, make_env, make_expert
from apo_ros.sim import tasks as T


def place(env, body: str, pos, yaw: float = 0.0) -> None:
    adr = env.free_qpos_adr(body)
    env.data.qpos[adr:adr + 3] = pos
    env.data.qpos[adr + 3:adr + 7] = T.yaw_quat(yaw)
    env.data.qvel[:] = 0
    env.forward()


def test_task_table():
    assert set(TASKS) == {"lemon_on_plate", "square_on_stick", "hang_cup", "lemon_on_plate_easy"}
    assert TASKS["lemon_on_plate"].instruction == "put the lemon on the plate"
    assert TASKS["square_on_stick"].instruction == "insert the square into the stick"
    assert TASKS["hang_cup"].instruction == "hang the cup on the rack"
    for task in TASKS.values():
        assert 100 <= task.max_steps <= 200


@pytest.mark.parametrize("name", sorted(TASKS))
def test_initial_states_are_randomized_and_not_successful(name):
    env = make_env(name, render=False)
    positions = []
    for seed in range(4):
        env.reset(seed)
        assert not env.is_success()
        positions.append(env.body_pos(env.task.object_body))
        # The object rests on the table, inside the work area.
        assert 0.2 < positions[-1][0] < 0.6 and abs(positions[-1][1]) < 0.3
    spread = np.ptp(np.array(positions)[:, :2], axis=0)
    assert spread.min() > 0.01


def test_easy_lemon_variant_narrows_only_the_randomization():
    full, easy = TASKS["lemon_on_plate"], TASKS["lemon_on_plate_easy"]
    assert easy.instruction == full.instruction and easy.max_steps == full.max_steps
    assert full.lemon_box == (0.28, 0.50, -0.22, 0.22) and full.lemon_yaw == pytest.approx(np.pi / 2)
    env = make_env("lemon_on_plate_easy", render=False)
    x0, x1, y0, y1 = easy.lemon_box
    px0, px1, py0, py1 = easy.plate_box
    for seed in range(8):
        env.reset(seed)
        lemon, plate = env.body_pos("lemon"), env.body_pos("plate")
        assert x0 - 0.005 <= lemon[0] <= x1 + 0.005 and y0 - 0.005 <= lemon[1] <= y1 + 0.005
        assert px0 <= plate[0] <= px1 and py0 <= plate[1] <= py1
        closing = env.body_mat("lemon")[:, 0]  # the long axis: yaw within +- lemon_yaw
        assert abs(np.arctan2(closing[1], closing[0])) <= easy.lemon_yaw + 0.05


def test_lemon_predicate():
    env = make_env("lemon_on_plate", render=False)
    env.reset(0)
    plate = env.body_pos("plate")
    place(env, "lemon", [plate[0] + 0.01, plate[1] - 0.01, T.PLATE_TOP + T.LEMON_SIZE[2]], 0.3)
    assert env.is_success()
    place(env, "lemon", [plate[0], plate[1] + 0.12, T.LEMON_SIZE[2]])  # beside the plate
    assert not env.is_success()
    place(env, "lemon", [plate[0], plate[1], 0.12])  # above it, not on it
    assert not env.is_success()


def test_square_predicate():
    env = make_env("square_on_stick", render=False)
    env.reset(0)
    stick = env.body_pos("stick")
    place(env, "square", [stick[0] + 0.005, stick[1], T.NUT_HALF_HEIGHT], 0.7)
    assert env.is_success()
    place(env, "square", [stick[0], stick[1], T.STICK_HEIGHT + T.NUT_HALF_HEIGHT + 0.001])
    assert not env.is_success()  # on top of the stick, not around it
    place(env, "square", [stick[0] - 0.15, stick[1], T.NUT_HALF_HEIGHT])
    assert not env.is_success()


def test_hang_cup_predicate_and_the_cup_stays_hung():
    env = make_env("hang_cup", render=False)
    env.reset(0)
    rack = env.body_pos("rack")
    hang_y = rack[1] - T.POST_HALF - T.PEG_LENGTH / 2
    # Handle towards +x, its top bar resting on the peg.
    place(env, "cup", [rack[0] - T.HOLE_CENTER[0], hang_y, T.PEG_Z + T.PEG_RADIUS - T.HOLE_Z1 + 0.001])
    terminated = False
    for _ in range(10):  # one second of physics: it swings, settles and stays
        _obs, _r, terminated, _trunc, _info = env.step([0, 0, 0, 0, 0, 0, 1.0])
    assert env.is_success() and terminated
    assert env.body_pos("cup")[2] > 0.08
    place(env, "cup", [0.35, -0.1, T.CUP_HALF_HEIGHT])  # standing on the table
    assert not env.is_success()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_expert_succeeds(name):
    env = make_env(name, render=False)
    for seed in (11, 12):
        expert = make_expert(name, seed=seed)
        env.reset(seed)
        expert.reset(env)
        terminated = truncated = False
        phases = set()
        while not (terminated or truncated):
            action = expert.act(env)
            assert np.abs(action[:3]).max() <= 0.04 + 1e-9  # a 0.05 m safety filter never clips
            assert np.linalg.norm(action[3:6]) <= 0.2 + 1e-9
            phases.add(expert.phase)
            _obs, _r, terminated, truncated, info = env.step(action)
        assert terminated and info["success"], (name, seed)
        assert 30 <= env.step_count <= 120
        assert {"approach", "descend", "close", "lift", "transport", "release"} <= phases


def test_noisy_expert_still_succeeds_and_differs():
    env = make_env("square_on_stick", render=False)
    runs = []
    for noise in (0.0, 0.5, 0.0):
        expert = make_expert("square_on_stick", noise=noise, seed=3)
        env.reset(5)
        expert.reset(env)
        actions, terminated, truncated = [], False, False
        while not (terminated or truncated):
            actions.append(expert.act(env))
            _o, _r, terminated, truncated, info = env.step(actions[-1])
        assert info["success"], noise
        runs.append(np.array(actions))
    clean, noisy, clean_again = runs
    # without noise the expert is deterministic: the noise is the only difference
    np.testing.assert_array_equal(clean, clean_again)
    # the first step (the same state for both): every moving axis is perturbed by about the
    # noise's scale (std 0.5 x 0.01 m and 0.5 x 0.05 rad at full speed; 5 std at most), the gripper
    # command never
    step = noisy[0] - clean[0]
    assert np.all(np.abs(step[:3]) > 1e-6) and np.all(np.abs(step[:3]) < 5 * 0.5 * 0.01)
    assert np.all(np.abs(step[3:6]) > 1e-6) and np.all(np.abs(step[3:6]) < 5 * 0.5 * 0.05)
    assert step[6] == 0.0
