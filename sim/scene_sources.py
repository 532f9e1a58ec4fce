"""Scene sources for a simulated cell: the robot's own perception (default) or, explicitly, simulator truth.

`make_scene_source("perception", world)` gives a `keystone_vla.perception.scene_source.CameraScene` that holds
only the cameras' calibration (intrinsics and pose, read once from the simulated cameras, as a cell would
calibrate them) and then sees each observation's RGB-D frames, nothing else: it keeps no reference to the world.

`make_scene_source("privileged", world)` gives `PrivilegedScene`, the world's true object poses in the scene
graph's shape. It is an upper bound for evaluation, never what a robot has; harnesses label every result
produced with it as privileged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keystone_vla.errors import unknown_choice
from keystone_vla.perception.cameras import PinholeCamera
from keystone_vla.perception.objects import from_ground_truth
from keystone_vla.perception.scene_source import SCENE_SOURCES, CameraScene
from keystone_vla.perception.tracker import SceneView
from keystone_vla.types import Observation

from .world import SimWorld

#: the camera perception sees the table with (fixed, calibrated; the wrist view of a held part is mostly fingers)
PERCEPTION_CAMERAS = ("front",)


class PrivilegedScene:
    """Simulator truth as a scene source (see module docstring)."""

    name = "privileged"
    privileged = True

    def __init__(self, world: SimWorld) -> None:
        self._world = world

    def reset(self) -> None:
        """Nothing to forget: every view is read from the world."""

    def observe(self, observation: Observation) -> SceneView:
        objects = {o.name: from_ground_truth(o) for o in self._world.objects.values()}
        return SceneView(objects, source=self.name, privileged=True)


def calibration(world: SimWorld, cameras: Sequence[str] = PERCEPTION_CAMERAS) -> dict[str, PinholeCamera]:
    """The fixed cameras' models (intrinsics + pose in the base frame), as a cell's calibration gives them."""
    out = {}
    for name in cameras:
        cam = world.cameras.get(name)
        if cam is None or cam.config.mounted:
            raise unknown_choice("perception camera", name,
                                 [n for n, c in world.cameras.items() if not c.config.mounted])
        out[name] = PinholeCamera.from_pybullet(cam.view_matrix, cam.projection_matrix, cam.width, cam.height)
    return out


def make_scene_source(kind: str, world: SimWorld, cameras: Sequence[str] = PERCEPTION_CAMERAS) -> Any:
    """'perception' -> CameraScene over the world's calibrated cameras; 'privileged' -> PrivilegedScene(world)."""
    if kind == "perception":
        return CameraScene(calibration(world, cameras))
    if kind == "privileged":
        return PrivilegedScene(world)
    raise unknown_choice("scene source", kind, SCENE_SOURCES)
