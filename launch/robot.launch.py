"""The stack on a real arm driven by MoveIt Servo: policy_node + teleop_arbiter_node +
recorder_node. The arbiter's arm/delta_twist_cmds is remapped to Servo's input and gripper/command
to the gripper driver; the camera, end-effector pose and gripper state topics are arguments.
Start MoveIt Servo (and switch it to twist commands) and the camera drivers separately.

    ros2 launch apo_ros robot.launch.py checkpoint:=/path/to/ckpt task:=insert_square \
        front_camera:=/cam_front/color/image_raw wrist_camera:=/cam_wrist/color/image_raw \
        ee_pose_topic:=/tcp_pose gripper_command_topic:=/gripper/command
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("apo_ros"), "config"])
    arg = LaunchConfiguration
    args = [
        DeclareLaunchArgument("checkpoint", description="policy checkpoint directory"),
        DeclareLaunchArgument("task", default_value="task", description="task name for the bags"),
        DeclareLaunchArgument("bags_dir", default_value="bags", description="episode bags go here"),
        DeclareLaunchArgument("teleop_device", default_value="spacemouse", description="spacemouse | joy"),
        DeclareLaunchArgument("policy_device", default_value="cuda", description="torch device"),
        DeclareLaunchArgument("servo_twist_topic", default_value="/servo_node/delta_twist_cmds",
                              description="MoveIt Servo's TwistStamped input"),
        DeclareLaunchArgument("gripper_command_topic", default_value="/gripper/command",
                              description="std_msgs/Float64 gripper command (0 closed .. 1 open)"),
        DeclareLaunchArgument("gripper_state_topic", default_value="/gripper/state",
                              description="JointState with the gripper opening 0..1"),
        DeclareLaunchArgument("front_camera", default_value="/camera/front/image_raw",
                              description="sensor_msgs/Image of the front camera"),
        DeclareLaunchArgument("wrist_camera", default_value="/camera/wrist/image_raw",
                              description="sensor_msgs/Image of the wrist camera"),
        DeclareLaunchArgument("joint_states_topic", default_value="/joint_states", description="JointState"),
        DeclareLaunchArgument("ee_pose_topic", default_value="/ee_pose",
                              description="PoseStamped of the tool in the base frame"),
        DeclareLaunchArgument("frame_id", default_value="base_link",
                              description="Servo's robot_link_command_frame"),
    ]
    sensors = [("camera/front/image_raw", arg("front_camera")),
               ("camera/wrist/image_raw", arg("wrist_camera")),
               ("joint_states", arg("joint_states_topic")), ("ee_pose", arg("ee_pose_topic")),
               ("gripper/state", arg("gripper_state_topic"))]
    nodes = [
        Node(package="apo_ros", executable="policy_node", name="policy_node", remappings=sensors,
             parameters=[PathJoinSubstitution([config, "policy_node.yaml"]),
                         {"checkpoint": arg("checkpoint"), "device": arg("policy_device")}]),
        Node(package="apo_ros", executable="teleop_arbiter_node", name="teleop_arbiter_node",
             remappings=sensors + [("arm/delta_twist_cmds", arg("servo_twist_topic")),
                                   ("gripper/command", arg("gripper_command_topic"))],
             parameters=[PathJoinSubstitution([config, "teleop_arbiter_node.yaml"]),
                         {"device": arg("teleop_device"), "frame_id": arg("frame_id")}]),
        Node(package="apo_ros", executable="recorder_node", name="recorder_node", remappings=sensors,
             parameters=[PathJoinSubstitution([config, "recorder_node.yaml"]),
                         {"bags_dir": arg("bags_dir"), "task": arg("task"), "operator": "human",
                          "end_on_task_success": False}]),
    ]
    return LaunchDescription(args + nodes)
