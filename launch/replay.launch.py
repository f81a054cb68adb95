"""Replay one episode bag: `ros2 bag play` + robot_state_publisher (so RViz shows the arm moving
with the recorded joint_states, cameras and executed actions).

    ros2 launch apo_ros replay.launch.py bag:=bags/20261127-101500_lemon_on_plate_001 rate:=1.0
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import Command, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    arg = LaunchConfiguration
    urdf = PathJoinSubstitution([FindPackageShare("apo_ros"), "urdf", arg("urdf")])
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="episode bag directory"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("urdf", default_value="apo_arm.urdf", description="file in share/apo_ros/urdf"),
        Node(package="robot_state_publisher", executable="robot_state_publisher",
             parameters=[{"robot_description": ParameterValue(Command(["cat ", urdf]), value_type=str),
                          "use_sim_time": False}]),
        ExecuteProcess(cmd=["ros2", "bag", "play", arg("bag"), "--rate", arg("rate")], output="screen"),
    ])
