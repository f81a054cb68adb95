"""The whole stack on the simulated arm: sim_arm_node (MuJoCo) + robot_state_publisher (URDF) +
policy_node + teleop_arbiter_node + recorder_node.

    ros2 launch apo_ros sim.launch.py checkpoint:=/path/to/ckpt task:=lemon_on_plate \
        bags_dir:=bags teleop_device:=spacemouse
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import Command, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("apo_ros")
    arg = LaunchConfiguration
    args = [
        DeclareLaunchArgument("checkpoint", description="policy checkpoint directory"),
        DeclareLaunchArgument("task", default_value="lemon_on_plate",
                              description="lemon_on_plate | square_on_stick | hang_cup"),
        DeclareLaunchArgument("bags_dir", default_value="bags", description="episode bags go here"),
        DeclareLaunchArgument("teleop_device", default_value="spacemouse",
                              description="spacemouse (HID) or joy (spacenav driver on spacenav/joy)"),
        DeclareLaunchArgument("policy_device", default_value="cpu", description="torch device"),
        DeclareLaunchArgument("urdf", default_value="apo_arm.urdf", description="file in share/apo_ros/urdf"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the stack"),
    ]
    urdf = PathJoinSubstitution([share, "urdf", arg("urdf")])
    config = PathJoinSubstitution([share, "config"])
    ns = arg("namespace")
    nodes = [
        Node(package="robot_state_publisher", executable="robot_state_publisher", namespace=ns,
             parameters=[{"robot_description": ParameterValue(Command(["cat ", urdf]), value_type=str)}]),
        Node(package="apo_ros", executable="sim_arm_node", name="sim_arm_node", namespace=ns,
             parameters=[PathJoinSubstitution([config, "sim_arm_node.yaml"]), {"task": arg("task")}]),
        Node(package="apo_ros", executable="policy_node", name="policy_node", namespace=ns,
             parameters=[PathJoinSubstitution([config, "policy_node.yaml"]),
                         {"checkpoint": arg("checkpoint"), "device": arg("policy_device")}]),
        Node(package="apo_ros", executable="teleop_arbiter_node", name="teleop_arbiter_node",
             namespace=ns, parameters=[PathJoinSubstitution([config, "teleop_arbiter_node.yaml"]),
                                       {"device": arg("teleop_device")}]),
        Node(package="apo_ros", executable="recorder_node", name="recorder_node", namespace=ns,
             parameters=[PathJoinSubstitution([config, "recorder_node.yaml"]),
                         {"bags_dir": arg("bags_dir"), "task": arg("task"), "operator": "human"}]),
    ]
    return LaunchDescription(args + nodes)
