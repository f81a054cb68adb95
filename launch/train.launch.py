"""trainer_node: `ros2 service call /trainer/train_round std_srvs/srv/Trigger` trains one round
from the bags and publishes the new checkpoint on policy/checkpoint (policy_node hot-swaps).

    ros2 launch apo_ros train.launch.py init_checkpoint:=/path/to/ckpt bags_dir:=bags demos_dir:=demos
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    arg = LaunchConfiguration
    args = [
        DeclareLaunchArgument("init_checkpoint", description="the deployed checkpoint"),
        DeclareLaunchArgument("bags_dir", default_value="bags", description="interaction bags"),
        DeclareLaunchArgument("demos_dir", default_value="demos", description="expert demo bags"),
        DeclareLaunchArgument("out_dir", default_value="checkpoints", description="round outputs"),
        DeclareLaunchArgument("method", default_value="apo", description="bc|dagger|sirius|kto|tpo|apo"),
        DeclareLaunchArgument("train_config", default_value="", description="TrainConfig YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the stack"),
    ]
    config = PathJoinSubstitution([FindPackageShare("apo_ros"), "config", "trainer_node.yaml"])
    node = Node(package="apo_ros", executable="trainer_node", name="trainer_node",
                namespace=arg("namespace"),
                parameters=[config,
                            {"init_checkpoint": arg("init_checkpoint"), "bags_dir": arg("bags_dir"),
                             "demos_dir": arg("demos_dir"), "out_dir": arg("out_dir"),
                             "method": arg("method"), "train_config": arg("train_config")}])
    return LaunchDescription(args + [node])
