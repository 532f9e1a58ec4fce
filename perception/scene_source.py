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
from keystone_vla.vocab import MOVABLE_KINDS

from .cameras import PinholeCamera
from .objects import DetectedObject
from .tracker import SceneTracker, SceneView, TrackerConfig, gripper_opening

SCENE_SOURCES = ("perception", "privileged")
#: the height band perception looks in reaches this far above the table (m); a cluster taller than
#: `TALLEST_OBJECT` there comes down from above it: the arm (or the hand with its part), never a table object
WORK_BAND_TOP = 0.2
TALLEST_OBJECT = 0.15  # a three-block tower is 12 cm, the peg 8 cm
HELD_MIN_POINTS = 8  # pixels of a held part's colour needed to measure its height
HELD_SLIP = 0.01  # metres a held part may sit off where its grasp put it (points this far above its top count)
HELD_SIDE_SPAN = 0.5  # a held part's visible points spanning this share of its height show a side face
#: an object is hidden by the robot when at least this many pixels inside its image outline are something that is
#: nearer the camera than the object's nearest corner by `OCCLUDER_GAP`, higher than its top face minus
#: `OCCLUDER_GAP`, and inside no other tracked object's box (so: the hand or the arm, never a neighbour)
OCCLUDER_PIXELS = 2
OCCLUDER_GAP = 0.01


@runtime_checkable
class SceneSource(Protocol):
    name: str
    privileged: bool

    def reset(self) -> None:
        """Forget the previous scene (tracks, the held part)."""

    def observe(self, observation: Observation) -> SceneView:
        """The scene at this tick; call once per control tick, in order."""


def perceive_objects(rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera,
                     config: Any = None) -> list[DetectedObject]:
    """One RGB-D frame's objects as every closed loop sees them (`CameraScene` in `keystone eval` and the demo, the
    ROS perception node): the scene graph of the band up to `WORK_BAND_TOP` above the table (`config`, a
    `SceneGraphConfig`, overrides that), less the clusters taller than `TALLEST_OBJECT` (the arm reaching down
    into the band; measured under ROS with the hand parked 11 cm up: each finger left a grey 'peg' as tall as the
    band, which an instruction given then was planned over)."""
    from .scene_graph import SceneGraphConfig, build_scene_graph

    objects = build_scene_graph(rgb, depth, camera, config or SceneGraphConfig(max_height=WORK_BAND_TOP))
    return [o for o in objects if o.size[2] <= TALLEST_OBJECT]


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
        for name, camera in self.cameras.items():
            rgb, depth = observation.images.get(name), observation.depth.get(name)
            if rgb is None:
                continue
            if depth is None:
                return None, f"no depth frame from camera {name!r}; perception needs RGB-D"
            return perceive_objects(rgb, depth, camera, self.scene_graph), None
        return None, f"no frame from cameras {sorted(self.cameras)} in this observation"

    def observe(self, observation: Observation) -> SceneView:
        detections, failure = self.detect(observation)
        self.last_detections = detections
        name, camera = self._frame_camera(observation)
        frame = None if name is None else (observation.images[name], observation.depth[name])
        return track_with_depth(self.tracker, detections, failure, observation, camera, frame)

    def _frame_camera(self, observation: Observation) -> tuple[str | None, PinholeCamera | None]:
        """The camera `detect` used for this observation (the first with colour and depth), or (None, None)."""
        for name, camera in self.cameras.items():
            if observation.images.get(name) is not None and observation.depth.get(name) is not None:
                return name, camera
        return None, None

    def held_height(self, observation: Observation, part: DetectedObject) -> float | None:
        """The held part's centre height from the first camera with colour and depth (`held_part_height`)."""
        name, camera = self._frame_camera(observation)
        if camera is None:
            return None
        return held_part_height(observation.images[name], observation.depth[name], camera, part)


def held_part_height(rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera, part: DetectedObject) -> float | None:
    """The held part's centre height from the camera, from the points of its colour under the hand; None
    when fewer than `HELD_MIN_POINTS` are visible or the part has no colour. A part slips down in the fingers
    as it is lifted (measured: ~8 mm on a 4 cm block), so the grasp offset alone places it too high and a
    put-down then presses on into its target.

    When the points span at least `HELD_SIDE_SPAN` of the part's height the camera sees a side face, and its
    lowest points are the part's bottom edge: centre = lowest + half the height. Otherwise it sees one face
    only, edge-on flat (a low part such as the 2.5 cm kit tee or ell, whose sides the fingers hide): that
    face is its top or its bottom, whichever places the centre nearer where the grasp put it (slip is a few
    millimetres, the two readings are a full height apart). Reading a flat top face as the bottom edge put a
    held ell 2.5 cm too high; it then never counted as set down and was pushed into its pocket until the
    fingers jammed. A side face partly hidden still misleads (its lowest visible point is not the bottom), so
    `SceneTracker.correct_held_height` takes a reading only within the slip band of the grasp
    (`TrackerConfig.slip_down` / `slip_up`)."""
    from .scene_graph import classify_colours

    if part.colour is None or np.asarray(depth).shape != (camera.height, camera.width):
        return None
    pts, mask = camera.depth_to_points(depth)
    radius = max(part.size[0], part.size[1]) / 2 + 0.005
    near = (np.linalg.norm(pts[:, :2] - part.position[:2], axis=1) < radius) & (pts[:, 2] > 0.003) & \
        (pts[:, 2] < part.position[2] + part.size[2] / 2 + HELD_SLIP)
    if near.sum() < HELD_MIN_POINTS:
        return None
    labels, names = classify_colours(np.asarray(rgb)[mask][near])
    z = pts[near, 2][labels == names.index(part.colour)] if part.colour in names else np.empty(0)
    if z.size < HELD_MIN_POINTS:
        return None
    low, high = (float(v) for v in np.percentile(z, [2, 98]))
    half = part.size[2] / 2
    if high - low >= HELD_SIDE_SPAN * part.size[2]:
        return low + half
    as_bottom, as_top = low + half, high - half
    now = float(part.position[2])
    return as_bottom if abs(as_bottom - now) <= abs(as_top - now) else as_top


def track_with_depth(tracker: SceneTracker, detections: list[DetectedObject] | None, failure: str | None,
                     observation: Observation, camera: PinholeCamera | None,
                     frame: tuple[np.ndarray, np.ndarray] | None) -> SceneView:
    """One tracker tick with what a colour + depth frame adds to the detections: the objects the robot hides
    (`occluded_by_robot`: their poses are kept, not updated from a half-hidden cluster) and the held part's
    height (`held_part_height`, within the tracker's slip band). `frame` is (rgb, depth) from `camera`, or None
    (then neither is measured). Used by `CameraScene` and, under ROS, by `DetectionScene`, so both loops see the
    same scene."""
    occluded: set[str] = set()
    if failure is None and tracker.tracks and camera is not None and frame is not None:
        occluded = occluded_by_robot([t.obj for t in tracker.tracks.values()], frame[1], camera)
    view = tracker.update(detections, observation.ee_pose, gripper_opening(observation), failure, occluded=occluded)
    if camera is not None:
        view.camera_xy = camera.camera_to_world[:2, 3].copy()
    if view.held is not None and failure is None and camera is not None and frame is not None:
        z = held_part_height(frame[0], frame[1], camera, view.objects[view.held])
        if z is not None and tracker.correct_held_height(z, observation.ee_pose):
            view.objects[view.held] = copy.deepcopy(tracker.tracks[view.held].obj)
    return view


def _box_corners(obj: DetectedObject) -> np.ndarray:
    """An upright object's box corners float [8, 3] (position, yaw, size)."""
    hx, hy, hz = (np.asarray(obj.size, np.float64) / 2).tolist()
    c, s = np.cos(obj.yaw), np.sin(obj.yaw)
    local = np.array([[x, y, z] for x in (-hx, hx) for y in (-hy, hy) for z in (-hz, hz)])
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return local @ rot.T + np.asarray(obj.position, np.float64)


def _inside_box(points: np.ndarray, obj: DetectedObject, pad: float) -> np.ndarray:
    c, s = np.cos(obj.yaw), np.sin(obj.yaw)
    d = points - np.asarray(obj.position, np.float64)
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
    return np.all(np.abs(local) <= np.asarray(obj.size, np.float64) / 2 + pad, axis=1)


def occluded_by_robot(objects: Sequence[DetectedObject], depth: np.ndarray, camera: PinholeCamera) -> set[str]:
    """Ids of the movable `objects` that something other than a tracked object (the hand, the arm) hides from
    `camera` in this depth frame, at least in part.

    For each object: the pixels inside its box's image outline (the convex hull of its 8 projected corners) whose
    depth puts a surface nearer the camera than the box's nearest corner by `OCCLUDER_GAP` and higher than its top
    face minus `OCCLUDER_GAP`, outside every other object's box; `OCCLUDER_PIXELS` or more such pixels mean the
    camera sees the object only in part, so its cluster's centroid and extents cannot be trusted this frame
    (measured: fingers over a block bias its centroid by ~1 cm). Neighbours that hide each other are not counted
    here: the tracker's extent check handles merged or half-hidden clusters."""
    import cv2

    depth = np.asarray(depth, np.float64)
    if depth.shape != (camera.height, camera.width):
        return set()
    points, valid = camera.depth_to_points(depth)
    world = np.full((*depth.shape, 3), np.nan)  # each pixel's surface point in the base frame (nan: background)
    world[valid] = points
    movable = [o for o in objects if o.shape in MOVABLE_KINDS and o.size is not None]
    out: set[str] = set()
    for obj in movable:
        corners = _box_corners(obj)
        cam = corners @ camera.world_to_camera[:3, :3].T + camera.world_to_camera[:3, 3]
        if np.any(cam[:, 2] <= 0):
            continue
        uv = camera.project(corners)
        mask = np.zeros(depth.shape, np.uint8)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(uv).astype(np.int32)), 1)
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        front = valid[rows, cols] & (depth[rows, cols] < cam[:, 2].min() - OCCLUDER_GAP)
        if front.sum() < OCCLUDER_PIXELS:
            continue
        pts = world[rows[front], cols[front]]
        top = float(obj.position[2]) + float(obj.size[2]) / 2
        keep = pts[:, 2] > top - OCCLUDER_GAP
        for other in objects:
            if other is not obj and other.size is not None and keep.any():
                keep &= ~_inside_box(pts, other, OCCLUDER_GAP)
        if keep.sum() >= OCCLUDER_PIXELS:
            out.add(obj.id)
    return out


class DetectionScene:
    """The tracker over scene graphs that arrive from elsewhere (e.g. a ROS topic): `feed(objects, stamp)` when
    one arrives, `observe(observation)` once per control tick. A scene graph older than `max_age` seconds (by
    the observation's timestamp) is a failure: the arm holds rather than act on an old picture."""

    name = "perception"
    privileged = False

    def __init__(self, tracker: TrackerConfig | None = None, max_age: float = 0.5,
                 camera: PinholeCamera | None = None, camera_name: str = "front") -> None:
        self.tracker = SceneTracker(tracker)
        #: the calibrated camera whose depth frames arrive in the observations as `camera_name` (set it once the
        #: camera info and pose are known); with it, parts the robot hides and the held part's height are
        #: measured as `CameraScene` does (`track_with_depth`); without it, neither is
        self.camera = camera
        self.camera_name = camera_name
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
        rgb, depth = observation.images.get(self.camera_name), observation.depth.get(self.camera_name)
        frame = (rgb, depth) if rgb is not None and depth is not None else None
        return track_with_depth(self.tracker, detections, failure, observation, self.camera, frame)
