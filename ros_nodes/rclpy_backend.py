"""rclpy backend of the transport interface: Keystone nodes as real ROS 2 nodes where ROS 2 is sourced.

Nodes keep using `keystone_vla.ros_nodes.msgs` classes; this module converts them field by field to and from
the generated rclpy message classes (same field names and order by construction). Parameters are declared on
the rclpy node, so launch files and ``--ros-args -p`` set them; overrides passed to `make_node` win.

Only imported when rclpy is importable; this module must never be imported by code that runs without ROS.
"""

from __future__ import annotations

import array
import dataclasses
import importlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import rclpy
from rclpy.node import Node as _RosNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from keystone_vla.ros_nodes.msgs import to_ros_type_name
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, QoS


def ros_qos(qos: QoS) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=qos.depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if qos.transient_local else DurabilityPolicy.VOLATILE,
    )


def ros_class(msg_type: type) -> type:
    pkg, _, name = to_ros_type_name(msg_type).split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def to_ros(msg: Any) -> Any:
    """Keystone message -> rclpy message (recursive)."""
    out = ros_class(type(msg))()
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_ros(value)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [to_ros(v) for v in value]
        elif isinstance(value, (bytes, bytearray)):
            value = array.array("B", value)  # uint8[]: rclpy's setter would check 49k ints one by one
        setattr(out, f.name, value)
    return out


def from_ros(ros_msg: Any, msg_type: type) -> Any:
    """rclpy message -> Keystone message of `msg_type` (recursive; arrays become lists, uint8[] bytes)."""
    hints = {f.name: f for f in dataclasses.fields(msg_type)}
    kwargs = {}
    defaults = msg_type()
    for name in hints:
        value = getattr(ros_msg, name)
        template = getattr(defaults, name)
        if dataclasses.is_dataclass(template):
            value = from_ros(value, type(template))
        elif isinstance(template, (bytes, bytearray)):
            value = bytes(value)
        elif isinstance(template, list):
            items = list(value)
            nested = _element_type(msg_type, name)
            value = [from_ros(v, nested) for v in items] if nested else [
                v if isinstance(v, str) else float(v) for v in items]
        kwargs[name] = value
    return msg_type(**kwargs)


def _element_type(msg_type: type, field_name: str) -> type | None:
    from keystone_vla.ros_nodes import msgs

    if msg_type is msgs.JointTrajectory and field_name == "points":
        return msgs.JointTrajectoryPoint
    return None


class _Pub:
    def __init__(self, pub: Any) -> None:
        self._pub = pub

    def publish(self, msg: Any) -> None:
        self._pub.publish(to_ros(msg))

    def matched_subscriptions(self) -> int:
        return int(self._pub.get_subscription_count())


class RclpyNode:
    """A Keystone node backed by an rclpy Node."""

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        if not rclpy.ok():
            rclpy.init()
        self.name = name
        self._node = _RosNode(name)
        self._overrides = dict(parameters or {})
        self.parameters: dict[str, Any] = {}
        self.log = logging.getLogger(f"keystone.ros.{name}")
        self.log.addHandler(_RosLogHandler(self._node.get_logger()))
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self._stopped = False

    def create_publisher(self, msg_type: type, topic: str, qos: QoS = DEFAULT_QOS) -> _Pub:
        return _Pub(self._node.create_publisher(ros_class(msg_type), topic, ros_qos(qos)))

    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos: QoS = DEFAULT_QOS) -> Any:
        return self._node.create_subscription(ros_class(msg_type), topic,
                                              lambda m: callback(from_ros(m, msg_type)), ros_qos(qos))

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> Any:
        return self._node.create_timer(period_s, callback)

    def declare_parameter(self, name: str, default: Any) -> Any:
        value = self._node.declare_parameter(name, default).value
        value = self._overrides.get(name, value)
        self.parameters[name] = value
        return value

    def unknown_overrides(self) -> list[str]:
        return sorted(set(self._overrides) - set(self.parameters))

    def spin_once(self, timeout_s: float = 0.1) -> None:
        rclpy.spin_once(self._node, timeout_sec=timeout_s)

    def spin(self, until: Callable[[], bool] | None = None) -> None:
        while rclpy.ok() and not self._stopped and not (until and until()):
            rclpy.spin_once(self._node, timeout_sec=0.1)

    def shutdown(self) -> None:
        self._stopped = True

    def destroy(self) -> None:
        self._stopped = True
        self._node.destroy_node()

    def now(self) -> float:
        return time.time()


class _RosLogHandler(logging.Handler):
    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self._ros.error(text)
        elif record.levelno >= logging.WARNING:
            self._ros.warning(text)
        else:
            self._ros.info(text)
