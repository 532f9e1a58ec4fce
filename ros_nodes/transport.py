"""The small ROS 2 transport interface every Keystone node is written against, and the backend chooser.

A node needs publishers, subscriptions, timers, parameters (declared with a description and a range), services,
actions and a logger. `Node` names them; two backends provide them:

- ``rclpy`` (`keystone_vla.ros_nodes.rclpy_backend`) when ROS 2 is sourced: a real ROS node.
- ``dds`` (`keystone_vla.ros_nodes.dds_backend`): Cyclone DDS from PyPI, wire-compatible with ROS 2
  (topic ``rt/<name>``, type ``pkg::msg::dds_::Type_``, XCDR1, ROS-default QoS).

`make_node` picks rclpy when importable, else dds; ``KEYSTONE_ROS_BACKEND=rclpy|dds`` overrides.
Messages are always the classes in `keystone_vla.ros_nodes.msgs`.

The DDS backend is confined to loopback unless the user sets ``CYCLONEDDS_URI`` (see `ensure_dds_config`);
this module must never make a participant join a real network by accident.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from keystone_vla.errors import ConfigError, unknown_choice

BACKENDS = ("rclpy", "dds")


@dataclass(frozen=True)
class QoS:
    """The QoS knobs ROS exposes that matter here (history is always keep-last)."""

    reliable: bool = True
    depth: int = 10
    transient_local: bool = False


#: rclpy's defaults: `QoSProfile(depth=10)` (reliable, volatile) and `qos_profile_sensor_data` (best effort, 5)
DEFAULT_QOS = QoS()
SENSOR_QOS = QoS(reliable=False, depth=5)
#: "latched" topics (late joiners get the last value): scene description, e-stop state
LATCHED_QOS = QoS(reliable=True, depth=1, transient_local=True)
#: a reader of a latched topic that several nodes publish on, each its own value (`/tf_static`: the camera frame
#: from perception, the tool frame from the policy). The topic has no key, so a depth-1 reader keeps only the last
#: writer's sample; tf2_ros listens to /tf_static with depth 100 for the same reason
STATIC_LISTENER_QOS = QoS(reliable=True, depth=100, transient_local=True)


class Publisher(Protocol):
    def publish(self, msg: Any) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Node(Protocol):
    """What Keystone's nodes use; both backends implement it."""

    name: str
    log: logging.Logger

    def create_publisher(self, msg_type: type, topic: str, qos: QoS = DEFAULT_QOS) -> Publisher: ...

    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos: QoS = DEFAULT_QOS) -> Any: ...

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> Timer: ...

    def declare_parameter(self, name: str, default: Any, description: str = "",
                          range: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None) -> Any:
        """Declare `name` (typed by `default`), with a description and an inclusive `range` (numbers) or
        `choices` (strings); a value of the wrong type or outside them raises ConfigError naming the node and
        the parameter."""
        ...

    def create_service(self, srv: Any, name: str, callback: Callable[[Any], Any]) -> Any: ...

    def create_client(self, srv: Any, name: str) -> Any: ...

    def create_action_server(self, action: Any, name: str, on_goal: Callable[[bytes, Any], bool],
                             on_cancel: Callable[[bytes], bool]) -> Any: ...

    def create_action_client(self, action: Any, name: str) -> Any: ...

    def spin_once(self, timeout_s: float = 0.1) -> None: ...

    def spin(self, until: Callable[[], bool] | None = None) -> None: ...

    def destroy(self) -> None: ...


def check_parameter(node: str, name: str, value: Any, default: Any, range: tuple[float, float] | None = None,
                    choices: tuple[str, ...] | None = None) -> Any:
    """The value a node gets for parameter `name`: `value` coerced to `default`'s type (an int for a float is
    fine), checked against `range` / `choices`; raises ConfigError naming the node and the parameter."""
    if default is not None and value is not None and not isinstance(value, type(default)):
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, list) and isinstance(value, tuple):
            value = list(value)
        else:
            raise ConfigError(f"parameter {name!r} of node {node} must be {type(default).__name__}, got {value!r}")
    if range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = range
        if not lo <= value <= hi:
            raise ConfigError(f"parameter {name!r} of node {node} must be in [{lo}, {hi}], got {value!r}")
    if choices is not None and value not in choices:
        raise unknown_choice(f"value of parameter {name!r} of node {node}", str(value), choices)
    return value


def choose_backend(requested: str | None = None) -> str:
    """`requested` or ``$KEYSTONE_ROS_BACKEND`` or rclpy-if-importable-else-dds."""
    choice = requested or os.environ.get("KEYSTONE_ROS_BACKEND") or ""
    if choice and choice not in BACKENDS:
        raise unknown_choice("ROS backend (KEYSTONE_ROS_BACKEND)", choice, BACKENDS)
    if choice == "dds":
        return "dds"
    try:
        import rclpy  # noqa: F401
    except ImportError:
        if choice == "rclpy":
            raise ConfigError("ROS backend 'rclpy' requested but rclpy is not importable; source your ROS 2 "
                              "setup.bash first, or use KEYSTONE_ROS_BACKEND=dds") from None
        return "dds"
    return "rclpy"


def make_node(name: str, parameters: Mapping[str, Any] | None = None, backend: str | None = None) -> Node:
    """Create a node on the chosen backend. `parameters` override declared defaults (on rclpy they come from
    the launch file / ``--ros-args`` and these are applied as overrides too)."""
    chosen = choose_backend(backend)
    if chosen == "rclpy":
        from keystone_vla.ros_nodes.rclpy_backend import RclpyNode

        return RclpyNode(name, parameters or {})
    from keystone_vla.ros_nodes.dds_backend import DdsNode

    return DdsNode(name, parameters or {})


LOOPBACK_XML = """<?xml version="1.0" encoding="UTF-8"?>
<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any">
  <General><Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces><AllowMulticast>false</AllowMulticast></General>
  <Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>40</MaxAutoParticipantIndex>
    <Peers><Peer address="127.0.0.1"/></Peers></Discovery>
</Domain></CycloneDDS>
"""


def loopback_config_path() -> str:
    """Write (once) the loopback-only Cyclone config and return its path."""
    folder = os.path.join(tempfile.gettempdir(), "keystone_vla_dds")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "loopback.xml")
    if not os.path.exists(path) or open(path, encoding="utf-8").read() != LOOPBACK_XML:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(LOOPBACK_XML)
        os.replace(tmp, path)
    return path


def loopback_env(domain_id: int | None = None) -> dict[str, str]:
    """Environment entries that put a (child) process's DDS on loopback, optionally on its own domain."""
    env = {"CYCLONEDDS_URI": f"file://{loopback_config_path()}"}
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def ensure_dds_config() -> str:
    """Called before the first DomainParticipant: keep a user's ``CYCLONEDDS_URI``; otherwise use loopback.

    Returns the URI in effect. Cyclone reads the variable when the first participant is created, so setting
    it later has no effect (the DDS backend calls this in its constructor)."""
    if not os.environ.get("CYCLONEDDS_URI"):
        os.environ.update(loopback_env())
    return os.environ["CYCLONEDDS_URI"]


def domain_id() -> int:
    """``$ROS_DOMAIN_ID`` (default 0), as ROS 2 uses it."""
    raw = os.environ.get("ROS_DOMAIN_ID", "0") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"ROS_DOMAIN_ID must be an integer 0..232, got {raw!r}") from None
    if not 0 <= value <= 232:
        raise ConfigError(f"ROS_DOMAIN_ID must be 0..232, got {value}")
    return value


def dds_topic_name(topic: str) -> str:
    """ROS topic name -> DDS topic name: ``/joint_states`` -> ``rt/joint_states``."""
    name = topic.strip()
    if not name or name == "/" or " " in name:
        raise ConfigError(f"invalid ROS topic name {topic!r}; use e.g. '/joint_states'")
    return "rt/" + name.lstrip("/")


def node_logger(name: str) -> logging.Logger:
    """A stderr logger ``keystone.ros.<name>`` with ROS-like line format."""
    log = logging.getLogger(f"keystone.ros.{name}")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"[%(levelname)s] [%(created).3f] [{name}]: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log
