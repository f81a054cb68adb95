"""The whole stack on the simulated arm: sim_arm_node (MuJoCo) + robot_state_publisher (URDF) +
policy_node + teleop_arbiter_node + recorder_node. The nodes, parameters and remappings are the
table apo_ros.nodes.wiring.SIM (the graph tests start the same processes).

    ros2 launch apo_ros sim.launch.py checkpoint:=/path/to/ckpt task:=lemon_on_plate \
        bags_dir:=bags teleop_device:=joy
"""

from apo_ros.nodes.wiring import SIM, launch_description


def generate_launch_description():
    return launch_description(SIM)
