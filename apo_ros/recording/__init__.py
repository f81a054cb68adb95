"""apo_ros.recording"""
