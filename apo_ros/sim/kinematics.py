"""Small rotation helpers and the damped-least-squares differential IK used by the environment
(and by the experts to express orientation errors). All rotations are 3x3 matrices in the base
frame; rotation deltas are rotation vectors (axis * angle), the form a twist integrates to."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402


def rotvec_to_mat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, radians) -> 3x3 rotation matrix."""
    rotvec = np.asarray(rotvec, dtype=float)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, rotvec / angle, angle)
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def mat_to_rotvec(mat: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> rotation vector (angle in [0, pi])."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(mat, dtype=float).ravel())
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


def mat_to_quat_xyzw(mat: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> quaternion [qx, qy, qz, qw] (the ROS / Observation order)."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(mat, dtype=float).ravel())
    if quat[0] < 0:  # one canonical sign: qw >= 0
        quat = -quat
    return np.array([quat[1], quat[2], quat[3], quat[0]])


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (base frame) that turns `current` into `target`: R_t = exp(e) R_c."""
    return mat_to_rotvec(target @ current.T)


class DifferentialIK:
    """Damped least squares on the TCP site Jacobian (mj_jacSite), iterated a few times on a
    scratch MjData so one 10 Hz command lands where it was asked to (a single linearisation leaves
    a few millimetres of error on 3 cm moves)."""

    def __init__(self, model: mujoco.MjModel, site: int, qpos_adr: np.ndarray, dof_adr: np.ndarray,
                 low: np.ndarray, high: np.ndarray, damping: float = 0.03, iterations: int = 3,
                 max_joint_step: float = 0.35):
        self.model = model
        self.data = mujoco.MjData(model)  # scratch: only kinematics are ever computed on it
        self.site = site
        self.qpos_adr = qpos_adr
        self.dof_adr = dof_adr
        self.low, self.high = low, high
        self.damping = damping  # lambda of DLS: bounded joint steps near singularities
        self.iterations = iterations
        self.max_joint_step = max_joint_step  # rad per iteration, keeps a bad request gentle
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def site_pose(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(self, qpos: np.ndarray, target_pos: np.ndarray, target_mat: np.ndarray,
              iterations: int | None = None) -> np.ndarray:
        """Arm joint positions (clipped to their limits) that put the site at the target pose,
        starting from the full configuration `qpos`."""
        d, m = self.data, self.model
        d.qpos[:] = qpos
        q = qpos[self.qpos_adr].copy()
        lam2 = self.damping ** 2
        for _ in range(self.iterations if iterations is None else iterations):
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            pos = d.site_xpos[self.site]
            mat = d.site_xmat[self.site].reshape(3, 3)
            err = np.concatenate([target_pos - pos, rotation_error(target_mat, mat)])
            if float(np.abs(err).max()) < 1e-5:
                break
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), err)
            dq = np.clip(dq, -self.max_joint_step, self.max_joint_step)
            q = np.clip(q + dq, self.low, self.high)
            d.qpos[self.qpos_adr] = q
        return q
