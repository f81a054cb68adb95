"""The wiring of apo_ros graphs in one table: which nodes run, with which parameter files,
parameters and remappings, and which launch arguments fill them in.

The launch files (launch/*.launch.py) are thin readers of this table (`launch_description`), and
the graph tests and `python -m apo_ros.nodes.local_launch` start exactly these processes (`resolve`),
so what the tests run is what `ros2 launch` runs. No rclpy / launch import at module level: the
table is read without ROS.

A value in the table is a literal or `Arg("name")` (a launch argument); `URDF` marks the robot
description (the contents of urdf/<urdf>).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any

from apo_ros.runtime.config import find_config

PACKAGE = "apo_ros"


@dataclass(frozen=True)
class Arg:
    """A launch argument. default None = required."""

    name: str
    default: str | None = None
    description: str = ""


@dataclass(frozen=True)
class NodeSpec:
    executable: str
    package: str = PACKAGE
    config: str = ""  # config/<file> loaded before `parameters` (apo_ros nodes: <executable>.yaml)
    parameters: dict[str, Any] = field(default_factory=dict)  # overrides: literal or Arg
    remappings: tuple[tuple[str, Any], ...] = ()  # (topic the node uses, literal or Arg)
    urdf: Arg | None = None  # robot_state_publisher: robot_description = contents of urdf/<arg>

    @property
    def name(self) -> str:
        return self.executable

    @property
    def runs_here(self) -> bool:
        """apo_ros's own nodes; robot_state_publisher needs a ROS install."""
        return self.package == PACKAGE


@dataclass(frozen=True)
class Graph:
    description: str
    arguments: tuple[Arg, ...]
    nodes: tuple[NodeSpec, ...]
    namespace: Arg | None = None

    def argument(self, name: str) -> Arg:
        for a in self.arguments:
            if a.name == name:
                return a
        raise KeyError(f"no launch argument {name!r}; this graph takes "
                       f"{[a.name for a in self.arguments]}")


def _node(executable: str, parameters: dict[str, Any] | None = None,
          remappings: tuple[tuple[str, Any], ...] = ()) -> NodeSpec:
    return NodeSpec(executable, config=f"{executable}.yaml", parameters=parameters or {},
                    remappings=remappings)


NAMESPACE = Arg("namespace", "", "namespace of the stack")
CHECKPOINT = Arg("checkpoint", None, "policy checkpoint directory")
BAGS_DIR = Arg("bags_dir", "bags", "episode bags go here")
TELEOP_DEVICE = Arg("teleop_device", "spacemouse",
                    "spacemouse (HID) or joy (the spacenav driver on spacenav/joy)")

SIM = Graph(
    "The whole stack on the simulated arm: sim_arm_node (MuJoCo) + robot_state_publisher (URDF) + "
    "policy_node + teleop_arbiter_node + recorder_node.",
    arguments=(
        CHECKPOINT,
        Arg("task", "lemon_on_plate", "lemon_on_plate | lemon_on_plate_easy | square_on_stick | hang_cup"),
        BAGS_DIR,
        TELEOP_DEVICE,
        Arg("policy_device", "cpu", "torch device"),
        Arg("urdf", "apo_arm.urdf", "file in share/apo_ros/urdf"),
        NAMESPACE,
    ),
    nodes=(
        NodeSpec("robot_state_publisher", package="robot_state_publisher", urdf=Arg("urdf")),
        _node("sim_arm_node", {"task": Arg("task")}),
        _node("policy_node", {"checkpoint": Arg("checkpoint"), "device": Arg("policy_device")}),
        _node("teleop_arbiter_node", {"device": Arg("teleop_device")}),
        _node("recorder_node", {"bags_dir": Arg("bags_dir"), "task": Arg("task"),
                                "operator": "human"}),
    ),
    namespace=NAMESPACE,
)

# The robot's sensor topics, remapped to the drivers' topics by launch arguments.
_SENSORS = (("camera/front/image_raw", Arg("front_camera", "/camera/front/image_raw",
                                            "sensor_msgs/Image of the front camera")),
            ("camera/wrist/image_raw", Arg("wrist_camera", "/camera/wrist/image_raw",
                                            "sensor_msgs/Image of the wrist camera")),
            ("joint_states", Arg("joint_states_topic", "/joint_states", "JointState")),
            ("ee_pose", Arg("ee_pose_topic", "/ee_pose", "PoseStamped of the tool in the base frame")),
            ("gripper/state", Arg("gripper_state_topic", "/gripper/state",
                                  "JointState with the gripper opening 0..1")))

ROBOT = Graph(
    "The stack on a real arm driven by MoveIt Servo: policy_node + teleop_arbiter_node + "
    "recorder_node. Start MoveIt Servo (in twist mode) and the camera, pose and gripper drivers "
    "separately.",
    arguments=(
        CHECKPOINT,
        Arg("task", "task", "task name for the bags"),
        BAGS_DIR,
        TELEOP_DEVICE,
        Arg("policy_device", "cuda", "torch device"),
        Arg("servo_twist_topic", "/servo_node/delta_twist_cmds", "MoveIt Servo's TwistStamped input"),
        Arg("gripper_command_topic", "/gripper/command",
            "std_msgs/Float64 gripper command (0 closed .. 1 open)"),
        *(arg for _topic, arg in _SENSORS),
        Arg("frame_id", "base_link", "Servo's robot_link_command_frame"),
    ),
    nodes=(
        _node("policy_node", {"checkpoint": Arg("checkpoint"), "device": Arg("policy_device")},
              _SENSORS),
        _node("teleop_arbiter_node", {"device": Arg("teleop_device"), "frame_id": Arg("frame_id")},
              tuple(r for r in _SENSORS if r[0] in ("ee_pose", "gripper/state"))
              + (("arm/delta_twist_cmds", Arg("servo_twist_topic")),
                          ("gripper/command", Arg("gripper_command_topic")))),
        _node("recorder_node", {"bags_dir": Arg("bags_dir"), "task": Arg("task"),
                                "operator": "human", "end_on_task_success": False}, _SENSORS),
    ),
)

TRAIN = Graph(
    "trainer_node: `ros2 service call /trainer/train_round std_srvs/srv/Trigger` trains one round "
    "from the bags and publishes the new checkpoint on policy/checkpoint (policy_node hot-swaps).",
    arguments=(
        Arg("init_checkpoint", None, "the deployed checkpoint"),
        Arg("bags_dir", "bags", "interaction bags"),
        Arg("demos_dir", "demos", "expert demo bags"),
        Arg("out_dir", "checkpoints", "round outputs"),
        Arg("method", "apo", "bc|dagger|sirius|kto|tpo|apo"),
        Arg("train_config", "", "TrainConfig YAML"),
        NAMESPACE,
    ),
    nodes=(
        _node("trainer_node", {"init_checkpoint": Arg("init_checkpoint"), "bags_dir": Arg("bags_dir"),
                               "demos_dir": Arg("demos_dir"), "out_dir": Arg("out_dir"),
                               "method": Arg("method"), "train_config": Arg("train_config")}),
    ),
    namespace=NAMESPACE,
)

GRAPHS = {"sim": SIM, "robot": ROBOT, "train": TRAIN}


# ---- without launch: concrete values ---------------------------------------------------------

def absolute_namespace(namespace: str) -> str:
    """"arm1" and "/arm1" -> "/arm1" (ROS remaps the namespace to an absolute name only; launch_ros
    adds the slash the same way)."""
    namespace = namespace.strip()
    return namespace if not namespace or namespace.startswith("/") else f"/{namespace}"


@dataclass
class ResolvedNode:
    """One process to start: `<executable> --ros-args` + these."""

    executable: str
    name: str
    namespace: str
    config: str  # absolute path of the parameter file ("" = none)
    parameters: dict[str, Any]  # concrete overrides (after the config file)
    remappings: list[tuple[str, str]]

    def ros_args(self, overrides_file: str = "") -> list[str]:
        """The arguments launch_ros gives the process (overrides go in a parameter file, as
        launch_ros writes them)."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={absolute_namespace(self.namespace)}"]
        if self.config:
            args += ["--params-file", self.config]
        if overrides_file:
            args += ["--params-file", overrides_file]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args

    def overrides_yaml(self) -> str:
        """The overrides as a ROS 2 parameter file (JSON is YAML), for this process's node
        whatever its namespace: a key "sim_arm_node" means "/sim_arm_node" and would not apply
        under a namespace; launch_ros writes "/**" for the same reason."""
        return json.dumps({"/**": {"ros__parameters": self.parameters}}, indent=1, sort_keys=True)


def resolve(graph: Graph, values: dict[str, Any] | None = None,
            extra_parameters: dict[str, dict[str, Any]] | None = None) -> list[ResolvedNode]:
    """The graph's apo_ros nodes with every launch argument replaced by `values[name]` (or its
    default). `extra_parameters[node]` adds parameters, as `ros2 launch ... --ros-args -p` or a
    user's own parameter file would."""
    values = dict(values or {})
    unknown = set(values) - {a.name for a in graph.arguments}
    if unknown:
        raise KeyError(f"unknown launch arguments {sorted(unknown)}; this graph takes "
                       f"{[a.name for a in graph.arguments]}")

    def value(v: Any) -> Any:
        if not isinstance(v, Arg):
            return v
        arg = graph.argument(v.name)
        if arg.name in values:
            return values[arg.name]
        if arg.default is None:
            raise KeyError(f"launch argument {arg.name!r} is required ({arg.description})")
        return arg.default

    namespace = str(value(graph.namespace)) if graph.namespace is not None else ""
    out = []
    for spec in graph.nodes:
        if not spec.runs_here:
            continue
        params = {k: value(v) for k, v in spec.parameters.items()}
        params.update((extra_parameters or {}).get(spec.name, {}))
        out.append(ResolvedNode(spec.executable, spec.name, namespace,
                                find_config(spec.config) if spec.config else "", params,
                                [(src, str(value(dst))) for src, dst in spec.remappings]))
    return out


# ---- with launch (inside a ROS 2 install) ------------------------------------------------------

def launch_description(graph: Graph) -> Any:  # pragma: no cover - needs launch / launch_ros
    """The graph as a launch.LaunchDescription (what launch/*.launch.py return)."""
    # launch and launch_ros come with a ROS 2 install (they are not on the package index)
    launch = importlib.import_module("launch")
    launch_actions = importlib.import_module("launch.actions")
    subs = importlib.import_module("launch.substitutions")
    ros_actions = importlib.import_module("launch_ros.actions")
    ros_params = importlib.import_module("launch_ros.parameter_descriptions")
    share = importlib.import_module("launch_ros.substitutions").FindPackageShare(PACKAGE)

    def sub(v: Any) -> Any:
        return subs.LaunchConfiguration(v.name) if isinstance(v, Arg) else v

    actions: list[Any] = []
    for a in graph.arguments:
        kwargs = {"description": a.description}
        if a.default is not None:
            kwargs["default_value"] = a.default
        actions.append(launch_actions.DeclareLaunchArgument(a.name, **kwargs))
    namespace = sub(graph.namespace) if graph.namespace is not None else ""
    for spec in graph.nodes:
        parameters: list[Any] = []
        if spec.config:
            parameters.append(subs.PathJoinSubstitution([share, "config", spec.config]))
        if spec.parameters:
            parameters.append({k: sub(v) for k, v in spec.parameters.items()})
        if spec.urdf is not None:
            urdf = subs.PathJoinSubstitution([share, "urdf", sub(spec.urdf)])
            description = ros_params.ParameterValue(subs.Command(["cat ", urdf]), value_type=str)
            parameters.append({"robot_description": description})
        actions.append(ros_actions.Node(
            package=spec.package, executable=spec.executable, name=spec.name, namespace=namespace,
            parameters=parameters, remappings=[(src, sub(dst)) for src, dst in spec.remappings],
            output="screen"))
    return launch.LaunchDescription(actions)
