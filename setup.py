"""apo_ros: one setup.py for both `pip install -e .` and `colcon build` (ament_python)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "apo_ros"


def _data(folder: str, pattern: str = "*") -> tuple[str, list[str]]:
    return (os.path.join("share", PACKAGE, folder), sorted(glob(os.path.join(folder, pattern))))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        _data("launch", "*.launch.py"),
        _data("config", "*.yaml"),
        _data("config", "*.json"),  # the Foxglove layout for episode bags
        _data("urdf", "*"),
    ],
    package_data={PACKAGE: ["py.typed"]},
    python_requires=">=3.10,<3.13",
    # torch is pinned by the Makefile (TORCH_SPEC) before this runs; a loose bound here keeps a
    # GPU user's CUDA build instead of replacing it.
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "pyyaml>=6",
        "draccus>=0.11.6,<0.12",  # dataclass configs (apo_ros/config.py), as LeRobot
        "rich>=13",
        "matplotlib>=3.7",
        "torch>=2.2",
        "safetensors>=0.4",
        "tokenizers>=0.19",
        "transformers>=4.50",
        "peft>=0.13",
        "rosbags>=0.11,<0.12",
        "mcap>=1.2",
        "mujoco>=3.3",
        "opencv-python-headless>=4.8",
        "msgpack>=1.0,<2",  # apo-ros serve / ws:// policies (openpi's wire format)
        "websockets>=13,<18",
    ],
    extras_require={
        "spacemouse": ["pyspacemouse>=2.1"],
        "tensorboard": ["tensorboard>=2.14"],
        "multigpu": ["accelerate>=0.30"],
        "media": ["av>=14", "pyarrow>=15"],  # bags video (H.264 through PyAV), bags export (parquet)
        "dev": [
            "pytest>=7",
            "pytest-xdist>=3",
            "hypothesis>=6",
            "mcap-ros2-support>=0.5",  # the official MCAP ROS 2 decoder, to check our bags against
            "ruff>=0.5",
            "mypy>=1.8",
            "pyspacemouse>=2.1",
            "tensorboard>=2.14",
            "accelerate>=0.30",
            "av>=14",
            "pyarrow>=15",
        ],
    },
    zip_safe=True,
    maintainer="apo_ros developers",
    maintainer_email="apo-ros@example.com",
    description="Deploy a VLA policy on a ROS 2 arm, correct it with a SpaceMouse, record rosbag2 "
    "episodes, and improve it with Action Preference Optimization.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "apo-ros = apo_ros.cli:main",
            "policy_node = apo_ros.nodes.policy_node:main",
            "teleop_arbiter_node = apo_ros.nodes.teleop_arbiter_node:main",
            "recorder_node = apo_ros.nodes.recorder_node:main",
            "trainer_node = apo_ros.nodes.trainer_node:main",
            "sim_arm_node = apo_ros.nodes.sim_arm_node:main",
        ],
    },
)
