"""apo_ros.control: the control-loop core below the simulator and the runtime. `ActionQueue` plans
one action per tick from policy chunks; `PolicyRunner` turns any `ActionSource` (a policy, an
expert) into one safe, stamped action per tick. No ROS, no simulator, no torch."""
