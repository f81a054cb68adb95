"""What every apo_ros node shares: parameters declared up front with descriptors (defaults from the
package's config/<node>.yaml; ranges, choices, read-only; set at run time through a callback that
validates and applies, or refuses with a reason), ROS time in nanoseconds, QoS profiles matching
the bag schema (and sensor inputs that follow best-effort drivers), callbacks that survive
malformed messages with warnings throttled per kind, /diagnostics, a periodic "waiting for" line
while inputs are missing, and the spin/shutdown boilerplate."""

from __future__ import annotations

import dataclasses
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
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

# Sensor inputs from a best-effort driver (the sensor-data profile most camera drivers use): a
# best-effort subscription receives from reliable and best-effort publishers alike.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=ReliabilityPolicy.BEST_EFFORT)
SENSOR_QOS_CHOICES = ("auto", "reliable", "best_effort")

# What a malformed message raises while it is decoded (wrong sizes, encodings, names, stamps).
MALFORMED = (ValueError, TypeError, IndexError, KeyError, ArithmeticError, struct.error)
LOG_EVERY_S = 5.0  # one kind of incident on one topic is reported at most this often
DIAGNOSTICS_PERIOD_S = 1.0  # /diagnostics, as diagnostic_updater publishes by default
WAITING_LOG_S = 5.0  # "waiting for: ..." while an input is missing, at most this often
INPUT_STALE_S = 5.0  # an input silent for this long (after it was heard) is missing again


class StartupError(Exception):
    """Bad start-up configuration: the node logs it (one line, no traceback) and exits 1."""


@dataclass(frozen=True)
class Param:
    """A parameter's default and descriptor, as the ROS demos declare them: what it means, its
    range (inclusive) or choices. Whether it can change at run time is the node's: a parameter
    with no applier (`ApoNode.declare(..., appliers=)`) is read-only."""

    default: Any
    description: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()


def incident_kind(err: BaseException) -> str:
    """What kind of problem an exception reports, for per-kind throttling and counts: its own
    `kind` (ImageProblem) or its type and message with the numbers taken out (so "data has 100
    bytes" and "data has 7 bytes" are one kind, "2 axes" and "unsupported encoding" two)."""
    kind = getattr(err, "kind", None)
    if isinstance(kind, str) and kind:
        return kind
    return f"{type(err).__name__}: {re.sub(r'[0-9.e+-]+', '#', str(err))[:60]}"


def short(text: str, limit: int = 120) -> str:
    """A log-safe version of untrusted text: one line, at most `limit` characters."""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def packaged_defaults(config_name: str) -> dict[str, Any]:
    """The parameters in the package's config/<config_name>.yaml ({} when there is none), so
    `ros2 run apo_ros X` without a parameter file runs with config/X.yaml."""
    try:
        return node_parameters(find_config(f"{config_name}.yaml"), config_name)
    except (FileNotFoundError, ValueError):
        return {}


def packaged_descriptions(config_name: str) -> dict[str, str]:
    """Each parameter's description: the comment above it in the package's config/<name>.yaml
    (keys right below one comment share it), so the file a user edits and `ros2 param describe`
    say the same thing."""
    try:
        lines = open(find_config(f"{config_name}.yaml")).read().splitlines()
    except OSError:
        return {}
    out: dict[str, str] = {}
    comment: list[str] = []
    shared = ""
    for line in lines:
        text = line.strip()
        if text.startswith("#"):
            comment.append(text.lstrip("#").strip())
        elif (match := re.match(r"^\s{4,}([A-Za-z_][\w.]*):", line)):
            shared = " ".join(comment) if comment else shared
            out[match.group(1)] = shared
            comment = []
        else:
            comment, shared = [], ""
    return out


class ApoNode(Node):
    """A Node whose subscriptions drop (count, log throttled per kind) malformed messages instead
    of dying, with its parameters' defaults read from config/<config_name>.yaml, a status on
    /diagnostics, and a "waiting for" line while an expected input is missing."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.config_name = name  # config/<name>.yaml, whatever the node is renamed to at launch
        self.dropped: dict[str, int] = {}
        self._last_report: dict[str, float] = {}
        self._specs: dict[str, Param] = {}
        self._appliers: dict[str, Callable[[Any], None]] = {}
        self.received: dict[str, int] = {}  # messages per subscribed topic
        self._last_heard: dict[str, float] = {}  # topic -> time.monotonic() of the last message
        self._expected: list[str] = []  # inputs the node cannot work without
        self._sensor_subs: dict[str, tuple[Any, Callable[[Any], None], bool, Any, QoSProfile]] = {}
        self._sensor_mode = "reliable"
        self._diag_pub: Any = None
        self._diag_last: tuple[float, dict[str, int], int] = (time.monotonic(), {}, 0)
        self._waiting_logged = 0.0
        # timers that must run whatever the ROS clock does (use_sim_time with no /clock yet)
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)

    # ---- parameters --------------------------------------------------------------------------
    def declare(self, defaults: dict[str, Any],
                appliers: dict[str, Callable[[Any], None]] | None = None) -> dict[str, Any]:
        """Declare every parameter (default: config/<node>.yaml's value, else `defaults`'s, a
        value or a Param; the type comes from it: write 1.0, not 1, for a double) with its
        descriptor, and return the current values (parameter file / command-line overrides
        applied). `appliers[name](value)` applies a new value at run time (raise ValueError to
        refuse it, with the reason); a parameter without one is read-only. A value out of range
        or not among the choices stops the node (StartupError)."""
        packaged = packaged_defaults(self.config_name)
        described = packaged_descriptions(self.config_name)
        appliers = appliers or {}
        for name, spec in defaults.items():
            spec = spec if isinstance(spec, Param) else Param(spec)
            if not spec.description and name in described:
                spec = dataclasses.replace(spec, description=described[name])
            self._specs[name] = spec
            if name in appliers:
                self._appliers[name] = appliers[name]
            try:
                self.declare_parameter(name, packaged.get(name, spec.default),
                                       self._descriptor(name, spec, read_only=name not in appliers))
            except (InvalidParameterValueException, InvalidParameterTypeException) as err:
                raise StartupError(f"parameter {name}: {short(str(err), 300)}") from None
            value = self.get_parameter(name).value
            if spec.choices and value not in spec.choices:
                raise StartupError(f"parameter {name} must be one of {list(spec.choices)}, got {value!r}")
        if not getattr(self, "_set_callback_added", False):
            self._set_callback_added = True
            self.add_on_set_parameters_callback(self._on_set_parameters)
        return {name: self.get_parameter(name).value for name in defaults}

    @staticmethod
    def _descriptor(name: str, spec: Param, read_only: bool) -> ParameterDescriptor:
        text = spec.description
        if spec.choices:
            text += f" One of {', '.join(map(str, spec.choices))}."
        if read_only:
            text += " Read-only: set at start."
        d = ParameterDescriptor(name=name, description=text.strip(), read_only=read_only)
        if spec.low is not None or spec.high is not None:
            low = spec.low if spec.low is not None else -1e300
            high = spec.high if spec.high is not None else 1e300
            if isinstance(spec.default, bool) or not isinstance(spec.default, (int, float)):
                raise TypeError(f"parameter {name}: a range needs a number")
            if isinstance(spec.default, int):
                d.integer_range = [IntegerRange(from_value=int(max(low, -2**63)),
                                                to_value=int(min(high, 2**63 - 1)), step=1)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                             to_value=float(high), step=0.0)]
        if spec.choices:
            d.additional_constraints = f"one of {list(spec.choices)}"
        return d

    def setter(self, attribute: str, convert: Callable[[Any], Any] = lambda v: v) -> Callable[[Any], None]:
        """An applier that stores the new value in self.<attribute>."""
        return lambda value: setattr(self, attribute, convert(value))

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Run-time changes (rclpy has already refused read-only, mistyped and out-of-range ones):
        check the choices, then apply each, or refuse with the applier's reason."""
        for param in params:
            spec = self._specs.get(param.name)
            if spec is not None and spec.choices and param.value not in spec.choices:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} must be one of {list(spec.choices)}, got {param.value!r}"))
        for param in params:
            apply = self._appliers.get(param.name)
            if apply is None:
                continue  # rclpy's own (use_sim_time, QoS overrides)
            try:
                apply(param.value)
            except (ValueError, TypeError) as err:
                return SetParametersResult(successful=False, reason=f"{param.name}: {err}")
            self.get_logger().info(f"parameter {param.name} set to {short(repr(param.value))}")
        return SetParametersResult(successful=True)

    # ---- time --------------------------------------------------------------------------------
    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ---- incidents ---------------------------------------------------------------------------
    def count(self, what: str, text: str, kind: str = "", once: bool = False) -> int:
        """Count an incident (per `what` and `kind`) and log "what: text": the first at once,
        then at most every LOG_EVERY_S with the running count (a topic that keeps misbehaving
        does not flood the log, nor hide another kind of incident); once=True: the first only."""
        key = f"{what}|{kind or text}"
        n = self.dropped[key] = self.dropped.get(key, 0) + 1
        now = time.monotonic()
        if n == 1 or (not once and now - self._last_report.get(key, 0.0) >= LOG_EVERY_S):
            self._last_report[key] = now
            self.get_logger().warning(f"{what}: {short(text, 300)} ({n} so far)")
        return n

    def drop(self, topic: str, err: BaseException) -> None:
        """A malformed message on `topic` was dropped (throttled per kind of problem)."""
        self.count(topic, f"dropped a malformed message: {type(err).__name__}: {err}",
                   incident_kind(err))

    def guarded(self, topic: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """`callback` that drops (see `drop`) what a malformed message makes it raise."""

        def call(msg: Any) -> None:
            self.received[topic] = self.received.get(topic, 0) + 1
            self._last_heard[topic] = time.monotonic()
            try:
                callback(msg)
            except MALFORMED as err:
                self.drop(topic, err)

        return call

    # ---- subscriptions -----------------------------------------------------------------------
    def subscribe(self, msg_type: Any, topic: str, callback: Callable[[Any], None],
                  qos: QoSProfile, raw: bool = False, sensor: bool = False) -> Any:
        """A guarded subscription. sensor=True: a sensor input (camera, joint states, poses) whose
        QoS follows the `sensor_qos` parameter (see `sensor_inputs`)."""
        self.received.setdefault(topic, 0)
        if sensor:  # `qos` while reliable (the recorder keeps a deep queue, a policy a short one)
            self._sensor_subs[topic] = (msg_type, callback, raw, None, qos)
            return self._sensor_subscribe(topic, self._sensor_mode == "best_effort")
        return self.create_subscription(msg_type, topic, self.guarded(topic, callback), qos, raw=raw)

    def sensor_inputs(self, mode: str) -> None:
        """How sensor subscriptions (subscribe(sensor=True), made after this) take their QoS:
        "reliable" (every message, only from reliable publishers), "best_effort" (any publisher,
        may lose messages), "auto" (reliable until a best-effort publisher appears on the topic,
        then best-effort: what `ros2 bag record` does)."""
        if mode not in SENSOR_QOS_CHOICES:
            raise StartupError(f"sensor_qos must be one of {list(SENSOR_QOS_CHOICES)}, got {mode!r}")
        self._sensor_mode = mode
        if mode == "auto":
            self.create_timer(1.0, self._adapt_sensor_qos, clock=self.steady)

    def _sensor_subscribe(self, topic: str, best_effort: bool) -> Any:
        msg_type, callback, raw, old, qos = self._sensor_subs[topic]
        if old is not None:
            self.destroy_subscription(old)
        sub = self.create_subscription(msg_type, topic, self.guarded(topic, callback),
                                       SENSOR_QOS if best_effort else qos, raw=raw)
        self._sensor_subs[topic] = (msg_type, callback, raw, sub, qos)
        return sub

    def _adapt_sensor_qos(self) -> None:
        for topic, (_t, _c, _r, sub, _q) in list(self._sensor_subs.items()):
            if sub is None or sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT:
                continue
            offered = self.get_publishers_info_by_topic(sub.topic_name)
            if any(info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for info in offered):
                self._sensor_subscribe(topic, best_effort=True)
                self.get_logger().info(f"{topic}: a best-effort publisher (sensor-data QoS): "
                                       "subscribed best-effort")

    # ---- inputs, diagnostics -----------------------------------------------------------------
    def expect(self, topics: list[str]) -> None:
        """Inputs the node cannot work without: while one has not been heard (or has been silent
        for INPUT_STALE_S), the node logs "waiting for: ..." every WAITING_LOG_S and reports it
        on /diagnostics."""
        self._expected = list(topics)
        self._waiting_logged = time.monotonic()  # first line after WAITING_LOG_S: discovery takes time
        self.create_timer(1.0, self._log_waiting, clock=self.steady)

    def waiting_for(self) -> list[str]:
        now = time.monotonic()
        return [t for t in self._expected if now - self._last_heard.get(t, -1e9) > INPUT_STALE_S]

    def _describe_missing(self, topic: str) -> str:
        try:
            name = self.resolve_topic_name(topic)
            publishers = self.get_publishers_info_by_topic(name)
        except (RuntimeError, ValueError):
            return topic
        if not publishers:
            return f"{topic} (no publisher)"
        if topic in self._last_heard:
            return f"{topic} (silent for {time.monotonic() - self._last_heard[topic]:.0f} s)"
        return f"{topic} ({len(publishers)} publisher(s), nothing received: QoS?)"

    def _log_waiting(self) -> None:
        missing = self.waiting_for()
        now = time.monotonic()
        if missing and now - self._waiting_logged >= WAITING_LOG_S:
            self._waiting_logged = now
            self.get_logger().warning("waiting for: " + ", ".join(self._describe_missing(t)
                                                                 for t in missing))

    def start_diagnostics(self, period_s: float = DIAGNOSTICS_PERIOD_S) -> None:
        """Publish this node's status on /diagnostics every period_s (steady clock): input rates,
        drop counts by kind, missing inputs, and the node's own `diagnostic_values`."""
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(period_s, self.publish_diagnostics, clock=self.steady)

    def diagnostic_values(self) -> dict[str, Any]:
        """The node's own figures for /diagnostics (override)."""
        return {}

    def diagnostic_status(self) -> tuple[int, str]:
        """(level, message) beyond missing inputs and drops (override; level 0 OK, 1 WARN, 2 ERROR)."""
        return 0, "ok"

    def publish_diagnostics(self) -> None:
        now = time.monotonic()
        t0, received0, dropped0 = self._diag_last
        dt = max(now - t0, 1e-6)
        dropped = sum(self.dropped.values())
        self._diag_last = (now, dict(self.received), dropped)
        values = {f"rate {t} (Hz)": f"{(n - received0.get(t, 0)) / dt:.2f}"
                  for t, n in sorted(self.received.items())}
        values.update({f"dropped {key.replace('|', ' / ')}": str(n)
                       for key, n in sorted(self.dropped.items())})
        values.update({k: str(v) for k, v in self.diagnostic_values().items()})
        level, message = self.diagnostic_status()
        missing = self.waiting_for()
        if missing and level < 1:
            level, message = 1, "waiting for: " + ", ".join(missing)
        elif dropped > dropped0 and level < 1:
            level, message = 1, f"{dropped - dropped0} incidents in the last {dt:.0f} s"
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.get_fully_qualified_name()}",
                                  message=message, hardware_id="apo_ros",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        safe_publish(self._diag_pub, array)

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


def _interrupted(err: BaseException) -> bool:
    """Did Ctrl-C / SIGTERM cause this error (somewhere down its chain of causes)?"""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (KeyboardInterrupt, ExternalShutdownException)):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def run(make_node: Callable[[], ApoNode], name: str, args: list[str] | None = None) -> int:
    """rclpy.init, build the node, spin until Ctrl-C / SIGTERM (exit 0), clean up. A node that
    cannot start (bad configuration, no SpaceMouse, bad checkpoint) logs why and exits 1."""
    rclpy.init(args=args)
    node: ApoNode | None = None
    try:
        try:
            node = make_node()
        except Exception as err:
            if not rclpy.ok() or _interrupted(err):
                # Ctrl-C / SIGTERM while starting: rclpy shut the context down, and whatever was
                # running failed for it (an RCLError, or "ImportError: initialization failed"
                # when it landed in an extension module's import). A normal end, not a crash.
                return 0
            if isinstance(err, (StartupError, RuntimeError, ValueError, OSError)):
                get_logger(name).fatal(f"cannot start: {err}")
                return 1
            raise
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C / SIGTERM: a normal end
    except Exception:
        # A callback running when Ctrl-C / SIGTERM shut the context down fails on its next
        # publish (rclpy raises RCLError / InvalidHandle): that is the same normal end.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
