"""Run one Keystone node as a process: `keystone ros node NAME` and the `ros2 run keystone_vla NAME` entry points.

Parameters come from a ROS-style YAML file (``<node>: {ros__parameters: {...}}``, or ``/**``) and/or
``key=value`` overrides (values parsed as YAML). Unknown parameter names are an error naming them.
SIGINT/SIGTERM stop the node cleanly. This module must not import a node's heavy dependencies until it runs.
"""

from __future__ import annotations

import importlib
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from keystone_vla.errors import ConfigError, unknown_choice
from keystone_vla.ros_nodes.transport import make_node

#: node name -> (module, class); the class takes a transport Node and sets itself up
NODES: dict[str, tuple[str, str]] = {
    "sim_bridge": ("keystone_vla.ros_nodes.sim_bridge", "SimBridgeNode"),
    "perception": ("keystone_vla.ros_nodes.perception_node", "PerceptionNode"),
    "policy": ("keystone_vla.ros_nodes.policy_node", "PolicyNode"),
    "safety": ("keystone_vla.ros_nodes.safety_node", "SafetyNode"),
    "speech": ("keystone_vla.ros_nodes.speech_node", "SpeechNode"),
}


def load_params_file(path: str, node_name: str) -> dict[str, Any]:
    """Parameters for `node_name` from a ROS 2 parameter YAML file (``/**`` entries apply to every node)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read parameter file {path}: {exc.strerror}") from None
    out: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key) or {}
        params = section.get("ros__parameters", {}) if isinstance(section, Mapping) else {}
        out.update(_flatten(params))
    return out


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, Mapping):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["watchdog_period=0.1", "arm=iiwa"]`` -> dict with YAML-typed values."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter override {item!r} must look like name=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_node(name: str, parameters: Mapping[str, Any] | None = None, backend: str | None = None) -> Any:
    """Create the transport node and the Keystone node object on it (for in-process use and tests)."""
    if name not in NODES:
        raise unknown_choice("node", name, NODES)
    module, cls = NODES[name]
    transport = make_node(name, parameters, backend)
    obj = getattr(importlib.import_module(module), cls)(transport)
    unknown = transport.unknown_overrides()
    if unknown:
        transport.destroy()
        raise ConfigError(f"unknown parameter(s) for node {name}: {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(transport.parameters))}")
    return obj


def run_node(name: str, parameters: Mapping[str, Any] | None = None, backend: str | None = None,
             duration: float | None = None) -> int:
    """Build and spin a node until SIGINT/SIGTERM (or `duration` seconds). Returns an exit code."""
    obj = build_node(name, parameters, backend)
    transport = obj.node
    deadline = None if duration is None else time.monotonic() + duration

    def stop(_signum: int, _frame: Any) -> None:
        transport.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    transport.log.info(f"node {name} up ({type(transport).__name__})")
    try:
        transport.spin(until=(lambda: time.monotonic() > deadline) if deadline else None)
    finally:
        close = getattr(obj, "close", None)
        if close:
            close()
        transport.destroy()
    return 0


def _entry(name: str) -> None:
    """Console entry point used by `ros2 run keystone_vla NAME` (parameters via --ros-args on rclpy)."""
    args = sys.argv[1:]
    args = args[: args.index("--ros-args")] if "--ros-args" in args else args  # rclpy reads the rest itself
    overrides = parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    sys.exit(run_node(name, overrides))


def sim_bridge_main() -> None:
    _entry("sim_bridge")


def perception_main() -> None:
    _entry("perception")


def policy_main() -> None:
    _entry("policy")


def safety_main() -> None:
    _entry("safety")


def speech_main() -> None:
    _entry("speech")
