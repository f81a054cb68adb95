"""apo_ros.policies"""
