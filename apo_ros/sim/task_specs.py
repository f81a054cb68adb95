"""The simulator's task registry: one `TaskSpec` per task, without MuJoCo, so the CLI lists and
checks task names without loading the simulator. `apo_ros.sim.tasks.TASKS` is built from it.

Adding a task is one `Task` subclass in `apo_ros/sim/tasks.py` (its objects, seeded placement,
success predicate and expert geometry) plus one `TaskSpec` entry here; a variant of an existing
task is only the entry (its class's fields in `options`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    name: str
    task_class: str  # the Task subclass in apo_ros.sim.tasks that builds it
    instruction: str  # the language instruction given to the policy
    max_steps: int = 160  # default episode length at 10 Hz (truncation)
    hold_steps: int = 1  # consecutive control steps the success predicate must hold to terminate
    object_body: str = ""  # the manipulated (free) object
    target_body: str = ""  # where it must go (plate, stick, rack)
    options: tuple[tuple[str, Any], ...] = ()  # the class's own fields (randomization ranges)
    variant_of: str = ""  # the task this one narrows (same objects and instruction)


TASK_SPECS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("lemon_on_plate", "LemonOnPlate", "put the lemon on the plate", max_steps=150,
             object_body="lemon", target_body="plate"),
    # The same task with a narrower seeded randomization (8 cm x 8 cm boxes, lemon yaw +-0.5 rad,
    # the plate always to the left of the lemon): the `apo-ros demo` task, where a small BC base
    # trained in minutes on a 2-core CPU reaches tens of percent (the full task's localization
    # and grasp precision at 64 px need far more demos and steps).
    TaskSpec("lemon_on_plate_easy", "LemonOnPlate", "put the lemon on the plate", max_steps=150,
             object_body="lemon", target_body="plate", variant_of="lemon_on_plate",
             options=(("plate_box", (0.42, 0.50, 0.10, 0.18)), ("lemon_box", (0.34, 0.42, -0.16, -0.08)),
                      ("lemon_yaw", 0.5))),
    TaskSpec("square_on_stick", "SquareOnStick", "insert the square into the stick", max_steps=160,
             object_body="square", target_body="stick"),
    TaskSpec("hang_cup", "HangCup", "hang the cup on the rack", max_steps=180, hold_steps=3,
             object_body="cup", target_body="rack"),
)}


def task_names() -> tuple[str, ...]:
    """The task names, in registration order (the CLI's choices)."""
    return tuple(TASK_SPECS)


def base_task_names() -> tuple[str, ...]:
    """The tasks that are not a variant of another one."""
    return tuple(name for name, spec in TASK_SPECS.items() if not spec.variant_of)


def check_task_name(name: str) -> str:
    if name not in TASK_SPECS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_SPECS)}")
    return name
