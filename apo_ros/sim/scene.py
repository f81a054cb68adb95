"""The MuJoCo model: the arm from `urdf/apo_arm.urdf` attached to a table scene, plus one task's
objects, actuators, the tool-centre-point site and the two cameras.

The arm is described once, in the URDF (the same file robot_state_publisher reads); everything a
simulator needs beyond it (position servos, armature, gravity compensation, contact parameters,
cameras, lights, the table) is added here in code, so the URDF stays a plain ROS description.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede `import mujoco`

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

URDF_NAME = "apo_arm.urdf"
ARM_PREFIX = "arm/"  # prefix of every arm body / joint / geom name inside the scene model
# Arm joints in URDF order, then the two finger joints (the order of Observation.joint_positions).
ARM_JOINTS: tuple[str, ...] = (
    "shoulder_pan_joint",
    "shoulder_lift_joint",
    "elbow_joint",
    "wrist_pitch_joint",
    "wrist_roll_joint",
    "wrist_yaw_joint",
)
FINGER_JOINTS: tuple[str, ...] = ("finger_left_joint", "finger_right_joint")
JOINT_NAMES: tuple[str, ...] = ARM_JOINTS + FINGER_JOINTS
FINGER_OPEN = 0.04  # m, finger joint travel: 0 = closed, 0.04 = open (8 cm between the pads)
TCP_SITE = ARM_PREFIX + "tcp"  # tool centre point, on the URDF's tool0 link
TCP_ABOVE_FINGERTIPS = 0.015  # m, from the URDF: tool0 is 1.5 cm above the fingertips
# Lowest TCP height for a grasp: fingertips 7 mm above the table, so they never drag on it.
GRASP_MIN_Z = TCP_ABOVE_FINGERTIPS + 0.007
FINGER_BODIES: tuple[str, ...] = (ARM_PREFIX + "finger_left_link", ARM_PREFIX + "finger_right_link")
# Observation camera name -> MuJoCo camera name (the wrist camera rides on the arm's hand).
CAMERA_NAMES = {"front": "front", "wrist": ARM_PREFIX + "wrist"}

# Physics: 4 ms steps with the implicit-in-velocity integrator keep stiff servos stable; a 10 Hz
# control step is then 25 substeps.
TIMESTEP = 0.004
# Position servo stiffness (N m / rad or N / m) and reflected motor inertia per joint. Stiff enough
# to track a 10 Hz end-effector command within one step, soft enough for a 4 ms explicit step.
ARM_KP = (1500.0, 1500.0, 900.0, 250.0, 200.0, 150.0)
ARM_ARMATURE = (0.10, 0.10, 0.08, 0.03, 0.03, 0.02)
FINGER_KP = 500.0  # N / m; the URDF effort limit (20 N) caps the squeeze
# Rendering: software OpenGL (llvmpipe) spends most of a frame on the shadow map, so images up to
# SMALL_IMAGE px (what policies see) get a small one and no multisampling; larger views get more.
SMALL_IMAGE = 128
SHADOW_SIZE_SMALL = 256
SHADOW_SIZE_LARGE = 1024
OFFSCREEN_SAMPLES_LARGE = 4

# Contact parameters shared by the fingers and the objects: high friction, torsional friction
# (condim 4) so a held object does not pivot around the finger axis.
GRIP_FRICTION = (1.5, 0.01, 0.0005)
# Objects and the table: sliding, torsional and rolling friction (condim 6). Torsional (m) stops
# a spinning object, rolling (m) stops a rolling one: without it a lemon nudged at 0.6 m/s rolls
# for metres and a small spin makes it rock for ever. Rolling resistance mu_r = 2 mm on a 2 cm
# lemon is a rolling coefficient of ~0.1, about that of soft fruit on wood.
OBJECT_FRICTION = (1.0, 0.01, 0.002)
OBJECT_CONDIM = 6
# Stiff, well-damped contacts for everything that is grasped: little interpenetration under a
# 10 N squeeze (the default solver settings let the pads sink ~5 mm into a light object).
CONTACT_SOLREF = (0.01, 1.0)
CONTACT_SOLIMP = (0.95, 0.99, 0.001, 0.5, 2.0)
TABLE_SIZE = (0.45, 0.6)  # half extents (x, y) of the table top, centred at TABLE_CENTER
TABLE_CENTER = (0.35, 0.0)
TABLE_THICKNESS = 0.04  # the top is a box (z from -0.04 to 0): it has edges objects fall over
FLOOR_Z = -0.75  # the floor below the table, where a fallen object ends up

# Visual colours of the arm (the URDF materials are kept for the links that have one).
_ARM_COLORS = {
    "base_link": (0.25, 0.25, 0.28, 1.0),
    "finger_left_link": (0.12, 0.12, 0.12, 1.0),
    "finger_right_link": (0.12, 0.12, 0.12, 1.0),
}


def urdf_path() -> Path:
    """Where the arm's URDF is: $APO_ROS_URDF, the source tree's `urdf/`, or the installed
    `share/apo_ros/urdf/` (colcon / pip install)."""
    env = os.environ.get("APO_ROS_URDF")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "urdf" / URDF_NAME)
    candidates.append(Path(sys.prefix) / "share" / "apo_ros" / "urdf" / URDF_NAME)
    try:  # a sourced ROS 2 workspace
        from ament_index_python.packages import get_package_share_directory  # type: ignore

        candidates.append(Path(get_package_share_directory("apo_ros")) / "urdf" / URDF_NAME)
    except Exception:  # noqa: BLE001 - not a ROS environment
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"arm description {URDF_NAME} not found; looked in: "
                            + ", ".join(str(p) for p in candidates))


def look_at_quat(pos, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Quaternion (w, x, y, z) of a MuJoCo camera at `pos` looking at `target` (cameras look along
    their -z axis with +y up in the image)."""
    pos, target, up = (np.asarray(v, dtype=float) for v in (pos, target, up))
    z = pos - target
    z /= np.linalg.norm(z)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x, y, z]).ravel())
    return quat


@dataclass(frozen=True)
class SceneInfo:
    """Indices into a compiled scene model that the environment needs every step."""

    arm_qpos: np.ndarray  # qpos addresses of the 6 arm joints
    arm_dofs: np.ndarray  # dof addresses of the 6 arm joints
    finger_qpos: np.ndarray  # qpos addresses of the 2 finger joints
    arm_actuators: np.ndarray  # actuator ids driving the arm joints
    finger_actuators: np.ndarray  # actuator ids driving the fingers
    tcp_site: int  # site id of the tool centre point
    joint_low: np.ndarray  # arm joint lower limits
    joint_high: np.ndarray  # arm joint upper limits
    finger_geoms: frozenset[int]  # geoms of both fingers
    left_finger_geoms: frozenset[int]
    right_finger_geoms: frozenset[int]
    table_geom: int  # the table-top collision box


def _add_table(scene: mujoco.MjSpec) -> None:
    world = scene.worldbody
    tex = scene.add_texture(name="floor_tex", type=mujoco.mjtTexture.mjTEXTURE_2D,
                            builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER, width=256, height=256,
                            rgb1=[0.30, 0.32, 0.35], rgb2=[0.26, 0.28, 0.31])
    scene.add_material(name="floor_mat", textures=["", tex.name], texrepeat=[6, 6])
    scene.add_texture(name="sky", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
                      builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT, width=64, height=64,
                      rgb1=[0.55, 0.62, 0.70], rgb2=[0.15, 0.16, 0.18])
    # The floor collides too: an object pushed over the table's edge falls and stays there.
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, pos=[0.3, 0, FLOOR_Z],
                   size=[2.0, 2.0, 0.1], material="floor_mat", friction=OBJECT_FRICTION,
                   condim=OBJECT_CONDIM)
    cx, cy = TABLE_CENTER
    hx, hy = TABLE_SIZE
    # The table top is a box, not a plane: MuJoCo planes collide as infinite planes whatever their
    # size, so an object pushed off a plane table would keep sliding on thin air at table height.
    world.add_geom(name="table_top", type=mujoco.mjtGeom.mjGEOM_BOX,
                   pos=[cx, cy, -TABLE_THICKNESS / 2], size=[hx, hy, TABLE_THICKNESS / 2],
                   rgba=[0.62, 0.50, 0.38, 1], friction=OBJECT_FRICTION, condim=OBJECT_CONDIM)
    for sx in (-1, 1):
        for sy in (-1, 1):
            world.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX,
                           pos=[cx + sx * (hx - 0.04), cy + sy * (hy - 0.04), -0.39],
                           size=[0.025, 0.025, 0.35], rgba=[0.35, 0.28, 0.22, 1], contype=0,
                           conaffinity=0)
    directional = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
    world.add_light(name="key", pos=[0.4, -0.3, 1.6], dir=[-0.1, 0.2, -1], type=directional,
                    castshadow=True, diffuse=[0.65, 0.65, 0.65], specular=[0.1, 0.1, 0.1])
    world.add_light(name="fill", pos=[1.2, 0.6, 1.0], dir=[-0.7, -0.4, -0.6], type=directional,
                    castshadow=False, diffuse=[0.3, 0.3, 0.3], specular=[0, 0, 0])
    # Front camera: across the table, facing the robot, looking down at the work area.
    front_pos, front_target = [0.98, 0.0, 0.52], [0.36, 0.0, 0.06]
    world.add_camera(name="front", pos=front_pos, quat=look_at_quat(front_pos, front_target),
                     fovy=52)


def _prepare_arm(arm: mujoco.MjSpec) -> None:
    """Simulator-only additions to the URDF arm: servo-friendly joint settings, gravity
    compensation (the real arm's controller does it too), contact settings on the fingers, the
    TCP site and the wrist camera."""
    for body in arm.bodies:
        if body.name == "world":
            continue
        body.gravcomp = 1.0
        rgba = _ARM_COLORS.get(body.name)
        for geom in body.geoms:
            if rgba is not None:
                geom.rgba = rgba
            if body.name.startswith("finger"):
                geom.friction = GRIP_FRICTION
                geom.condim = 4
                geom.priority = 1  # finger friction wins against the object's
                geom.solref = CONTACT_SOLREF
                geom.solimp = CONTACT_SOLIMP
    for name, armature in zip(ARM_JOINTS, ARM_ARMATURE):
        arm.joint(name).armature = armature
    tool = arm.body("tool0")
    tool.add_site(name="tcp", size=[0.006, 0, 0], rgba=[1, 0, 0, 0.0], group=4)
    hand = arm.body("hand_link")
    # Wrist camera: on the back of the palm, looking along the fingers past the grasp area; the
    # fingertips show in the lower half of the image, the fingers close left-right.
    cam_pos, cam_target = np.array([-0.045, 0.0, 0.01]), np.array([0.0, 0.0, 0.15])
    hand.add_camera(name="wrist", pos=cam_pos, quat=look_at_quat(cam_pos, cam_target,
                                                                 up=(-1.0, 0.0, 0.0)), fovy=70)


def build_spec(add_objects: Callable[[mujoco.MjSpec], None] | None = None) -> mujoco.MjSpec:
    """The scene spec: table, lights, cameras, the arm from the URDF at the origin (its base frame
    is the world frame; the table top is z = 0), servos, and the task's objects."""
    scene = mujoco.MjSpec()
    scene.modelname = "apo_tabletop"
    scene.option.timestep = TIMESTEP
    scene.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    scene.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    scene.option.impratio = 5.0  # stiffer friction relative to normal force: held objects slip less
    scene.visual.quality.shadowsize = SHADOW_SIZE_SMALL
    scene.visual.quality.offsamples = 0
    scene.visual.global_.offwidth = 640
    scene.visual.global_.offheight = 640
    scene.visual.headlight.ambient = [0.35, 0.35, 0.35]
    scene.visual.headlight.diffuse = [0.35, 0.35, 0.35]
    scene.compiler.degree = False
    _add_table(scene)

    arm = mujoco.MjSpec.from_file(str(urdf_path()))
    _prepare_arm(arm)
    frame = scene.worldbody.add_frame(pos=[0, 0, 0])
    frame.attach_body(arm.body("base_link"), ARM_PREFIX, "")

    for name, kp in zip(ARM_JOINTS, ARM_KP):
        act = scene.add_actuator(name=ARM_PREFIX + name.replace("_joint", ""),
                                 target=ARM_PREFIX + name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=kp, dampratio=1.0, inheritrange=True)
    for name in FINGER_JOINTS:
        act = scene.add_actuator(name=ARM_PREFIX + name.replace("_joint", ""),
                                 target=ARM_PREFIX + name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=FINGER_KP, dampratio=1.0, inheritrange=True)
    if add_objects is not None:
        add_objects(scene)
    return scene


def scene_info(model: mujoco.MjModel) -> SceneInfo:
    def jid(name: str) -> int:
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, ARM_PREFIX + name)

    arm_j = [jid(n) for n in ARM_JOINTS]
    fin_j = [jid(n) for n in FINGER_JOINTS]
    act_of_joint = {int(model.actuator_trnid[a, 0]): a for a in range(model.nu)}

    def geoms_of(body_name: str) -> frozenset[int]:
        bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body_name)
        return frozenset(int(g) for g in np.flatnonzero(model.geom_bodyid == bid))

    left, right = geoms_of(FINGER_BODIES[0]), geoms_of(FINGER_BODIES[1])
    return SceneInfo(
        arm_qpos=np.array([model.jnt_qposadr[j] for j in arm_j]),
        arm_dofs=np.array([model.jnt_dofadr[j] for j in arm_j]),
        finger_qpos=np.array([model.jnt_qposadr[j] for j in fin_j]),
        arm_actuators=np.array([act_of_joint[j] for j in arm_j]),
        finger_actuators=np.array([act_of_joint[j] for j in fin_j]),
        tcp_site=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, TCP_SITE),
        joint_low=np.array([model.jnt_range[j, 0] for j in arm_j]),
        joint_high=np.array([model.jnt_range[j, 1] for j in arm_j]),
        finger_geoms=left | right,
        left_finger_geoms=left,
        right_finger_geoms=right,
        table_geom=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "table_top"),
    )
