"""The ROS layer checked statically: mypy checks the nodes against the real rclpy and message
packages (the `make typecheck-nodes` check, proven to have teeth on a broken node), and the node
files, config files, the wiring table and the launch files are cross-checked."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from apo_ros.nodes.wiring import GRAPHS, Arg, resolve
from apo_ros.recording import schema

ROOT = Path(__file__).resolve().parents[1]
NODES = ["policy_node", "teleop_arbiter_node", "recorder_node", "trainer_node", "sim_arm_node"]

BROKEN_NODE = '''
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String


class Broken(Node):
    def __init__(self) -> None:
        super().__init__("broken")
        self.create_timer("oops", self.tick)
        self.create_subscription(String, "topic", self.tick)
        self.create_publisher(String, "topic", 10, latched=True)

    def tick(self) -> None:
        self.get_clock().now().nanosecondz
        JointState().positions.append(1.0)
'''


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken") / "broken_node.py"
    broken.write_text(BROKEN_NODE)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy-nodes.ini"),
                           "apo_ros/nodes", str(broken)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    return proc.stdout + proc.stderr


def test_nodes_pass_the_static_check(mypy_output):
    node_errors = [line for line in mypy_output.splitlines() if line.startswith("apo_ros/nodes")]
    assert node_errors == [], mypy_output


def test_static_check_has_teeth(mypy_output):
    broken = [line for line in mypy_output.splitlines() if "broken_node.py" in line]
    text = "\n".join(broken)
    assert re.search(r'create_timer.*incompatible type "str"; expected "float"', text), mypy_output
    assert re.search(r'Missing positional argument "qos_profile".*create_subscription', text), mypy_output
    assert 'Unexpected keyword argument "latched"' in text, mypy_output
    assert "nanosecondz" in text, mypy_output
    # the message packages are checked too (JointState has `position`, not `positions`)
    assert '"JointState" has no attribute "positions"' in text, mypy_output


def test_the_real_rclpy_is_installed():
    """rclpy-intellisense (a copy of old rclpy sources) overwrote the real rclpy's files and
    broke create_node; the real one ships py.typed and its C extension."""
    import importlib.metadata as md

    import rclpy

    with pytest.raises(md.PackageNotFoundError):
        md.distribution("rclpy-intellisense")
    package = Path(rclpy.__file__).parent
    assert (package / "py.typed").is_file() and list(package.glob("_rclpy_pybind11*.so"))
    setup = (ROOT / "setup.py").read_text()
    assert "rclpy-intellisense" not in setup


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _console_scripts() -> dict[str, str]:
    tree = _tree(ROOT / "setup.py")
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value:
            name, target = node.value.split(" = ", 1)
            scripts[name.strip()] = target.strip()
    return scripts


@pytest.mark.parametrize("name", NODES)
def test_node_files_are_thin_glue_with_main_and_config(name):
    path = ROOT / "apo_ros" / "nodes" / f"{name}.py"
    tree = _tree(path)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "main" in functions
    assert _console_scripts()[name] == f"apo_ros.nodes.{name}:main"
    # a node's parameters live in config/<node>.yaml under `<node>: ros__parameters:` (the node
    # reads it as its defaults, so `ros2 run apo_ros <node>` runs with it); every key there is a
    # parameter the node declares, with the declared type (ROS refuses a double for an integer)
    declared = _declared_parameters(name)
    config = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    params = config[name]["ros__parameters"]
    unknown = set(params) - set(declared)
    assert not unknown, f"config/{name}.yaml sets undeclared parameters {unknown}"
    for key, value in params.items():
        if declared[key] is not None:
            assert type(value) is type(declared[key]), f"config/{name}.yaml: {key} {value!r}"
    # glue stays glue: no node file grows an algorithm (the bound leaves room for what every
    # node declares: parameter ranges and run-time appliers, diagnostics, sensor inputs)
    assert len(path.read_text().splitlines()) < 205
    assert "ApoNode" in path.read_text()  # malformed messages dropped, clean shutdown


def test_only_the_node_layer_imports_rclpy():
    offenders = []
    for path in (ROOT / "apo_ros").rglob("*.py"):
        if "nodes" in path.parts:
            continue
        text = path.read_text()
        if re.search(r"^\s*(import rclpy|from rclpy)", text, re.M):
            offenders.append(str(path))
    assert offenders == []


LAUNCH_FILES = {"sim.launch.py": "SIM", "robot.launch.py": "ROBOT", "train.launch.py": "TRAIN"}


@pytest.mark.parametrize("name", sorted(LAUNCH_FILES))
def test_launch_files_are_thin_readers_of_the_wiring_table(name):
    tree = ast.parse((ROOT / "launch" / name).read_text())
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in functions] == ["generate_launch_description"]
    (ret,) = [n for n in ast.walk(functions[0]) if isinstance(n, ast.Return)]
    call = ret.value
    assert isinstance(call, ast.Call) and call.func.id == "launch_description"
    assert call.args[0].id == LAUNCH_FILES[name]


def _declared_parameters(executable: str) -> dict:
    """The node's declared parameters and defaults, read from its source."""
    tree = _tree(ROOT / "apo_ros" / "nodes" / f"{executable}.py")
    declared = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and isinstance(k.value, str):
                    if isinstance(v, ast.Call) and getattr(v.func, "id", "") == "Param" and v.args:
                        v = v.args[0]  # Param(default, ...)
                    try:
                        declared[k.value] = ast.literal_eval(v)
                    except ValueError:
                        declared[k.value] = None
    return declared


@pytest.mark.parametrize("key", sorted(GRAPHS))
def test_wiring_table(key):
    graph = GRAPHS[key]
    scripts = _console_scripts()
    names = [a.name for a in graph.arguments]
    assert len(names) == len(set(names))
    used = set()
    for spec in graph.nodes:
        values = list(spec.parameters.values()) + [dst for _, dst in spec.remappings] + [spec.urdf]
        used |= {v.name for v in values if isinstance(v, Arg)}
        if not spec.runs_here:
            assert (spec.package, spec.executable) == ("robot_state_publisher", "robot_state_publisher")
            assert (ROOT / "urdf" / graph.argument(spec.urdf.name).default).is_file()
            continue
        assert scripts[spec.executable] == f"apo_ros.nodes.{spec.executable}:main"
        assert (ROOT / "config" / spec.config).is_file()
        declared = _declared_parameters(spec.executable)
        undeclared = set(spec.parameters) - set(declared)
        assert not undeclared, f"{spec.executable}: undeclared parameters {undeclared}"
        source = (ROOT / "apo_ros" / "nodes" / f"{spec.executable}.py").read_text()
        recorded = {t.topic for t in schema.topics()} if spec.executable == "recorder_node" else set()
        for topic, _dst in spec.remappings:  # remapped topics are topics the node uses
            assert (f'"{topic}"' in source or topic in recorded
                    or (topic.startswith("camera/") and "camera/{" in source)), f"{spec.executable}: {topic}"
    assert used | {"namespace"} >= set(names) - {"namespace"}, f"unused arguments {set(names) - used}"
    if graph.namespace is not None:
        assert graph.namespace.name in names
    # resolving gives concrete values for every Arg
    values = {a.name: f"/x/{a.name}" for a in graph.arguments if a.default is None}
    for node in resolve(graph, values):
        assert not any(isinstance(v, Arg) for v in node.parameters.values())
        assert Path(node.config).is_file()
        args = node.ros_args("o.yaml")
        assert args[:3] == ["--ros-args", "-r", f"__node:={node.name}"] and "--params-file" in args
    with pytest.raises(KeyError, match="unknown launch arguments"):
        resolve(graph, {**values, "nope": 1})


def test_robot_graph_remaps_to_moveit_servo():
    from apo_ros.nodes.wiring import ROBOT

    arbiter = {s.executable: s for s in ROBOT.nodes}["teleop_arbiter_node"]
    remaps = {src: dst for src, dst in arbiter.remappings}
    assert ROBOT.argument(remaps["arm/delta_twist_cmds"].name).default == "/servo_node/delta_twist_cmds"
    assert {"gripper/command", "gripper/state", "ee_pose"} <= set(remaps)
    (node,) = [n for n in resolve(ROBOT, {"checkpoint": "/c"}) if n.name == "teleop_arbiter_node"]
    assert ("arm/delta_twist_cmds", "/servo_node/delta_twist_cmds") in node.remappings


def test_replay_launch_file_compiles():
    source = (ROOT / "launch" / "replay.launch.py").read_text()
    compile(source, "replay.launch.py", "exec")
    assert (ROOT / "urdf" / "apo_arm.urdf").is_file()
