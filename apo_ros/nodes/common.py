"""What every apo_ros node shares: parameters declared up front (defaults from the package's
config/<node>.yaml), ROS time in nanoseconds, QoS profiles matching the bag schema, callbacks that
survive malformed messages, and the spin/shutdown boilerplate."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from apo_ros.runtime.config import find_config, node_parameters

# Streams (images, joints, actions): reliable, keep last 10 (schema.QOS_DEFAULT).
STREAM_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=ReliabilityPolicy.RELIABLE)
# Publishers, the recorder's and the probe's subscriptions: the same, with 10 s of history at
# 10 Hz, so a reader stalled by a busy machine catches up instead of losing messages.
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                        reliability=ReliabilityPolicy.RELIABLE)
# instruction, policy/checkpoint, policy/active: late joiners get the last value (schema.QOS_LATCHED).
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# episode/events: rare, never dropped (schema.QOS_EVENTS).
EVENTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                        reliability=ReliabilityPolicy.RELIABLE)

# What a malformed message raises while it is decoded (wrong sizes, encodings, names, stamps).
MALFORMED = (ValueError, TypeError, IndexError, KeyError, ArithmeticError, struct.error)
LOG_EVERY_S = 5.0  # a topic that keeps sending bad messages is reported at most this often


class StartupError(Exception):
    """Bad start-up configuration: the node logs it (one line, no traceback) and exits 1."""


def packaged_defaults(config_name: str) -> dict[str, Any]:
    """The parameters in the package's config/<config_name>.yaml ({} when there is none), so
    `ros2 run apo_ros X` without a parameter file runs with config/X.yaml."""
    try:
        return node_parameters(find_config(f"{config_name}.yaml"), config_name)
    except (FileNotFoundError, ValueError):
        return {}


class ApoNode(Node):
    """A Node whose subscriptions drop (count, log throttled) malformed messages instead of
    dying, with its parameters' defaults read from config/<config_name>.yaml."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.config_name = name  # config/<name>.yaml, whatever the node is renamed to at launch
        self.dropped: dict[str, int] = {}
        self._last_report: dict[str, float] = {}

    def declare(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """Declare every parameter (default: config/<node>.yaml's value, else `defaults`; the type
        comes from it: write 1.0, not 1, for a double) and return the current values (parameter
        file / command-line overrides applied)."""
        packaged = packaged_defaults(self.config_name)
        for name, value in defaults.items():
            self.declare_parameter(name, packaged.get(name, value))
        return {name: self.get_parameter(name).value for name in defaults}

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def count(self, what: str, text: str, kind: str = "") -> int:
        """Count an incident (per `what` and `kind`) and log "what: text": the first at once,
        then at most every LOG_EVERY_S with the running count (a topic that keeps misbehaving
        does not flood the log, nor hide another kind of incident)."""
        key = f"{what}|{kind or text}"
        n = self.dropped[key] = self.dropped.get(key, 0) + 1
        now = time.monotonic()
        if n == 1 or now - self._last_report.get(key, 0.0) >= LOG_EVERY_S:
            self._last_report[key] = now
            self.get_logger().warning(f"{what}: {text} ({n} so far)")
        return n

    def drop(self, topic: str, err: BaseException) -> None:
        """A malformed message on `topic` was dropped."""
        self.count(topic, f"dropped a malformed message: {type(err).__name__}: {err}", "malformed")

    def guarded(self, topic: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """`callback` that drops (see `drop`) what a malformed message makes it raise."""

        def call(msg: Any) -> None:
            try:
                callback(msg)
            except MALFORMED as err:
                self.drop(topic, err)

        return call

    def subscribe(self, msg_type: Any, topic: str, callback: Callable[[Any], None],
                  qos: QoSProfile, raw: bool = False) -> None:
        self.create_subscription(msg_type, topic, self.guarded(topic, callback), qos, raw=raw)

    def close(self) -> None:
        """Release what the node holds (bags, devices, threads) before it is destroyed."""


def trigger_reply(response: Any, ok: bool, message: str) -> Any:
    response.success = bool(ok)
    response.message = str(message)
    return response


def safe_publish(publisher: Any, msg: Any) -> bool:
    """Publish from a worker thread: after Ctrl-C the context is gone and publishing raises; a
    message that cannot go out any more is not an error."""
    try:
        publisher.publish(msg)
        return True
    except RuntimeError:  # rclpy's RCLError / InvalidHandle: the context was shut down
        if rclpy.ok():
            raise
        return False


def run(make_node: Callable[[], ApoNode], name: str, args: list[str] | None = None) -> int:
    """rclpy.init, build the node, spin until Ctrl-C / SIGTERM (exit 0), clean up. A node that
    cannot start (bad configuration, no SpaceMouse, bad checkpoint) logs why and exits 1."""
    rclpy.init(args=args)
    node: ApoNode | None = None
    try:
        try:
            node = make_node()
        except (StartupError, RuntimeError, ValueError, OSError) as err:
            get_logger(name).fatal(f"cannot start: {err}")
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C / SIGTERM: a normal end
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
