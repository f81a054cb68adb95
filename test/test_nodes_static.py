"""The ROS layer without ROS: mypy checks the nodes against rclpy's own Python sources (the
`make typecheck-nodes` check, proven to have teeth on a broken node), and every node file, config
file and launch file is cross-checked with ast / yaml."""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NODES = ["policy_node", "teleop_arbiter_node", "recorder_node", "trainer_node", "sim_arm_node"]

BROKEN_NODE = '''
from rclpy.node import Node
from std_msgs.msg import String


class Broken(Node):
    def __init__(self) -> None:
        super().__init__("broken")
        self.create_timer("oops", self.tick)
        self.create_subscription(String, "topic", self.tick)
        self.create_publisher(String, "topic", 10, latched=True)

    def tick(self) -> None:
        self.get_clock().now().nanosecondz
'''


def ensure_stubs() -> Path:
    """.stubs/rclpy with py.typed, built as the Makefile builds it (rclpy-intellisense's sources)."""
    stubs = ROOT / ".stubs"
    if (stubs / "rclpy" / "py.typed").exists():
        return stubs
    src = importlib.util.find_spec("rclpy").submodule_search_locations[0]
    tmp = Path(tempfile.mkdtemp(dir=ROOT, prefix=".stubs-"))
    shutil.copytree(src, tmp / "rclpy")
    (tmp / "rclpy" / "py.typed").touch()
    try:
        os.rename(tmp, stubs)  # atomic: a parallel worker may have built it meanwhile
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return stubs


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory):
    stubs = ensure_stubs()
    broken = tmp_path_factory.mktemp("broken") / "broken_node.py"
    broken.write_text(BROKEN_NODE)
    env = dict(os.environ, MYPYPATH=str(stubs))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy-nodes.ini"),
                           "apo_ros/nodes", str(broken)], cwd=ROOT, env=env, capture_output=True,
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
    # a node's parameters live in config/<node>.yaml under `<node>: ros__parameters:`, and every
    # key there is a parameter the node declares (a typo would be silently ignored by ROS)
    declared = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "declare":
            for d in call.args[1:]:
                if isinstance(d, ast.Dict):
                    declared |= {k.value for k in d.keys if isinstance(k, ast.Constant)}
    for assign in tree.body:  # module-level parameter dicts merged in with **
        if isinstance(assign, ast.Assign) and isinstance(assign.value, ast.Dict):
            declared |= {k.value for k in assign.value.keys if isinstance(k, ast.Constant)}
    config = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    params = config[name]["ros__parameters"]
    unknown = set(params) - declared
    assert not unknown, f"config/{name}.yaml sets undeclared parameters {unknown}"
    # glue stays glue: no node file grows an algorithm
    assert len(path.read_text().splitlines()) < 180
    # only the node layer imports rclpy
    imports = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imports |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "rclpy" in imports


def test_only_the_node_layer_imports_rclpy():
    offenders = []
    for path in (ROOT / "apo_ros").rglob("*.py"):
        if "nodes" in path.parts:
            continue
        text = path.read_text()
        if re.search(r"^\s*(import rclpy|from rclpy)", text, re.M):
            offenders.append(str(path))
    assert offenders == []


LAUNCH_FILES = ["sim.launch.py", "robot.launch.py", "train.launch.py", "replay.launch.py"]


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == name]


def _kw(call, key):
    for k in call.keywords:
        if k.arg == key and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_files_reference_existing_executables_and_files(name):
    path = ROOT / "launch" / name
    source = path.read_text()
    compile(source, str(path), "exec")
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    scripts = _console_scripts()
    for call in _calls(tree, "Node"):
        package, executable = _kw(call, "package"), _kw(call, "executable")
        if package == "apo_ros":
            assert executable in scripts, f"{name}: no console script {executable!r}"
            assert _kw(call, "name") in (None, executable)
        else:
            assert (package, executable) == ("robot_state_publisher", "robot_state_publisher")
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    for s in strings:
        if s.endswith(".yaml"):
            assert (ROOT / "config" / s).is_file(), f"{name}: config/{s} missing"
        if s.endswith(".urdf"):
            assert (ROOT / "urdf" / s).is_file(), f"{name}: urdf/{s} missing"
    declared = {a.args[0].value for a in _calls(tree, "DeclareLaunchArgument")}
    used = {c.args[0].value for c in _calls(tree, "arg") + _calls(tree, "LaunchConfiguration")
            if c.args and isinstance(c.args[0], ast.Constant)}
    assert used <= declared, f"{name}: launch arguments used but not declared: {used - declared}"


def test_robot_launch_remaps_to_moveit_servo():
    tree = ast.parse((ROOT / "launch" / "robot.launch.py").read_text())
    defaults = {_kw(c, "default_value") for c in _calls(tree, "DeclareLaunchArgument")}
    assert "/servo_node/delta_twist_cmds" in defaults
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert {"arm/delta_twist_cmds", "gripper/command", "camera/front/image_raw"} <= strings
    # the topics the launch files remap are the ones the nodes use
    nodes_src = (ROOT / "apo_ros" / "nodes" / "teleop_arbiter_node.py").read_text()
    assert '"arm/delta_twist_cmds"' in nodes_src and '"gripper/command"' in nodes_src
