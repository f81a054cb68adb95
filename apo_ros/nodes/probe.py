"""GraphProbe: an rclpy node that drives and watches a running graph (the graph tests and
`apo-ros bench runtime` use it). It lives in its own rclpy Context on the graph's domain, spins in a
background thread, keeps every message it receives with its receive time, publishes anything, and
calls std_srvs/Trigger services.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from apo_ros.nodes.common import EVENTS_QOS, LATCHED_QOS, RECORD_QOS, STREAM_QOS

# What the probe listens to: topic -> (type, QoS).
WATCHED: dict[str, tuple[Any, Any]] = {
    "ee_pose": (PoseStamped, RECORD_QOS),
    "policy/command": (JointState, RECORD_QOS),
    "action/executed": (JointState, RECORD_QOS),
    "arm/delta_twist_cmds": (TwistStamped, RECORD_QOS),
    "sim/applied": (TwistStamped, RECORD_QOS),
    "teleop/mode": (String, RECORD_QOS),
    "episode/events": (String, EVENTS_QOS),
    "instruction": (String, LATCHED_QOS),
    "policy/active": (String, LATCHED_QOS),
    "trainer/status": (String, RECORD_QOS),
}


@dataclass
class Received:
    rx_ns: int  # time.time_ns() when it arrived (the graph's ROS clock is the system clock)
    msg: Any


class GraphProbe:
    def __init__(self, domain_id: int, name: str = "graph_probe",
                 watched: dict[str, tuple[Any, Any]] | None = None):
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # read by rclpy.init
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self.received: dict[str, list[Received]] = {}
        self._publishers: dict[str, Any] = {}
        for topic, (msg_type, qos) in (watched or WATCHED).items():
            self.received[topic] = []
            self.node.create_subscription(msg_type, topic, self._keep(topic), qos)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _keep(self, topic: str) -> Callable[[Any], None]:
        def keep(msg: Any) -> None:
            with self._lock:
                self.received[topic].append(Received(time.time_ns(), msg))

        return keep

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if self.context.ok():
                    raise
                return

    # ---- reading -------------------------------------------------------------------------------
    def messages(self, topic: str, since_ns: int = 0) -> list[Received]:
        with self._lock:
            return [r for r in self.received[topic] if r.rx_ns >= since_ns]

    def wait_for(self, topic: str, predicate: Callable[[Any], bool] = lambda m: True,
                 timeout: float = 10.0, since_ns: int = 0) -> Received:
        """The first message on `topic` (received after since_ns) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.messages(topic, since_ns):
                if predicate(r.msg):
                    return r
            time.sleep(0.02)
        raise TimeoutError(f"no matching message on {topic} within {timeout} s "
                           f"({len(self.messages(topic, since_ns))} received)")

    # ---- acting --------------------------------------------------------------------------------
    def publish(self, topic: str, msg: Any, qos: Any = STREAM_QOS, match_timeout: float = 10.0) -> None:
        """Publish on `topic`. A new publisher first waits (up to match_timeout) until a subscriber
        has matched it: a message sent before discovery finishes is silently lost, and on a loaded
        machine discovery takes seconds."""
        if topic not in self._publishers:
            publisher = self.node.create_publisher(type(msg), topic, qos)
            deadline = time.monotonic() + match_timeout
            while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # the subscriber's side matches the writer a moment after ours
            self._publishers[topic] = publisher
        self._publishers[topic].publish(msg)

    def call(self, service: str, timeout: float = 10.0) -> tuple[bool, str]:
        """Call a std_srvs/Trigger service -> (success, message)."""
        client = self.node.create_client(Trigger, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {service} not available within {timeout} s")
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service {service} did not answer within {timeout} s")
                time.sleep(0.01)
            result = future.result()
            assert result is not None
            return bool(result.success), str(result.message)
        finally:
            self.node.destroy_client(client)

    def _service(self, srv_type: Any, name: str, request: Any, timeout: float) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available within {timeout} s")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service {name} did not answer within {timeout} s")
                time.sleep(0.01)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node: str, values: dict[str, Any],
                       timeout: float = 10.0) -> list[tuple[bool, str]]:
        """`ros2 param set`: (successful, reason) per parameter of `node` (its full name)."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        result = self._service(SetParameters, f"{node}/set_parameters", request, timeout)
        return [(bool(r.successful), str(r.reason)) for r in result.results]

    def describe_parameters(self, node: str, names: list[str], timeout: float = 10.0) -> list[Any]:
        """`ros2 param describe`: the ParameterDescriptor of each name."""
        from rcl_interfaces.srv import DescribeParameters

        result = self._service(DescribeParameters, f"{node}/describe_parameters",
                               DescribeParameters.Request(names=names), timeout)
        return list(result.descriptors)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=2.0)
