"""apo_ros.runtime"""
