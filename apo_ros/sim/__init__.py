"""apo_ros.sim: the MuJoCo tabletop (arm from urdf/apo_arm.urdf), three tasks, scripted experts,
a simulated operator, evaluation. Importing this package does not import MuJoCo; the names below
load their modules on first use (so `apo-ros --help` stays fast)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from apo_ros.lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from apo_ros.sim.env import TabletopEnv, make_env
    from apo_ros.sim.experts import Expert, ExpertConfig, StateExpert, make_expert
    from apo_ros.sim.operator import OperatorConfig, SimulatedOperator
    from apo_ros.sim.task_specs import TASK_SPECS, TaskSpec, task_names
    from apo_ros.sim.tasks import TASKS, Task

_EXPORTS = {
    # the task registry without MuJoCo (names, instructions, episode lengths)
    "TASK_SPECS": "apo_ros.sim.task_specs",
    "TaskSpec": "apo_ros.sim.task_specs",
    "task_names": "apo_ros.sim.task_specs",
    "TASKS": "apo_ros.sim.tasks",
    "Task": "apo_ros.sim.tasks",
    "TabletopEnv": "apo_ros.sim.env",
    "make_env": "apo_ros.sim.env",
    "Expert": "apo_ros.sim.experts",
    "ExpertConfig": "apo_ros.sim.experts",
    "make_expert": "apo_ros.sim.experts",
    "StateExpert": "apo_ros.sim.experts",
    "OperatorConfig": "apo_ros.sim.operator",
    "SimulatedOperator": "apo_ros.sim.operator",
}

__all__ = ["TASKS", "TASK_SPECS", "Expert", "ExpertConfig", "OperatorConfig", "SimulatedOperator",
           "StateExpert", "TabletopEnv", "Task", "TaskSpec", "make_env", "make_expert", "task_names"]
# `evaluate` lives in the submodule of the same name: `from apo_ros.sim.evaluate import evaluate`
# (re-exporting it here would be shadowed by the submodule once that is imported).


__getattr__ = lazy_exports(__name__, _EXPORTS)
