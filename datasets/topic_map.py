"""The topic map: a small YAML file saying which rosbag2 topics become which episode fields.

Example (every key is listed; unknown keys are an error that names the key)::

    rate_hz: 10              # control rate of the episodes (one frame per tick)
    max_age_s: 0.1           # default freshness limit: a stream's latest message must be at most this old
    stamp: header            # header (message header stamp; log time for messages without one) | log
    min_segment_s: 1.0       # runs of fresh ticks shorter than this are dropped (counted), not stored
    task: servo_contact      # episode attrs
    robot: ats_3dof
    split: seen
    cameras:                 # sensor_msgs/Image (rgb8, bgr8, mono8) or sensor_msgs/CompressedImage (jpeg, png)
      front: {topic: /camera/front/image_raw, max_age_s: 0.05, resize: [128, 128]}
    state:                   # sensor_msgs/JointState (or std_msgs/Float64MultiArray)
      topic: /servo/out/state
      field: position        # position | velocity | effort
      joints: [q1, q2, q3]   # select joints by name ...
      joint_indices: [0, 1, 2]   # ... or by index, for publishers that leave `name` empty
    action:                  # JointState, trajectory_msgs/JointTrajectory (first point), Twist(Stamped),
      topic: /servo/in/references/joint_references   # or Float64MultiArray: becomes the `action` array
      field: position
      joint_indices: [0, 1, 2]
      space: joint_position  # stored as the episode's action_space (default chosen from the message type)
    instruction: {topic: /instruction}   # std_msgs/String; or {text: "..."}; `--instruction` overrides

This module must never read a bag: it only parses and validates the map (so errors come before any work).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keystone_vla.errors import ConfigError

TOP_KEYS = {"rate_hz", "max_age_s", "stamp", "min_segment_s", "task", "robot", "split", "cameras", "state",
            "action", "instruction"}
STREAM_KEYS = {"topic", "field", "joints", "joint_indices", "max_age_s", "space"}
CAMERA_KEYS = {"topic", "max_age_s", "resize"}
INSTRUCTION_KEYS = {"topic", "text"}
FIELDS = ("position", "velocity", "effort")


@dataclass(frozen=True)
class StreamMap:
    """A vector stream (state or action): where to read it and which entries to keep."""

    topic: str
    field: str = "position"
    joints: tuple[str, ...] | None = None
    joint_indices: tuple[int, ...] | None = None
    max_age_s: float = 0.1
    space: str | None = None


@dataclass(frozen=True)
class CameraMap:
    topic: str
    max_age_s: float = 0.1
    resize: tuple[int, int] | None = None  # (height, width)


@dataclass(frozen=True)
class TopicMap:
    state: StreamMap
    action: StreamMap
    cameras: dict[str, CameraMap] = field(default_factory=dict)
    rate_hz: float = 10.0
    stamp: str = "header"
    min_segment_s: float = 1.0
    task: str = "real"
    robot: str = "unknown"
    split: str = "seen"
    instruction_topic: str | None = None
    instruction_text: str | None = None

    def topics(self) -> dict[str, str]:
        """field name -> topic, e.g. {"state": "/joint_states", "images/front": "/cam/image_raw"}."""
        out = {"state": self.state.topic, "action": self.action.topic}
        out.update({f"images/{c}": m.topic for c, m in self.cameras.items()})
        if self.instruction_topic:
            out["instruction"] = self.instruction_topic
        return out


def _check_keys(where: str, d: Any, valid: set[str]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(sorted(valid))}")
    return d


def _positive(where: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if v <= 0:
        raise ConfigError(f"{where} must be > 0, got {v}")
    return v


def _stream(where: str, d: Any, default_age: float) -> StreamMap:
    d = _check_keys(where, d, STREAM_KEYS)
    if "topic" not in d:
        raise ConfigError(f"{where} needs a 'topic'")
    fld = d.get("field", "position")
    if fld not in FIELDS:
        raise ConfigError(f"{where}.field {fld!r} is not one of {', '.join(FIELDS)}")
    if "joints" in d and "joint_indices" in d:
        raise ConfigError(f"{where}: give either 'joints' (names) or 'joint_indices', not both")
    joints = tuple(str(j) for j in d["joints"]) if "joints" in d else None
    indices = None
    if "joint_indices" in d:
        try:
            indices = tuple(int(i) for i in d["joint_indices"])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.joint_indices must be a list of integers") from None
    return StreamMap(str(d["topic"]), fld, joints, indices,
                     _positive(f"{where}.max_age_s", d.get("max_age_s", default_age)), d.get("space"))


def parse_topic_map(data: Any, source: str = "topic map") -> TopicMap:
    """Validate a loaded YAML mapping and build a `TopicMap` (ConfigError names the offending key)."""
    d = _check_keys(source, data, TOP_KEYS)
    for key in ("state", "action"):
        if key not in d:
            raise ConfigError(f"{source} needs a '{key}' section (the topic that becomes the episode's {key})")
    age = _positive(f"{source}: max_age_s", d.get("max_age_s", 0.1))
    cameras = {}
    for cam, spec in _check_keys(f"{source}: cameras", d.get("cameras") or {}, set(d.get("cameras") or {})).items():
        spec = _check_keys(f"{source}: cameras.{cam}", spec, CAMERA_KEYS)
        if "topic" not in spec:
            raise ConfigError(f"{source}: cameras.{cam} needs a 'topic'")
        resize = spec.get("resize")
        if resize is not None:
            if not (isinstance(resize, (list, tuple)) and len(resize) == 2 and all(int(v) > 0 for v in resize)):
                raise ConfigError(f"{source}: cameras.{cam}.resize must be [height, width], got {resize!r}")
            resize = (int(resize[0]), int(resize[1]))
        cameras[str(cam)] = CameraMap(str(spec["topic"]), _positive(f"cameras.{cam}.max_age_s",
                                                                     spec.get("max_age_s", age)), resize)
    stamp = d.get("stamp", "header")
    if stamp not in ("header", "log"):
        raise ConfigError(f"{source}: stamp must be 'header' or 'log', got {stamp!r}")
    instr = _check_keys(f"{source}: instruction", d.get("instruction") or {}, INSTRUCTION_KEYS)
    return TopicMap(
        state=_stream(f"{source}: state", d["state"], age), action=_stream(f"{source}: action", d["action"], age),
        cameras=cameras, rate_hz=_positive(f"{source}: rate_hz", d.get("rate_hz", 10.0)), stamp=stamp,
        min_segment_s=float(d.get("min_segment_s", 1.0)), task=str(d.get("task", "real")),
        robot=str(d.get("robot", "unknown")), split=str(d.get("split", "seen")),
        instruction_topic=instr.get("topic"), instruction_text=instr.get("text"),
    )


def load_topic_map(path: str | Path) -> TopicMap:
    """Read and validate a topic-map YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"topic map {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"topic map {p} is not valid YAML: {exc}") from exc
    return parse_topic_map(data, source=p.name)
