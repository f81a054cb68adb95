"""The three tabletop tasks: objects, seeded initial states, success predicates, instructions.

Coordinates are in the arm's base frame, which is the world frame: x away from the robot, y to its
left, z up, the table top at z = 0. Each task has one manipulated free object and static fixtures
(mocap bodies, so each environment places them in its own MjData without touching the shared
model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from apo_ros.sim.scene import (  # noqa: E402
    CONTACT_SOLIMP,
    CONTACT_SOLREF,
    GRASP_MIN_Z,
    OBJECT_CONDIM,
    OBJECT_FRICTION,
    SceneInfo,  # noqa: E402
)
from apo_ros.sim.task_specs import TASK_SPECS, TaskSpec, check_task_name  # noqa: E402


class TaskEnv(Protocol):
    """What a task reads and sets in its environment (a `TabletopEnv`): the env builds its scene
    from the task, so the task names the env by this interface instead of importing it."""

    data: mujoco.MjData
    info: SceneInfo

    def body_pos(self, name: str) -> np.ndarray: ...

    def body_mat(self, name: str) -> np.ndarray: ...

    def geoms_of(self, body: str) -> frozenset[int]: ...

    def free_qpos_adr(self, body: str) -> int: ...

    def set_mocap_pos(self, body: str, pos) -> None: ...

    def touching(self, geoms_a: frozenset[int], geoms_b: frozenset[int]) -> bool: ...

_BOX = mujoco.mjtGeom.mjGEOM_BOX
_CYL = mujoco.mjtGeom.mjGEOM_CYLINDER
_ELL = mujoco.mjtGeom.mjGEOM_ELLIPSOID
_SPH = mujoco.mjtGeom.mjGEOM_SPHERE


def yaw_quat(yaw: float) -> np.ndarray:
    """(w, x, y, z) quaternion of a rotation by `yaw` about z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _visual(body, **kw) -> None:
    body.add_geom(contype=0, conaffinity=0, group=1, **kw)


def _object_geom(body, **kw) -> None:
    body.add_geom(friction=OBJECT_FRICTION, condim=OBJECT_CONDIM, solref=CONTACT_SOLREF,
                  solimp=CONTACT_SOLIMP, **kw)


def _sample_xy(rng: np.random.Generator, box: tuple[float, float, float, float]) -> np.ndarray:
    x0, x1, y0, y1 = box
    return np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])


@dataclass(frozen=True)
class Task:
    """A task: its objects, how a seed places them, and when it is done."""

    name: str
    instruction: str  # the language instruction given to the policy
    max_steps: int = 160  # default episode length at 10 Hz (truncation)
    hold_steps: int = 1  # consecutive control steps the success predicate must hold to terminate
    object_body: str = ""  # the manipulated (free) object
    target_body: str = ""  # where it must go (plate, stick, rack)

    @property
    def state_bodies(self) -> tuple[str, ...]:
        """The bodies whose poses an observation carries (Observation.object_poses), in order."""
        return tuple(b for b in (self.object_body, self.target_body) if b)

    def add_objects(self, spec: mujoco.MjSpec) -> None:
        raise NotImplementedError

    def randomize(self, env: TaskEnv, rng: np.random.Generator) -> None:
        """Place fixtures and the object for a new episode (before physics settles)."""
        raise NotImplementedError

    def is_success(self, env: TaskEnv) -> bool:
        raise NotImplementedError

    # ---- geometry the experts and the operator use (privileged state) -------------------------
    def grasp_target(self, env: TaskEnv) -> tuple[np.ndarray, np.ndarray]:
        """(TCP position to grasp the object at, horizontal closing direction for the fingers)."""
        raise NotImplementedError

    def threaded(self, env: TaskEnv) -> bool:
        """Whether the object already sits on its goal fixture (threaded onto it), so letting go
        finishes the task: gravity takes it the rest of the way. Default: no such fixture."""
        return False

    def object_point(self, env: TaskEnv) -> np.ndarray:
        """The object reference point the placing path is written for (default: body origin)."""
        return env.body_pos(self.object_body)

    def place_path(self, env: TaskEnv) -> list[np.ndarray]:
        """Waypoints for `object_point` from after the lift to the release pose (last)."""
        raise NotImplementedError

    def carry_yaw(self, env: TaskEnv) -> float:
        """Rotation about z (rad) the held object still needs before it can be placed."""
        return 0.0

    # ---- shared helpers -----------------------------------------------------------------------
    def _place_free(self, env: TaskEnv, body: str, pos, yaw: float) -> None:
        adr = env.free_qpos_adr(body)
        env.data.qpos[adr:adr + 3] = pos
        env.data.qpos[adr + 3:adr + 7] = yaw_quat(yaw)

    def _released(self, env: TaskEnv) -> bool:
        return not env.touching(env.geoms_of(self.object_body), env.info.finger_geoms)


# ------------------------------------------------------------------------------------------------
# put the lemon on the plate
LEMON_SIZE = (0.030, 0.024, 0.021)  # ellipsoid semi-axes: long along x, grasped across y, rests on z
PLATE_RADIUS = 0.075
PLATE_HALF_HEIGHT = 0.005
PLATE_TOP = 2 * PLATE_HALF_HEIGHT


@dataclass(frozen=True)
class LemonOnPlate(Task):
    # Seeded initial state: (x0, x1, y0, y1) boxes the plate and the lemon centres are drawn from,
    # and the lemon's yaw range (+- rad). The defaults are the full task; the "easy" variant
    # narrows them so a small BC policy on 64 px images learns to grasp from tens of demos.
    plate_box: tuple[float, float, float, float] = (0.36, 0.54, -0.20, 0.20)
    lemon_box: tuple[float, float, float, float] = (0.28, 0.50, -0.22, 0.22)
    lemon_yaw: float = np.pi / 2

    def add_objects(self, spec: mujoco.MjSpec) -> None:
        plate = spec.worldbody.add_body(name="plate", mocap=True, pos=[0.45, 0.15, 0])
        plate.add_geom(name="plate", type=_CYL, size=[PLATE_RADIUS, PLATE_HALF_HEIGHT, 0],
                       pos=[0, 0, PLATE_HALF_HEIGHT], rgba=[0.93, 0.93, 0.90, 1],
                       friction=OBJECT_FRICTION, condim=OBJECT_CONDIM)
        _visual(plate, type=_CYL, size=[PLATE_RADIUS - 0.018, 0.0006, 0],
                pos=[0, 0, PLATE_TOP], rgba=[0.80, 0.84, 0.88, 1])
        lemon = spec.worldbody.add_body(name="lemon", pos=[0.35, -0.1, LEMON_SIZE[2]])
        lemon.add_freejoint(name="lemon_joint")
        _object_geom(lemon, name="lemon", type=_ELL, size=list(LEMON_SIZE), mass=0.06,
                     rgba=[0.98, 0.85, 0.12, 1])
        for sign in (-1, 1):  # the two tips that make an ellipsoid read as a lemon
            _visual(lemon, type=_SPH, size=[0.0065, 0, 0], pos=[sign * (LEMON_SIZE[0] - 0.002), 0, 0],
                    rgba=[0.90, 0.78, 0.10, 1], mass=0)

    def randomize(self, env: TaskEnv, rng: np.random.Generator) -> None:
        plate = _sample_xy(rng, self.plate_box)
        while True:
            lemon = _sample_xy(rng, self.lemon_box)
            if np.linalg.norm(lemon - plate) > PLATE_RADIUS + 0.08:
                break
        env.set_mocap_pos("plate", [plate[0], plate[1], 0.0])
        self._place_free(env, "lemon", [lemon[0], lemon[1], LEMON_SIZE[2]],
                         rng.uniform(-self.lemon_yaw, self.lemon_yaw))

    def is_success(self, env: TaskEnv) -> bool:
        lemon, plate = env.body_pos("lemon"), env.body_pos("plate")
        on_plate = np.linalg.norm(lemon[:2] - plate[:2]) < PLATE_RADIUS - 0.015
        resting = lemon[2] < PLATE_TOP + LEMON_SIZE[2] + 0.012
        return bool(on_plate and resting and self._released(env))

    def grasp_target(self, env: TaskEnv) -> tuple[np.ndarray, np.ndarray]:
        mat = env.body_mat("lemon")
        pos = env.body_pos("lemon")
        return np.array([pos[0], pos[1], max(pos[2], GRASP_MIN_Z)]), mat[:, 1]

    def place_path(self, env: TaskEnv) -> list[np.ndarray]:
        plate = env.body_pos("plate")
        release = np.array([plate[0], plate[1], PLATE_TOP + LEMON_SIZE[2] + 0.012])
        return [np.array([plate[0], plate[1], 0.14]), release]


# ------------------------------------------------------------------------------------------------
# insert the square into the stick (the paper's Square / robosuite NutAssemblySquare)
STICK_RADIUS = 0.011
STICK_HEIGHT = 0.10
NUT_OUTER = 0.036  # half width of the square
NUT_WALL = 0.012  # wall thickness; the hole's half width is NUT_OUTER - NUT_WALL = 0.024
HOLE_CLEARANCE = NUT_OUTER - NUT_WALL - STICK_RADIUS  # how far off the hole's centre the stick fits
NUT_HALF_HEIGHT = 0.01
HANDLE_LENGTH = 0.05
HANDLE_HALF_WIDTH = 0.008
NUT_GRASP_OFFSET = NUT_OUTER + 0.6 * HANDLE_LENGTH  # along the nut's x axis (the handle)


@dataclass(frozen=True)
class SquareOnStick(Task):
    def add_objects(self, spec: mujoco.MjSpec) -> None:
        stick = spec.worldbody.add_body(name="stick", mocap=True, pos=[0.48, 0.1, 0])
        stick.add_geom(name="stick", type=_CYL, size=[STICK_RADIUS, STICK_HEIGHT / 2, 0],
                       pos=[0, 0, STICK_HEIGHT / 2], rgba=[0.45, 0.30, 0.18, 1],
                       friction=[0.3, 0.005, 0.0001])
        _visual(stick, type=_CYL, size=[0.035, 0.002, 0], pos=[0, 0, 0.002], rgba=[0.35, 0.23, 0.14, 1])
        nut = spec.worldbody.add_body(name="square", pos=[0.35, -0.1, NUT_HALF_HEIGHT])
        nut.add_freejoint(name="square_joint")
        rgba = [0.86, 0.66, 0.22, 1]
        inner = NUT_OUTER - NUT_WALL
        for sign in (-1, 1):
            _object_geom(nut, type=_BOX, size=[NUT_WALL / 2, NUT_OUTER, NUT_HALF_HEIGHT],
                         pos=[sign * (NUT_OUTER - NUT_WALL / 2), 0, 0], mass=0.012, rgba=rgba)
            _object_geom(nut, type=_BOX, size=[inner, NUT_WALL / 2, NUT_HALF_HEIGHT],
                         pos=[0, sign * (NUT_OUTER - NUT_WALL / 2), 0], mass=0.010, rgba=rgba)
        _object_geom(nut, name="square_handle", type=_BOX,
                     size=[HANDLE_LENGTH / 2, HANDLE_HALF_WIDTH, NUT_HALF_HEIGHT],
                     pos=[NUT_OUTER + HANDLE_LENGTH / 2, 0, 0], mass=0.012,
                     rgba=[0.70, 0.50, 0.15, 1])

    def randomize(self, env: TaskEnv, rng: np.random.Generator) -> None:
        stick = _sample_xy(rng, (0.44, 0.54, -0.15, 0.15))
        while True:
            nut = _sample_xy(rng, (0.34, 0.46, -0.20, 0.20))
            if np.linalg.norm(nut - stick) > 0.15:
                break
        env.set_mocap_pos("stick", [stick[0], stick[1], 0.0])
        # Handle towards the robot, give or take 40 degrees.
        self._place_free(env, "square", [nut[0], nut[1], NUT_HALF_HEIGHT],
                         np.pi + rng.uniform(-0.7, 0.7))

    def stick_in_hole(self, env: TaskEnv) -> bool:
        """The stick's axis passes through the square's hole."""
        local = env.body_mat("square").T @ (env.body_pos("stick") - env.body_pos("square"))
        slack = HOLE_CLEARANCE + 0.002
        return bool(abs(local[0]) < slack and abs(local[1]) < slack)

    def threaded(self, env: TaskEnv) -> bool:
        """The square's centre is below the stick's top and within the hole's clearance of the
        stick's axis: the stick is through the hole (tilted and caught on it, perhaps)."""
        square, stick = env.body_pos("square"), env.body_pos("stick")
        return bool(square[2] < STICK_HEIGHT and np.linalg.norm(square[:2] - stick[:2]) < HOLE_CLEARANCE)

    def is_success(self, env: TaskEnv) -> bool:
        low = env.body_pos("square")[2] < 0.5 * STICK_HEIGHT
        return bool(low and self.stick_in_hole(env) and self._released(env))

    def grasp_target(self, env: TaskEnv) -> tuple[np.ndarray, np.ndarray]:
        mat = env.body_mat("square")
        pos = env.body_pos("square") + mat[:, 0] * NUT_GRASP_OFFSET
        return np.array([pos[0], pos[1], max(pos[2], GRASP_MIN_Z + 0.003)]), mat[:, 1]

    def place_path(self, env: TaskEnv) -> list[np.ndarray]:
        stick = env.body_pos("stick")
        above = STICK_HEIGHT + NUT_HALF_HEIGHT + 0.02
        return [np.array([stick[0], stick[1], above + 0.01]),
                np.array([stick[0], stick[1], above]),
                np.array([stick[0], stick[1], NUT_HALF_HEIGHT + 0.012])]


# ------------------------------------------------------------------------------------------------
# hang the cup on the rack
CUP_RADIUS = 0.03
CUP_HALF_HEIGHT = 0.04
# The handle is a closed loop on the cup's +x side: the hole spans x in [HOLE_X0, HOLE_X1] (cup
# frame) and z in [HOLE_Z0, HOLE_Z1].
HOLE_X0, HOLE_X1 = CUP_RADIUS, 0.060
HOLE_Z0, HOLE_Z1 = -0.014, 0.026
HANDLE_BAR = 0.008  # bar thickness
HANDLE_HALF_Y = 0.006
PEG_RADIUS = 0.006
PEG_LENGTH = 0.12
PEG_Z = 0.16
POST_HALF = 0.012
HOLE_CENTER = np.array([(HOLE_X0 + HOLE_X1) / 2, 0.0, (HOLE_Z0 + HOLE_Z1) / 2])  # in the cup frame


@dataclass(frozen=True)
class HangCup(Task):
    def add_objects(self, spec: mujoco.MjSpec) -> None:
        rack = spec.worldbody.add_body(name="rack", mocap=True, pos=[0.52, 0.15, 0])
        wood = [0.50, 0.34, 0.20, 1]
        rack.add_geom(name="rack_base", type=_BOX, size=[0.05, 0.05, 0.005], pos=[0, 0, 0.005],
                      rgba=[0.40, 0.27, 0.16, 1])
        rack.add_geom(name="rack_post", type=_BOX, size=[POST_HALF, POST_HALF, PEG_Z / 2 + 0.02],
                      pos=[0, 0, PEG_Z / 2 + 0.02], rgba=wood)
        # The peg sticks out of the post towards -y, horizontally.
        rack.add_geom(name="rack_peg", type=_CYL, size=[PEG_RADIUS, PEG_LENGTH / 2, 0],
                      pos=[0, -POST_HALF - PEG_LENGTH / 2, PEG_Z],
                      quat=[np.cos(np.pi / 4), np.sin(np.pi / 4), 0, 0], rgba=wood,
                      friction=OBJECT_FRICTION, condim=4)
        cup = spec.worldbody.add_body(name="cup", pos=[0.35, -0.1, CUP_HALF_HEIGHT])
        cup.add_freejoint(name="cup_joint")
        color = [0.25, 0.50, 0.80, 1]
        _object_geom(cup, name="cup_body", type=_CYL, size=[CUP_RADIUS, CUP_HALF_HEIGHT, 0],
                     mass=0.08, rgba=color)
        _visual(cup, type=_CYL, size=[CUP_RADIUS - 0.004, 0.0005, 0], pos=[0, 0, CUP_HALF_HEIGHT],
                rgba=[0.12, 0.20, 0.32, 1], mass=0)
        hx = (HOLE_X1 + HANDLE_BAR - (HOLE_X0 - 0.004)) / 2  # bars reach 4 mm into the wall
        cx = (HOLE_X1 + HANDLE_BAR + HOLE_X0 - 0.004) / 2
        for z in (HOLE_Z1 + HANDLE_BAR / 2, HOLE_Z0 - HANDLE_BAR / 2):
            _object_geom(cup, type=_BOX, size=[hx, HANDLE_HALF_Y, HANDLE_BAR / 2], pos=[cx, 0, z],
                         mass=0.004, rgba=color)
        _object_geom(cup, name="cup_handle", type=_BOX,
                     size=[HANDLE_BAR / 2, HANDLE_HALF_Y, (HOLE_Z1 - HOLE_Z0) / 2 + HANDLE_BAR],
                     pos=[HOLE_X1 + HANDLE_BAR / 2, 0, (HOLE_Z0 + HOLE_Z1) / 2], mass=0.004,
                     rgba=color)

    def randomize(self, env: TaskEnv, rng: np.random.Generator) -> None:
        rack = _sample_xy(rng, (0.50, 0.56, 0.10, 0.22))
        cup = _sample_xy(rng, (0.28, 0.40, -0.22, -0.02))
        env.set_mocap_pos("rack", [rack[0], rack[1], 0.0])
        self._place_free(env, "cup", [cup[0], cup[1], CUP_HALF_HEIGHT],
                         rng.uniform(-np.pi / 2, np.pi / 2))

    def is_success(self, env: TaskEnv) -> bool:
        cup = env.geoms_of("cup")
        on_rack = env.touching(cup, env.geoms_of("rack"))
        off_table = not env.touching(cup, frozenset([env.info.table_geom]))
        return bool(on_rack and off_table and self._released(env))

    def grasp_target(self, env: TaskEnv) -> tuple[np.ndarray, np.ndarray]:
        mat = env.body_mat("cup")
        pos = env.body_pos("cup") + mat[:, 2] * 0.01
        return pos, mat[:, 1]

    def carry_yaw(self, env: TaskEnv) -> float:
        """Turn the cup until its handle faces +x, across the peg."""
        handle = env.body_mat("cup")[:, 0]
        return float(-np.arctan2(handle[1], handle[0]))

    def object_point(self, env: TaskEnv) -> np.ndarray:
        """The centre of the handle's hole (what has to go around the peg)."""
        return env.body_pos("cup") + env.body_mat("cup") @ HOLE_CENTER

    def place_path(self, env: TaskEnv) -> list[np.ndarray]:
        rack = env.body_pos("rack")
        peg_end_y = rack[1] - POST_HALF - PEG_LENGTH
        hang_y = rack[1] - POST_HALF - PEG_LENGTH / 2
        before = np.array([rack[0], peg_end_y - 0.045, PEG_Z])  # hole in line with the peg
        threaded = np.array([rack[0], hang_y, PEG_Z])
        # Lowered until the top bar sits on the peg (and 3 mm more, so it carries the cup).
        resting = threaded - [0, 0, (HOLE_Z1 - HOLE_Z0) / 2 - PEG_RADIUS + 0.003]
        return [before - [0.05, 0, 0], before, threaded, resting]


def _build(spec: TaskSpec) -> Task:
    classes = {cls.__name__: cls for cls in Task.__subclasses__()}
    return classes[spec.task_class](name=spec.name, instruction=spec.instruction,
                                    max_steps=spec.max_steps, hold_steps=spec.hold_steps,
                                    object_body=spec.object_body, target_body=spec.target_body,
                                    **dict(spec.options))


TASKS: dict[str, Task] = {name: _build(spec) for name, spec in TASK_SPECS.items()}


def get_task(name: str) -> Task:
    return TASKS[check_task_name(name)]
