"""apo_ros.demo"""
