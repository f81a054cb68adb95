"""apo_ros.teleop"""
