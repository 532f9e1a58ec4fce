"""The scene-graph record: one object as perception sees it (or as the simulator knows it, in the same shape).

`DetectedObject` is what `scene_graph.build_scene_graph` returns and what grounding consumes:
`{id, colour, shape, position, yaw, size, confidence}` with `position` float64 [3] metres in the robot base frame,
`yaw` radians about +z, `size` float64 [3] full extents (m). `shape` is the object kind ('block', 'bowl', 'slot', ...);
`detail` refines it where a kind has sub-types (a slot's part shape).

This module holds data only: it must never import the simulator, open3d or opencv.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError


@dataclass
class DetectedObject:
    id: str
    colour: str | None
    shape: str
    position: np.ndarray
    yaw: float = 0.0
    size: np.ndarray | None = None
    confidence: float = 1.0
    detail: str | None = None

    def __post_init__(self) -> None:
        self.position = np.asarray(self.position, dtype=np.float64).reshape(-1)
        if self.position.shape != (3,):
            raise ConfigError(f"object {self.id!r}: position must have 3 values (x, y, z metres), got {self.position}")
        self.size = np.zeros(3) if self.size is None else np.asarray(self.size, dtype=np.float64).reshape(3)
        self.yaw = float(self.yaw)
        self.confidence = float(self.confidence)

    @property
    def label(self) -> str:
        """Words a person would use: 'red block', 'bar slot', 'peg'."""
        noun = f"{self.detail} {self.shape}" if self.detail and self.shape == "slot" else self.shape
        return f"{self.colour} {noun}" if self.colour else noun

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "colour": self.colour,
            "shape": self.shape,
            "position": [round(float(v), 5) for v in self.position],
            "yaw": round(self.yaw, 5),
            "size": [round(float(v), 5) for v in self.size],
            "confidence": round(self.confidence, 4),
        }
        if self.detail:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DetectedObject:
        missing = [k for k in ("id", "shape", "position") if k not in d]
        if missing:
            raise ConfigError(f"scene object {dict(d)!r} lacks {', '.join(missing)}; expected keys "
                              "id, colour, shape, position, yaw, size, confidence")
        return cls(d["id"], d.get("colour"), d["shape"], d["position"], d.get("yaw", 0.0), d.get("size"),
                   d.get("confidence", 1.0), d.get("detail"))


def from_ground_truth(obj: Any) -> DetectedObject:
    """Adapt a simulator `SceneObject` (duck-typed: name, kind, colour, size, pose(), extra) to a DetectedObject."""
    pos, quat = obj.pose()
    x, y, z, w = (float(v) for v in quat)
    yaw = float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
    extra = getattr(obj, "extra", None) or {}
    return DetectedObject(obj.name, obj.colour, obj.kind, pos, yaw, obj.size, 1.0, extra.get("shape"))


def as_scene(objects: Iterable[Any]) -> list[DetectedObject]:
    """Accept DetectedObjects, dicts in the scene-graph shape, or simulator SceneObjects; return DetectedObjects."""
    out: list[DetectedObject] = []
    for obj in objects:
        if isinstance(obj, DetectedObject):
            out.append(obj)
        elif isinstance(obj, Mapping):
            out.append(DetectedObject.from_dict(obj))
        elif hasattr(obj, "pose") and hasattr(obj, "kind"):
            out.append(from_ground_truth(obj))
        else:
            raise ConfigError(f"cannot read scene object {obj!r}; give DetectedObject, a dict with "
                              "id/colour/shape/position, or a simulator SceneObject")
    return out
