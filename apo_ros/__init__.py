"""apo_ros: deploy a VLA policy on a ROS 2 arm, correct it, record bags, improve it with APO."""

__version__ = "0.1.0"
