"""The stack on a real arm driven by MoveIt Servo: policy_node + teleop_arbiter_node +
recorder_node (table apo_ros.nodes.wiring.ROBOT). The arbiter's arm/delta_twist_cmds is remapped to
Servo's input and gripper/command to the gripper driver; the camera, end-effector pose and gripper
state topics are arguments. Start MoveIt Servo (in twist mode) and the drivers separately.

    ros2 launch apo_ros robot.launch.py checkpoint:=/path/to/ckpt task:=insert_square \
        front_camera:=/cam_front/color/image_raw wrist_camera:=/cam_wrist/color/image_raw \
        ee_pose_topic:=/tcp_pose gripper_command_topic:=/gripper/command
"""

from apo_ros.nodes.wiring import ROBOT, launch_description


def generate_launch_description():
    return launch_description(ROBOT)
