"""The URDF's camera optical frames (the images' frame_id) are where the simulator's cameras are,
in the ROS optical convention (z along the view, x right, y down)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from apo_ros.sim.scene import ARM_PREFIX, CAMERA_NAMES, build_spec

# MuJoCo cameras look along -z with +y up in the image: the optical frame flips y and z.
MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


@pytest.mark.parametrize("camera", ["front", "wrist"])
def test_optical_frames_match_the_simulated_cameras(camera):
    model = build_spec().compile()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    for j in range(model.njnt):  # the arm somewhere off its zero pose
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE:
            data.qpos[model.jnt_qposadr[j]] = rng.uniform(-0.5, 0.5)
    mujoco.mj_forward(model, data)
    body = data.body(f"{ARM_PREFIX}{camera}_camera_optical_frame")
    cam = data.cam(CAMERA_NAMES[camera])
    np.testing.assert_allclose(body.xpos, cam.xpos, atol=1e-6)
    np.testing.assert_allclose(body.xmat.reshape(3, 3), cam.xmat.reshape(3, 3) @ MUJOCO_TO_OPTICAL,
                               atol=1e-6)
