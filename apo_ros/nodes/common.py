"""What every apo_ros node shares: declaring parameters up front, ROS time in nanoseconds, QoS
profiles matching the bag schema, and the spin/shutdown boilerplate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Streams (images, joints, actions): reliable, keep last 10 (schema.QOS_DEFAULT).
STREAM_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=ReliabilityPolicy.RELIABLE)
# instruction, policy/checkpoint: late joiners get the last value (schema.QOS_LATCHED).
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# episode/events: rare, never dropped (schema.QOS_EVENTS).
EVENTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                        reliability=ReliabilityPolicy.RELIABLE)


def declare(node: Node, defaults: dict[str, Any]) -> dict[str, Any]:
    """Declare every parameter with its default (the type comes from the default: write 1.0, not
    1, for a double) and return their current values (YAML / command-line overrides applied)."""
    for name, value in defaults.items():
        node.declare_parameter(name, value)
    return {name: node.get_parameter(name).value for name in defaults}


def now_ns(node: Node) -> int:
    return node.get_clock().now().nanoseconds


def trigger_reply(response: Any, ok: bool, message: str) -> Any:
    response.success = bool(ok)
    response.message = str(message)
    return response


def run(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """rclpy.init, build the node, spin until Ctrl-C, clean up. A node that cannot start (no
    SpaceMouse, bad checkpoint) logs why and exits 1."""
    rclpy.init(args=args)
    node: Node | None = None
    try:
        node = make_node()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"[apo_ros] {type(err).__name__}: {err}", flush=True)
        return 1
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
