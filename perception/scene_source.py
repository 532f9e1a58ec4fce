"""Scene sources: where a closed loop gets the objects it acts on, one `SceneView` per control tick.

Everything an agent needs about objects at run time (the plan's grounding, the object token, step progress,
regrasps, the alignment and release assists, the kit's pair order) comes from one source, chosen per run:

- `CameraScene` ("perception", the default everywhere): the cameras' RGB-D frames of each observation through
  `build_scene_graph` (no segmentation masks, no simulator poses) and a `SceneTracker` (identities, the part in
  the hand, occlusions). Its camera models are calibration (intrinsics and the camera's pose in the robot base
  frame), which every cell has.
- `DetectionScene`: the same tracker fed with scene graphs computed elsewhere (the ROS perception node publishes
  them; the policy node feeds the latest one each tick and says how old it is).
- "privileged" (`keystone_vla.sim.privileged.PrivilegedScene`): the simulator's true poses in the same shape. An
  upper bound for evaluation only: every report and results.json that uses it says so.

A source has `name`, `privileged`, `reset()` and `observe(observation) -> SceneView`. This module must never
import the simulator.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from keystone_vla.errors import ConfigError
from keystone_vla.types import Observation

from .cameras import PinholeCamera
from .objects import DetectedObject
from .tracker import SceneTracker, SceneView, TrackerConfig, gripper_opening

SCENE_SOURCES = ("perception", "privileged")
#: the height band perception looks in reaches this far above the table (m); a cluster taller than
#: `TALLEST_OBJECT` there comes down from above it: the arm (or the hand with its part), never a table object
WORK_BAND_TOP = 0.2
TALLEST_OBJECT = 0.15  # a three-block tower is 12 cm, the peg 8 cm
HELD_MIN_POINTS = 8  # pixels of a held part's colour needed to measure its height


@runtime_checkable
class SceneSource(Protocol):
    name: str
    privileged: bool

    def reset(self) -> None:
        """Forget the previous scene (tracks, the held part)."""

    def observe(self, observation: Observation) -> SceneView:
        """The scene at this tick; call once per control tick, in order."""


class CameraScene:
    """Perception from the observation's own RGB-D frames (see module docstring).

    `cameras` maps camera name -> `PinholeCamera`; the first one whose colour and depth frames the observation
    carries is used (today: the fixed front camera; the wrist camera's view of a held part is mostly fingers).
    Clusters that reach above `TALLEST_OBJECT` are the arm reaching into the work band and are dropped (a robot
    self-filter by height: the arm always enters the table's band from above).
    """

    name = "perception"
    privileged = False

    def __init__(self, cameras: Mapping[str, PinholeCamera], tracker: TrackerConfig | None = None,
                 scene_graph: Any = None) -> None:
        if not cameras:
            raise ConfigError("CameraScene needs at least one calibrated camera (name -> PinholeCamera)")
        self.cameras = dict(cameras)
        self.tracker = SceneTracker(tracker)
        self.scene_graph = scene_graph  # SceneGraphConfig or None (defaults)
        self.last_detections: list[DetectedObject] | None = None

    def reset(self) -> None:
        self.tracker.reset()
        self.last_detections = None

    def detect(self, observation: Observation) -> tuple[list[DetectedObject] | None, str | None]:
        """This frame's scene graph, or (None, why not)."""
        from .scene_graph import SceneGraphConfig, build_scene_graph

        for name, camera in self.cameras.items():
            rgb, depth = observation.images.get(name), observation.depth.get(name)
            if rgb is None:
                continue
            if depth is None:
                return None, f"no depth frame from camera {name!r}; perception needs RGB-D"
            config = self.scene_graph or SceneGraphConfig(max_height=WORK_BAND_TOP)
            objects = build_scene_graph(rgb, depth, camera, config)
            return [o for o in objects if o.size[2] <= TALLEST_OBJECT], None
        return None, f"no frame from cameras {sorted(self.cameras)} in this observation"

    def observe(self, observation: Observation) -> SceneView:
        detections, failure = self.detect(observation)
        self.last_detections = detections
        view = self.tracker.update(detections, observation.ee_pose, gripper_opening(observation), failure)
        if view.held is not None and failure is None:
            z = self.held_height(observation, view.objects[view.held])
            if z is not None and self.tracker.correct_held_height(z, observation.ee_pose):
                view.objects[view.held] = copy.deepcopy(self.tracker.tracks[view.held].obj)
        return view

    def held_height(self, observation: Observation, part: DetectedObject) -> float | None:
        """The held part's centre height from the camera: the lowest points of its colour under the hand (its
        bottom edge, which nothing hides from a camera in front of the cell) plus half its height; None when
        fewer than `HELD_MIN_POINTS` are visible or the part has no colour. A part slips down in the fingers as
        it is lifted (measured: ~8 mm on a 4 cm block), so the grasp offset alone places it too high and a
        put-down then presses on into its target."""
        from .scene_graph import classify_colours

        if part.colour is None:
            return None
        for name, camera in self.cameras.items():
            rgb, depth = observation.images.get(name), observation.depth.get(name)
            if rgb is None or depth is None:
                continue
            pts, mask = camera.depth_to_points(depth)
            radius = max(part.size[0], part.size[1]) / 2 + 0.005
            near = (np.linalg.norm(pts[:, :2] - part.position[:2], axis=1) < radius) & (pts[:, 2] > 0.003) & \
                (pts[:, 2] < part.position[2] + part.size[2] / 2)
            if near.sum() < HELD_MIN_POINTS:
                return None
            labels, names = classify_colours(np.asarray(rgb)[mask][near])
            z = pts[near, 2][labels == names.index(part.colour)] if part.colour in names else np.empty(0)
            if z.size < HELD_MIN_POINTS:
                return None
            return float(np.percentile(z, 2)) + part.size[2] / 2
        return None


class DetectionScene:
    """The tracker over scene graphs that arrive from elsewhere (e.g. a ROS topic): `feed(objects, stamp)` when
    one arrives, `observe(observation)` once per control tick. A scene graph older than `max_age` seconds (by
    the observation's timestamp) is a failure: the arm holds rather than act on an old picture."""

    name = "perception"
    privileged = False

    def __init__(self, tracker: TrackerConfig | None = None, max_age: float = 0.5) -> None:
        self.tracker = SceneTracker(tracker)
        self.max_age = float(max_age)
        self._objects: list[DetectedObject] | None = None
        self._stamp = float("-inf")

    def reset(self) -> None:
        """Forget the tracks (a new instruction starts from the scene graph as it is now); the latest scene graph
        received is kept: it is still the freshest picture of the cell."""
        self.tracker.reset()

    def feed(self, objects: Sequence[DetectedObject], stamp: float) -> None:
        self._objects, self._stamp = list(objects), float(stamp)

    @property
    def stamp(self) -> float | None:
        """Stamp (s) of the latest scene graph received, or None before the first."""
        return self._stamp if self._objects is not None else None

    def observe(self, observation: Observation) -> SceneView:
        """Fold the latest scene graph into the tracks (a graph seen before is folded again: poses do not move,
        the held part follows the hand)."""
        failure = None
        if self._objects is None:
            failure = "no scene graph received yet from the perception node"
        elif observation.timestamp - self._stamp > self.max_age:
            failure = (f"the latest scene graph is {observation.timestamp - self._stamp:.2f} s old "
                       f"(limit {self.max_age} s); is the camera or the perception node down?")
        detections = self._objects if failure is None else None
        return self.tracker.update(detections, observation.ee_pose, gripper_opening(observation), failure)
