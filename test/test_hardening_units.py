"""The pieces behind the graph's hardening, one at a time, without processes: the sim arm's twist
queue that drains, speed limits and frames; NaN Joy axes; per-kind incident throttling;
parameter descriptions from the config files; the launcher's namespace handling; package.xml
listing what the nodes import."""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from apo_ros.sim.twists import ServoInput, TwistQueue, limit_speed, quat_to_matrix, to_base_frame
from apo_ros.teleop.joy import joy_to_state

S = 1_000_000_000
MS = 1_000_000
ROOT = Path(__file__).resolve().parents[1]


def test_the_twist_queue_catches_up_after_a_burst():
    q = TwistQueue(1.0)
    tick = 100 * MS
    # steady state: one twist per period, each applied at the next tick
    for k in range(3):
        q.put(k, k * tick + 10 * MS)
        assert q.take((k + 1) * tick) == k
    # the sender stalled, then sent what it owed at once
    for k in (3, 4, 5, 6):
        q.put(k, 6 * tick + 60 * MS)
    assert q.take(7 * tick) == 6 and q.superseded == 3  # the newest; the rest was late
    # and the next twist is applied at the very next tick again (it used to wait behind the burst)
    q.put(7, 7 * tick + 10 * MS)
    assert q.take(8 * tick) == 7
    assert q.take(9 * tick) is None  # never repeated
    q.put(8, 9 * tick)
    assert q.take(9 * tick + 2 * S) is None and q.expired == 1  # too old to apply


def test_speed_limits_keep_the_direction():
    lin, ang, limited = limit_speed([1e6, 0, 1e6], [0, 0, 0.1], 0.25, 1.5)
    assert limited
    np.testing.assert_allclose(lin, [0.25 / np.sqrt(2), 0, 0.25 / np.sqrt(2)])
    np.testing.assert_allclose(ang, [0, 0, 0.1])
    assert not limit_speed([0.1, 0, 0], [0, 0, 0], 0.25, 1.5)[2]
    with pytest.raises(ValueError, match="non-finite"):
        limit_speed([np.nan, 0, 0], [0, 0, 0], 0.25, 1.5)


def test_twist_frames():
    quarter_turn = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]  # tool turned 90 deg about z
    np.testing.assert_allclose(quat_to_matrix(quarter_turn) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    lin, _ = to_base_frame("tool0", [0.1, 0, 0], [0, 0, 0], "base_link", "tool0", quarter_turn)
    np.testing.assert_allclose(lin, [0, 0.1, 0], atol=1e-12)
    for base in ("", "base_link"):
        np.testing.assert_allclose(to_base_frame(base, [0.1, 0, 0], [0, 0, 0], "base_link", "tool0",
                                                 quarter_turn)[0], [0.1, 0, 0])
    with pytest.raises(ValueError, match="'camera_link'"):
        to_base_frame("camera_link", [0.1, 0, 0], [0, 0, 0], "base_link", "tool0", quarter_turn)


def test_servo_input_settings():
    servo = ServoInput(1.0, "base_link", "tool0", 0.25, 1.5)
    servo.set("frame_id", "world")
    servo.set("max_linear_speed", 0.05)
    assert servo.put(5, "world", [1, 0, 0], [0, 0, 0], 0)
    stamp, lin, _ = servo.take(0)
    assert stamp == 5 and np.isclose(np.linalg.norm(lin), 0.05)
    with pytest.raises(ValueError):
        servo.set("frame_id", "")
    with pytest.raises(ValueError):
        servo.put(6, "base_link", [1, 0, 0], [0, 0, 0], 0)  # no longer the base frame


def test_nan_joy_axes_are_malformed_not_idle():
    msg = SimpleNamespace(axes=[float("nan"), 0, 0, 0, 0, 0], buttons=[0, 0])
    with pytest.raises(ValueError, match="not all finite"):
        joy_to_state(msg, 0.0)


def test_incidents_are_throttled_per_kind():
    pytest.importorskip("rclpy")
    from apo_ros.nodes.common import incident_kind, short
    from apo_ros.recording.images import ImageProblem

    assert incident_kind(ValueError("image data has 100 bytes")) == incident_kind(
        ValueError("image data has 7 bytes"))
    assert incident_kind(ValueError("Joy message has 2 axes")) != incident_kind(
        ValueError("Joy axes [nan] are not all finite"))
    assert incident_kind(ImageProblem("encoding", "unsupported image encoding '16UC1'")) == "encoding"
    assert len(short("x" * 5_000_000)) < 200


def test_every_parameter_in_the_config_files_has_a_description():
    pytest.importorskip("rclpy")
    from apo_ros.nodes.common import packaged_descriptions

    for name in ("sim_arm_node", "recorder_node"):
        config = (ROOT / "config" / f"{name}.yaml").read_text()
        keys = re.findall(r"^\s{4}(\w+):", config, re.M)
        described = packaged_descriptions(name)
        assert keys and all(described.get(k) for k in keys), (name, set(keys) - set(described))


@pytest.mark.parametrize("namespace", ["arm1", "/arm1"])
def test_the_launcher_applies_overrides_under_a_namespace(namespace):
    from apo_ros.nodes.wiring import SIM, resolve

    nodes = resolve(SIM, {"checkpoint": "ckpt", "namespace": namespace, "task": "hang_cup"})
    sim = next(n for n in nodes if n.name == "sim_arm_node")
    args = sim.ros_args("overrides.yaml")
    assert args[args.index("__node:=sim_arm_node") + 1:args.index("__node:=sim_arm_node") + 3] == [
        "-r", "__ns:=/arm1"]
    # the overrides name no node: they apply to this process's node whatever its namespace
    assert json.loads(sim.overrides_yaml()) == {"/**": {"ros__parameters": {"task": "hang_cup"}}}


def test_package_xml_lists_what_the_nodes_import():
    """Every ROS package the code imports is an exec_depend, and every message package listed
    is imported somewhere."""
    deps = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}
    imported = set()
    for path in (ROOT / "apo_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
    ros = {m for m in imported if m.endswith("_msgs") or m.endswith("_srvs")
           or m in ("rclpy", "ament_index_python", "rcl_interfaces")}
    assert ros <= deps, f"imported but not in package.xml: {ros - deps}"
    listed_msgs = {d for d in deps if d.endswith("_msgs") or d.endswith("_srvs")}
    assert listed_msgs <= imported, f"in package.xml but never imported: {listed_msgs - imported}"
    assert {"ros2bag", "rosbag2_storage_mcap"} <= deps  # `ros2 bag info` on the MCAP episodes


def test_an_unknown_instruction_is_reported_in_a_line_not_a_megabyte():
    from apo_ros.policies import build_policy
    from apo_ros.policies.testing import default_statistics

    policy = build_policy("small", default_statistics(0.03), instructions=["put the lemon on the plate"],
                          device="cpu", channels=(4, 4), hidden=16)
    with pytest.raises(ValueError) as err:
        policy.instruction_ids(["x" * 5_000_000])
    assert len(str(err.value)) < 400 and "5000000 characters" in str(err.value)
