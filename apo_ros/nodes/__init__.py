"""apo_ros.nodes"""
