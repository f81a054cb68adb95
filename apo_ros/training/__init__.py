"""apo_ros.training"""
