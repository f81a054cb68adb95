"""`TabletopEnv`: a gymnasium-style MuJoCo tabletop driven by 7-D end-effector delta actions.

One `step(action)` is one control step (10 Hz by default): the end-effector delta is turned into
arm joint targets by differential IK and the physics runs `substeps` steps of 4 ms under position
servos. The observation is the same `Observation` the ROS side builds from topics. An episode
terminates on success (info["success"]) or on a failure it cannot recover from (info["failure"]:
the object fell off the table or left the reachable workspace); it is truncated at max_steps.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from apo_ros.actions.space import ACTION_DIM  # noqa: E402
from apo_ros.observation import CAMERAS, Observation  # noqa: E402
from apo_ros.sim import scene  # noqa: E402
from apo_ros.sim.kinematics import (  # noqa: E402
    DifferentialIK,
    mat_to_quat_xyzw,
    rotation_error,
    rotvec_to_mat,
)
from apo_ros.sim.tasks import Task, get_task  # noqa: E402

# Internal sanity limits on one action (the real safety filter lives in apo_ros.actions; these
# only keep the simulator physical when it is fed garbage).
MAX_STEP_TRANSLATION = 0.08  # m per control step, per axis
MAX_STEP_ROTATION = 0.5  # rad per control step (rotation-vector norm)
# The TCP target is kept inside this box (base frame, metres): above the table, within reach.
WORKSPACE_LOW = np.array([0.12, -0.45, scene.TCP_ABOVE_FINGERTIPS + 0.001])
WORKSPACE_HIGH = np.array([0.70, 0.45, 0.45])
# Start pose: TCP above the middle of the table, pointing down, fingers closing along y.
HOME_TCP = np.array([0.30, 0.0, 0.25])
HOME_ROTATION = np.diag([-1.0, 1.0, -1.0])
TRACKING_TOLERANCE = 0.01  # m (and 0.05 rad): within this the arm counts as on its target
RAMP_FRACTION = 0.6  # joint targets reach the IK solution after this share of a control period
RAMP_SEGMENTS = 5  # in this many increments
SETTLE_SECONDS = 0.1  # physics run after placing objects so they rest before the first frame
# An episode ends as a failure when the task's object can no longer be brought back: its centre
# left the area the TCP can reach (the workspace box, in x and y) or it fell below the table top
# (over the edge). The reason is in info["failure"].
FELL_BELOW_Z = -0.03  # m: object centre this far below the table top = fallen off the table
FAILURE_REASONS = ("object_left_workspace", "object_fell")


@functools.cache
def compiled_model(task_name: str) -> mujoco.MjModel:
    """The compiled scene for a task (cached; environments never modify their model)."""
    task = get_task(task_name)
    return build_model(task)


def build_model(task: Task | None) -> mujoco.MjModel:
    spec = scene.build_spec(task.add_objects if task is not None else None)
    return spec.compile()


@functools.cache
def _home_qpos(task_name: str) -> np.ndarray:
    model = compiled_model(task_name)
    info = scene.scene_info(model)
    ik = DifferentialIK(model, info.tcp_site, info.arm_qpos, info.arm_dofs, info.joint_low,
                        info.joint_high, damping=0.01)
    qpos = model.qpos0.copy()
    qpos[info.arm_qpos] = [0.0, 0.3, 1.3, 1.5, 0.0, 0.0]  # elbow-up guess, tool roughly down
    for _ in range(60):
        qpos[info.arm_qpos] = ik.solve(qpos, HOME_TCP, HOME_ROTATION, iterations=5)
    pos, _mat = ik.site_pose(qpos)
    if np.linalg.norm(pos - HOME_TCP) > 1e-4:
        raise RuntimeError(f"home pose IK did not converge (TCP at {pos})")
    return qpos[info.arm_qpos].copy()


class TabletopEnv:
    """A task on the tabletop. See `make_env`."""

    def __init__(self, task: str, *, image_size: int = 64, cameras: tuple[str, ...] = CAMERAS,
                 control_hz: float = 10.0, max_steps: int | None = None, render: bool = True):
        self.task: Task = get_task(task)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; available: {list(CAMERAS)}")
        if control_hz <= 0 or not np.isfinite(control_hz):
            raise ValueError(f"control_hz must be positive, got {control_hz}")
        self.model = compiled_model(task)
        self.data = mujoco.MjData(self.model)
        self.info = scene.scene_info(self.model)
        self.image_size = int(image_size)
        self.cameras = tuple(cameras)
        self.render_enabled = bool(render)
        self.control_hz = float(control_hz)
        self.substeps = max(1, int(round(1.0 / (self.control_hz * self.model.opt.timestep))))
        # Substeps per ramp segment of the joint targets (RAMP_FRACTION of the period in
        # RAMP_SEGMENTS increments, the last segment also holds for the rest of the period).
        ramp_steps = max(1, int(round(self.substeps * RAMP_FRACTION)))
        segments = max(1, min(RAMP_SEGMENTS, ramp_steps))
        self._ramp = [ramp_steps // segments] * segments
        self._ramp[-1] += ramp_steps - sum(self._ramp) + (self.substeps - ramp_steps)
        self.max_steps = int(max_steps) if max_steps is not None else self.task.max_steps
        self.joint_names: tuple[str, ...] = scene.JOINT_NAMES
        self.step_count = 0
        self.gripper_command = 1.0
        self._success_streak = 0
        self._home = _home_qpos(task)
        self._ik = DifferentialIK(self.model, self.info.tcp_site, self.info.arm_qpos,
                                  self.info.arm_dofs, self.info.joint_low, self.info.joint_high)
        self._renderers: dict[int, mujoco.Renderer] = {}
        self._body_ids: dict[str, int] = {}
        self._body_geoms: dict[str, frozenset[int]] = {}
        self._contact_cache: tuple[tuple[float, int], set[tuple[int, int]]] | None = None
        self._seed: int | None = None
        self._target_pos = np.zeros(3)  # the TCP pose the arm is being driven to
        self._target_mat = np.eye(3)

    # ---- gymnasium-style API -------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return self.task.instruction

    def reset(self, seed: int) -> Observation:
        """Start an episode; the same seed gives the same initial state and observation."""
        self._seed = int(seed)
        rng = np.random.default_rng(self._seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self.info.arm_qpos] = self._home
        d.qpos[self.info.finger_qpos] = scene.FINGER_OPEN
        d.ctrl[self.info.arm_actuators] = self._home
        d.ctrl[self.info.finger_actuators] = scene.FINGER_OPEN
        self.task.randomize(self, rng)
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=int(round(SETTLE_SECONDS / m.opt.timestep)))
        self.step_count = 0
        self.gripper_command = 1.0
        self._success_streak = 0
        self._contact_cache = None
        self._target_pos = self.tcp_pos()
        self._target_mat = self.tcp_mat()
        return self.observe()

    def step(self, action) -> tuple[Observation, float, bool, bool, dict]:
        """Apply one 7-D action [dx, dy, dz, droll, dpitch, dyaw, gripper] (base frame, metres and
        radians per control step, gripper 0..1 with 1 = open) for one control period."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"action must have {ACTION_DIM} values, got shape {np.shape(action)}")
        a = a.copy()
        if not np.isfinite(a[6]):
            a[6] = self.gripper_command  # a NaN gripper keeps the last command
        a[~np.isfinite(a)] = 0.0  # NaN / inf motion = no motion
        m, d, info = self.model, self.data, self.info
        delta = np.clip(a[:3], -MAX_STEP_TRANSLATION, MAX_STEP_TRANSLATION)
        rot = a[3:6]
        norm = float(np.linalg.norm(rot))
        if norm > MAX_STEP_ROTATION:
            rot = rot * (MAX_STEP_ROTATION / norm)
        self.gripper_command = float(np.clip(a[6], 0.0, 1.0))

        # Deltas accumulate on the previous target while the arm tracks it (no drift from servo
        # lag), and restart from the measured pose when it does not (blocked by a contact: no
        # wind-up).
        pos = d.site_xpos[info.tcp_site]
        mat = d.site_xmat[info.tcp_site].reshape(3, 3)
        tracking = (np.linalg.norm(pos - self._target_pos) < TRACKING_TOLERANCE
                    and np.linalg.norm(rotation_error(self._target_mat, mat)) < 5 * TRACKING_TOLERANCE)
        base_pos, base_mat = (self._target_pos, self._target_mat) if tracking else (pos, mat)
        target_pos = np.clip(base_pos + delta, WORKSPACE_LOW, WORKSPACE_HIGH)
        target_mat = rotvec_to_mat(rot) @ base_mat
        self._target_pos, self._target_mat = target_pos, target_mat
        start = d.ctrl[info.arm_actuators].copy()
        # A zero motion keeps the previous joint targets (no drift from re-solving in place).
        goal = self._ik.solve(d.qpos, target_pos, target_mat) if (np.any(delta) or np.any(rot)) \
            else start
        d.ctrl[info.finger_actuators] = self.gripper_command * scene.FINGER_OPEN
        # Like a trajectory controller, ramp the joint targets over the first part of the control
        # period and let the servos settle in the rest: no violent jumps that shake a held object
        # loose, and the arm has arrived when the next observation is taken.
        for k, n in enumerate(self._ramp):
            d.ctrl[info.arm_actuators] = start + (goal - start) * ((k + 1) / len(self._ramp))
            mujoco.mj_step(m, d, nstep=n)
        self._contact_cache = None
        self.step_count += 1

        success = self.task.is_success(self)
        self._success_streak = self._success_streak + 1 if success else 0
        succeeded = self._success_streak >= self.task.hold_steps
        failure = None if succeeded else self.failure_reason()
        terminated = succeeded or failure is not None
        truncated = (not terminated) and self.step_count >= self.max_steps
        obs = self.observe()
        return obs, float(succeeded), terminated, truncated, {
            "success": succeeded, "failure": failure, "step": self.step_count}

    def failure_reason(self) -> str | None:
        """Why the episode cannot succeed any more ("object_fell", "object_left_workspace"), or
        None. Episodes end as failures on these (terminated with info["success"] False)."""
        obj = self.body_pos(self.task.object_body)
        if obj[2] < FELL_BELOW_Z:
            return "object_fell"
        if np.any(obj[:2] < WORKSPACE_LOW[:2]) or np.any(obj[:2] > WORKSPACE_HIGH[:2]):
            return "object_left_workspace"
        return None

    def is_success(self) -> bool:
        """The task's success predicate on the current state (instantaneous)."""
        return bool(self.task.is_success(self))

    def observe(self) -> Observation:
        d, info = self.data, self.info
        images = {c: self.render_image(c, self.image_size) for c in self.cameras} \
            if self.render_enabled else {}
        joints = np.concatenate([d.qpos[info.arm_qpos], d.qpos[info.finger_qpos]]).astype(np.float64)
        return Observation(
            images=images,
            joint_positions=joints,
            ee_pose=self.ee_pose(),
            gripper=self.gripper_opening(),
            instruction=self.instruction,
            stamp_ns=int(round(d.time * 1e9)),
            joint_names=self.joint_names,
            object_poses=self.object_poses(),
        )

    def object_poses(self) -> np.ndarray:
        """(N, 7) float32 [x, y, z, qx, qy, qz, qw] of the task's state bodies (base = world frame)."""
        return np.asarray([np.concatenate([self.body_pos(b), mat_to_quat_xyzw(self.body_mat(b))])
                           for b in self.task.state_bodies], dtype=np.float32).reshape(-1, 7)

    def render_image(self, camera: str, size: int | None = None) -> np.ndarray:
        """(size, size, 3) uint8 RGB image from camera "front" or "wrist" (any size up to 640)."""
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; available: {list(CAMERAS)}")
        size = self.image_size if size is None else int(size)
        renderer = self._renderers.get(size)
        if renderer is None:
            # Small learning images get a small shadow map and no multisampling (software GL
            # spends most of a frame on them); larger viewing images get the nicer settings.
            # Both are read from the model when the GL context is made, so set them around it.
            quality = self.model.vis.quality
            saved = (quality.shadowsize, quality.offsamples)
            small = size <= scene.SMALL_IMAGE
            quality.shadowsize = scene.SHADOW_SIZE_SMALL if small else scene.SHADOW_SIZE_LARGE
            quality.offsamples = 0 if small else scene.OFFSCREEN_SAMPLES_LARGE
            try:
                renderer = mujoco.Renderer(self.model, size, size)
            except Exception as err:  # mujoco.FatalError: no GL context (wrong or missing backend)
                raise RuntimeError(
                    f"cannot render ({err}); headless rendering needs MUJOCO_GL=egl in the "
                    f"environment before mujoco is first imported (it is {os.environ.get('MUJOCO_GL')!r}"
                    ") - set it in the shell, or import apo_ros.sim before mujoco") from err
            finally:
                quality.shadowsize, quality.offsamples = saved
            self._renderers[size] = renderer
        renderer.update_scene(self.data, camera=scene.CAMERA_NAMES[camera])
        return renderer.render()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def __enter__(self) -> TabletopEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- state accessors (robot side) ---------------------------------------------------------
    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.info.tcp_site].copy()

    def tcp_mat(self) -> np.ndarray:
        return self.data.site_xmat[self.info.tcp_site].reshape(3, 3).copy()

    def ee_pose(self) -> np.ndarray:
        """[x, y, z, qx, qy, qz, qw] of the TCP in the base frame (= world frame here)."""
        return np.concatenate([self.tcp_pos(), mat_to_quat_xyzw(self.tcp_mat())])

    def gripper_opening(self) -> float:
        q = self.data.qpos[self.info.finger_qpos]
        return float(np.clip(q.mean() / scene.FINGER_OPEN, 0.0, 1.0))

    # ---- privileged state (experts, operator, success predicates) -----------------------------
    def body_id(self, name: str) -> int:
        bid = self._body_ids.get(name)
        if bid is None:
            bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
            if bid < 0:
                raise KeyError(f"no body {name!r} in the {self.task.name} scene")
            self._body_ids[name] = bid
        return bid

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.body_id(name)].copy()

    def body_mat(self, name: str) -> np.ndarray:
        return self.data.xmat[self.body_id(name)].reshape(3, 3).copy()

    def geoms_of(self, body: str) -> frozenset[int]:
        geoms = self._body_geoms.get(body)
        if geoms is None:
            geoms = frozenset(int(g) for g in np.flatnonzero(self.model.geom_bodyid == self.body_id(body)))
            self._body_geoms[body] = geoms
        return geoms

    def _free_joint(self, body: str) -> int:
        jnt = self.model.body_jntadr[self.body_id(body)]
        if jnt < 0 or self.model.jnt_type[jnt] != mujoco.mjtJoint.mjJNT_FREE:
            raise KeyError(f"body {body!r} has no free joint")
        return int(jnt)

    def free_qpos_adr(self, body: str) -> int:
        return int(self.model.jnt_qposadr[self._free_joint(body)])

    def body_speed(self, name: str) -> float:
        """How fast a free body's origin moves (m/s), from the simulator's velocities."""
        dof = int(self.model.jnt_dofadr[self._free_joint(name)])
        return float(np.linalg.norm(self.data.qvel[dof:dof + 3]))

    def set_mocap_pos(self, body: str, pos) -> None:
        mocap = self.model.body_mocapid[self.body_id(body)]
        self.data.mocap_pos[mocap] = pos

    def forward(self) -> None:
        """Recompute positions and contacts after editing `data` by hand (tests, tools)."""
        mujoco.mj_forward(self.model, self.data)
        self._contact_cache = None

    def _contact_pairs(self) -> set[tuple[int, int]]:
        key = (float(self.data.time), int(self.data.ncon))
        if self._contact_cache is None or self._contact_cache[0] != key:
            n = self.data.ncon
            geoms = self.data.contact.geom[:n] if n else np.zeros((0, 2), dtype=int)
            pairs = {(int(a), int(b)) for a, b in geoms}
            pairs |= {(b, a) for a, b in pairs}
            self._contact_cache = (key, pairs)
        return self._contact_cache[1]

    def touching(self, geoms_a: frozenset[int], geoms_b: frozenset[int]) -> bool:
        """Whether any geom of `geoms_a` is in contact with any geom of `geoms_b`."""
        return any(a in geoms_a and b in geoms_b for a, b in self._contact_pairs())

    def is_grasped(self, body: str | None = None) -> bool:
        """Both fingers touch the object (and the gripper is not fully open)."""
        geoms = self.geoms_of(body or self.task.object_body)
        return (self.touching(geoms, self.info.left_finger_geoms)
                and self.touching(geoms, self.info.right_finger_geoms)
                and self.gripper_command < 0.5)

    @property
    def seed(self) -> int | None:
        return self._seed


def make_env(task: str, *, image_size: int = 64, cameras: tuple[str, ...] = CAMERAS,
             control_hz: float = 10.0, max_steps: int | None = None,
             render: bool = True) -> TabletopEnv:
    """A tabletop environment for `task` (one of `TASKS`). `render=False` skips the cameras
    (observations then carry no images), which is what scripted experts and speed runs want."""
    return TabletopEnv(task, image_size=image_size, cameras=cameras, control_hz=control_hz,
                       max_steps=max_steps, render=render)
