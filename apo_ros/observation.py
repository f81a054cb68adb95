"""What the policy sees at one control step — the same structure from the simulator, from ROS
topics, and from a bag."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Camera names used everywhere (sim cameras, bag topics `camera/<name>/image_raw`, policy inputs).
CAMERAS: tuple[str, ...] = ("front", "wrist")


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # camera name -> (H, W, 3) uint8 RGB
    joint_positions: np.ndarray  # (J,) float radians (arm joints, then finger joints), URDF order
    ee_pose: np.ndarray  # (7,) [x, y, z, qx, qy, qz, qw] of the tool frame in the arm base frame
    gripper: float  # measured opening in [0, 1] (1 = open)
    instruction: str  # the task's language instruction
    stamp_ns: int = 0  # when it was taken (sim time or ROS time), links every action to it
    joint_names: tuple[str, ...] = field(default_factory=tuple)  # names for joint_positions
    # (N, 7) poses [x, y, z, qx, qy, qz, qw] of the task's objects in the arm base frame: the
    # manipulated object first, then the target (lemon, plate). The simulator knows them; on a
    # real robot a perception or motion-capture node provides them. (0, 7) when nobody does
    # (image policies need none).
    object_poses: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), dtype=np.float32))

    def proprio(self) -> np.ndarray:
        """(8,) float32 proprioception the policies use: ee position, ee quaternion, gripper."""
        return np.concatenate([np.asarray(self.ee_pose, dtype=np.float32),
                               np.asarray([self.gripper], dtype=np.float32)])


    def object_state(self) -> np.ndarray:
        """(7 N,) float32 flattened object poses, for state-based policies."""
        return np.asarray(self.object_poses, dtype=np.float32).reshape(-1)


PROPRIO_DIM = 8
