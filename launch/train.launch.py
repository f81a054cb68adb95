"""trainer_node (table apo_ros.nodes.wiring.TRAIN): `ros2 service call /trainer/train_round
std_srvs/srv/Trigger` trains one round from the bags and publishes the new checkpoint on
policy/checkpoint (policy_node hot-swaps).

    ros2 launch apo_ros train.launch.py init_checkpoint:=/path/to/ckpt bags_dir:=bags demos_dir:=demos
"""

from apo_ros.nodes.wiring import TRAIN, launch_description


def generate_launch_description():
    return launch_description(TRAIN)
