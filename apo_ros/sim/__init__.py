"""apo_ros.sim"""
