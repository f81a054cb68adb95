"""Finding the package's config files (config/*.yaml) from a source checkout or a ROS install,
and reading one node's parameters from a ROS 2 parameter file."""

from __future__ import annotations

import os
from pathlib import Path

from apo_ros.actions.safety import SafetyConfig, SafetyFilter

PACKAGE = "apo_ros"


def config_dirs() -> list[Path]:
    """Where config/ may be: every `<prefix>/share/apo_ros/config` on AMENT_PREFIX_PATH (a colcon
    install), then the source checkout next to this package."""
    dirs = []
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        dirs.append(Path(prefix) / "share" / PACKAGE / "config")
    dirs.append(Path(__file__).resolve().parents[2] / "config")
    return dirs


def find_config(name: str) -> str:
    """Absolute path of config/<name>; FileNotFoundError listing where it looked."""
    if os.path.isabs(name) or os.path.exists(name):
        if not os.path.exists(name):
            raise FileNotFoundError(f"{name}: no such config file")
        return os.path.abspath(name)
    tried = [d / name for d in config_dirs()]
    for path in tried:
        if path.is_file():
            return str(path)
    raise FileNotFoundError(f"config file {name!r} not found; looked in "
                            + ", ".join(str(p.parent) for p in tried))


def node_parameters(path: str, node_name: str) -> dict:
    """The `ros__parameters` mapping of `node_name` in a ROS 2 parameter file."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict) or node_name not in data:
        raise ValueError(f"{path}: no '{node_name}' entry (top-level keys: {sorted(map(str, data))})")
    node = data[node_name]
    if not isinstance(node, dict) or not isinstance(node.get("ros__parameters"), dict):
        raise ValueError(f"{path}: '{node_name}' must hold a 'ros__parameters' mapping")
    return dict(node["ros__parameters"])


def load_safety_filter(path: str = ""):
    """SafetyFilter from `path` (or the package's config/safety.yaml when empty)."""
    return SafetyFilter(SafetyConfig.from_yaml(path or find_config("safety.yaml")))
