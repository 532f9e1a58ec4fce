"""Objects kept across control ticks: identities, the part in the hand, occlusions, and when to stop trusting the scene.

`build_scene_graph` describes one frame. A closed loop needs more: the same object under the same id tick after
tick, a pose for the part the fingers hide, and a clear "I cannot see X" instead of a stale guess.
`SceneTracker.update(detections, ee_pose, gripper_opening)` returns a `SceneView` each tick:

- **Tracks** are created from the first frame (the scene an instruction is grounded in) and never invented
  later; an uncoloured cluster beside the grasp point that reaches above it is the robot's own fingers, not an
  object, and gets no track (`hand_radius`). Fixtures (containers, the kit and its pockets, the hole fixture) are bolted down: they keep the pose of
  that first frame, since later frames see them partly covered by parts (a pocket with its part in it, measured
  2.5 cm off once its neighbour was filled). A movable object's track is continued by a later detection that
  matches it (same id, else same colour, within `match_radius`). A detection whose footprint differs from the
  track's by more than `size_tol`, or that is lower, is two objects merged into one cluster (a part against a
  rim) or an object half hidden; it does not move the track, whose pose stays the last trusted one. One with the
  track's footprint that is taller is the object standing on another (a block on a block: the scene graph
  measures a cluster's height from the table plane); its top face places it.
- **The part in the hand**: when the gripper has closed on something (its opening has stopped, within
  `grip_still` between two ticks, between `EMPTY_CLOSED` and `EMPTY_OPEN`), the movable object nearest the grasp point within `grasp_radius` becomes held; its offset from
  the end effector is fixed at that moment (with the part centred between the fingers along their closing axis,
  the end effector's y, since closing fingers push it there) and, while the grasp holds, its pose is the end
  effector's pose (joint encoders + forward kinematics) times that offset. Fingers hide most of a held part and the arm lifts it
  out of the camera's height band, so its own detections are not used until it is released.
- **Near the hand** (within `occlusion_radius` in xy while the hand is lower than `hand_clear_height` above the
  table) an object's detections are not used: the fingers hide part of its top face, which biases the centroid
  (measured: ~1 cm on a block under a descending hand), and such an object keeps the pose it had when the hand
  was away.
  The part the hand has just let go is the exception for `settle_ticks`, and for as long after as the camera
  has not seen it again: it fell or settled where the hand opened, and only the camera can say where it came
  to rest.
- **Hidden by the robot** (`occluded`, computed by the scene source from the depth frame: something that is not
  a tracked object, i.e. the hand or the arm, in front of the object): its detections are not used and it is not
  counted unseen, wherever the hand is. A released part hidden so is `unconfirmed` until a frame shows it
  unhidden (at most `confirm_ticks` after the release): its pose is still where the hand let go, which says
  nothing about where it came to rest (measured: a kit part drops 8 mm into its pocket, a tower block slides),
  so nothing may be judged from it; the agent lifts the hand to look.
- **Occlusion and loss**: an object not seen in a frame keeps its last pose. Near the hand or under another
  cluster's footprint that is expected and costs nothing; so is any fixture (containers, the kit, its pockets,
  the hole fixture: bolted down, they keep their pose when a part covers them); elsewhere each unseen tick of a
  movable object counts, and after
  `lost_after` ticks the object is reported `lost`. The agent holds the arm when an object its step needs is lost.
- **Frame failures**: no frame, or a frame in which nothing was detected, is reported as `failure` with the
  reason; the view then carries the last trusted poses, flagged, never new guesses.

This module must never import the simulator.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError
from keystone_vla.vocab import MOVABLE_KINDS

from .objects import DetectedObject

EMPTY_OPEN, EMPTY_CLOSED = 0.9, 0.05  # gripper opening (1 = open) between which the fingers hold something


def gripper_opening(observation: Any) -> float:
    """Gripper opening from an observation's proprio state, last entry (1 = open; 0.5, 'unknown', without one)."""
    return float(observation.state[-1]) if observation.state.size else 0.5


@dataclass(frozen=True)
class TrackerConfig:
    match_radius: float = 0.08  # m: how far an object may move between two frames and keep its track
    size_tol: float = 0.015  # m: larger extent differences mean a merged or half-hidden cluster
    grasp_radius: float = 0.06  # m: how far from the end effector a grasped object's centre may be
    occlusion_radius: float = 0.12  # m (xy): objects this close to the hand may be hidden by it
    hand_clear_height: float = 0.25  # m: a hand higher than this above the table hides nothing on it
    hand_radius: float = 0.1  # m (xy): an uncoloured cluster this close to the grasp point, reaching above it, is the hand
    grip_still: float = 0.02  # opening change per tick below which closing fingers have stopped on the part
    settle_ticks: int = 30  # ticks after a release during which the released part is updated even near the hand
    lost_after: int = 20  # unseen ticks (away from the hand) after which an object is lost
    confirm_ticks: int = 40  # ticks after a release after which a part the hand still hides is taken as it lies
    #: m: how far a measured height may put the held part below (`slip_down`) or above (`slip_up`) where its grasp
    #: put it; a part slips down in the fingers (measured: ~8 mm on a 4 cm block), never up, so a reading outside
    #: the band misread the part (a partly hidden side face, a top face read as a bottom) and is ignored
    slip_down: float = 0.015
    slip_up: float = 0.003

    def __post_init__(self) -> None:
        for name in ("match_radius", "size_tol", "grasp_radius", "occlusion_radius"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"tracker.{name} must be > 0 m, got {getattr(self, name)}")
        if self.slip_down < 0 or self.slip_up < 0:
            raise ConfigError(f"tracker.slip_down and slip_up must be >= 0 m, got {self.slip_down}, {self.slip_up}")
        if self.lost_after < 1:
            raise ConfigError(f"tracker.lost_after must be >= 1 tick, got {self.lost_after}")


@dataclass
class SceneView:
    """The scene at one tick: `objects` (id -> DetectedObject, the held one at its forward-kinematics pose),
    `held` (id or None), `lost` (ids not seen for too long), `failure` (why this tick's frame cannot be
    trusted, or None), `source` ('perception' or 'privileged') and `privileged` (simulator truth: an upper
    bound, never a robot's view)."""

    objects: dict[str, DetectedObject]
    held: str | None = None
    lost: tuple[str, ...] = ()
    failure: str | None = None
    source: str = "perception"
    privileged: bool = False
    unseen: dict[str, int] = field(default_factory=dict)
    occluded: tuple[str, ...] = ()  # ids the robot hides from the camera this tick (poses kept, not updated)
    unconfirmed: tuple[str, ...] = ()  # released parts the camera has not seen since: where they rest is unknown
    camera_xy: np.ndarray | None = None  # where the camera that sees the scene stands (x, y), if one does

    def problem(self, needed: Sequence[str] = ()) -> str | None:
        """Why the arm must hold now for a step that needs objects `needed`, or None."""
        if self.failure:
            return self.failure
        gone = [n for n in needed if n in self.lost or n not in self.objects]
        if gone:
            ticks = max((self.unseen.get(n, 0) for n in gone), default=0)
            return (f"lost sight of {', '.join(gone)}" + (f" for {ticks} ticks" if ticks else "")
                    + "; holding until the camera sees it again")
        return None


@dataclass
class _Track:
    obj: DetectedObject
    unseen: int = 0


class SceneTracker:
    """See the module docstring. `update` once per control tick; `reset` before a new scene."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        self.tracks: dict[str, _Track] = {}
        self.held: str | None = None
        self._offset: np.ndarray | None = None  # held object's pose in the end-effector frame [4, 4]
        self._grasp_offset: np.ndarray | None = None  # that pose as the grasp took it, before height corrections
        self._last_opening: float | None = None
        self._released: tuple[str, int] | None = None  # (part just let go, tick of the release)
        self._unconfirmed: str | None = None  # the released part, until a frame shows it unhidden
        self._occluded: frozenset[str] = frozenset()
        self.ticks = 0

    # ------------------------------------------------------------------------------------------------ update
    def update(self, detections: Sequence[DetectedObject] | None, ee_pose: np.ndarray, gripper_opening: float,
               failure: str | None = None, occluded: Sequence[str] = ()) -> SceneView:
        """Fold one frame's detections (None: no frame) and the arm's state into the tracks; `occluded`: ids the
        robot hides in this frame. See module docstring."""
        self.ticks += 1
        self._occluded = frozenset(occluded)
        if self._unconfirmed is not None and self._released is not None \
                and self.ticks - self._released[1] > self.config.confirm_ticks:
            self._unconfirmed = None  # hidden for too long: taken as it lies (where the hand let go)
        ee = pose_matrix(ee_pose)
        if detections is None and failure is None:
            failure = "no camera frame this tick"
        if not self.tracks:
            if failure is None and not detections:
                failure = "the camera sees no objects on the table (empty scene graph)"
            if failure is None and detections:
                self.tracks = {d.id: _Track(copy.deepcopy(d)) for d in detections if not self._is_hand(d, ee)}
                if not self.tracks:
                    failure = "the camera sees only the robot's hand on the table (no objects)"
            return self._view(failure)
        if detections is not None and not detections and failure is None and \
                not any(self._near_hand(t, ee) or n == self.held for n, t in self.tracks.items()):
            # nothing seen, and the hand hides none of the objects: the camera, not the scene, has a problem
            failure = "the camera sees no objects on the table (empty scene graph)"
        self._update_grasp(ee, gripper_opening)
        if failure is None and detections:
            self._match(list(detections), ee)
        if self.held is not None and self._offset is not None:
            track = self.tracks[self.held]
            pose = ee @ self._offset
            track.obj.position = pose[:3, 3].copy()
            track.obj.yaw = float(np.arctan2(pose[1, 0], pose[0, 0]))
            track.unseen = 0
        return self._view(failure)

    def correct_held_height(self, z: float, ee_pose: np.ndarray) -> bool:
        """Set the held part's centre height to `z` (a measurement, e.g. its bottom edge seen by the camera plus
        half its height) by moving its grasp offset along the base frame's z; True if it did. A measurement more
        than `slip_down` below or `slip_up` above where the grasp placed the part is ignored (False)."""
        if self.held is None or self._offset is None:
            return False
        ee = pose_matrix(ee_pose)
        grasp_z = float((ee @ self._grasp_offset)[2, 3]) if self._grasp_offset is not None else float(z)
        if not grasp_z - self.config.slip_down <= float(z) <= grasp_z + self.config.slip_up:
            return False
        track = self.tracks[self.held]
        dz = float(z) - float((ee @ self._offset)[2, 3])
        self._offset[:3, 3] += ee[:3, :3].T @ np.array([0.0, 0.0, dz])
        track.obj.position = (ee @ self._offset)[:3, 3].copy()
        return True

    def _update_grasp(self, ee: np.ndarray, opening: float) -> None:
        last, self._last_opening = self._last_opening, opening
        holding = EMPTY_CLOSED < opening < EMPTY_OPEN
        if not holding:
            if self.held is not None:
                self._released = (self.held, self.ticks)
                self._unconfirmed = self.held
            self.held, self._offset, self._grasp_offset = None, None, None
            return
        # the offset is taken once the fingers stop on the part: while they still close, it is not yet held
        if self.held is not None or last is None or abs(opening - last) > self.config.grip_still:
            return
        best, best_d = None, self.config.grasp_radius
        for name, track in self.tracks.items():
            if track.obj.shape not in MOVABLE_KINDS:
                continue
            d = float(np.linalg.norm(track.obj.position - ee[:3, 3]))
            if d < best_d:
                best, best_d = name, d
        if best is not None:
            self.held = best
            if self._unconfirmed == best:
                self._unconfirmed = None
            self._offset = np.linalg.inv(ee) @ object_matrix(self.tracks[best].obj)
            self._offset[1, 3] = 0.0  # closing fingers centre the part along their axis (the hand's y)
            self._grasp_offset = self._offset.copy()

    def _match(self, detections: list[DetectedObject], ee: np.ndarray) -> None:
        cfg = self.config
        pairs: list[tuple[int, float, str, int]] = []  # (id mismatch, distance, track, detection index)
        for name, track in self.tracks.items():
            if name == self.held or self._near_hand(track, ee) or track.obj.shape not in MOVABLE_KINDS:
                continue  # fixtures keep the pose of the first frame (see module docstring)
            for i, det in enumerate(detections):
                if det.colour != track.obj.colour:
                    continue
                d = float(np.linalg.norm(det.position[:2] - track.obj.position[:2]))
                if d < cfg.match_radius:
                    pairs.append((int(det.id != name), d, name, i))
        pairs.sort()
        used_tracks: set[str] = set()
        used_dets: set[int] = set()
        for _, _, name, i in pairs:
            if name in used_tracks or i in used_dets:
                continue
            used_tracks.add(name)
            used_dets.add(i)
            track, det = self.tracks[name], detections[i]
            seen, own = _extents(det), _extents(track.obj)
            if np.any(np.abs(seen[:2] - own[:2]) > cfg.size_tol) or seen[2] < own[2] - cfg.size_tol:
                self._miss(track, ee, detections)  # merged with a neighbour or half hidden: not a pose to trust
                continue
            track.obj.position = det.position.copy()
            if seen[2] > own[2] + cfg.size_tol:  # standing on something: the cluster reaches down to the table
                track.obj.position[2] = float(det.position[2]) + seen[2] / 2 - own[2] / 2
            track.obj.yaw = det.yaw
            track.obj.confidence = det.confidence
            track.unseen = 0
            if name == self._unconfirmed:
                self._unconfirmed = None  # seen unhidden since it was let go
        for name, track in self.tracks.items():
            if name not in used_tracks and name != self.held and not self._near_hand(track, ee):
                self._miss(track, ee, detections)

    def _is_hand(self, det: DetectedObject, ee: np.ndarray) -> bool:
        """Whether a detection is the robot's own hand rather than an object: uncoloured (the fingers render
        grey), within `hand_radius` of the grasp point in xy, and reaching above it (no table object stands
        higher than the fingertips right beside them). Measured: with the hand 1-8 cm over the table, each finger
        shows up as a grey 'peg' or 'cylinder' 4-6 cm from the grasp point; tracked, an instruction given then
        was planned over phantom pegs."""
        top = float(det.position[2]) + float(det.size[2]) / 2
        return bool(det.colour is None and top >= ee[2, 3]
                    and np.linalg.norm(det.position[:2] - ee[:2, 3]) < self.config.hand_radius)

    def _near_hand(self, track: _Track, ee: np.ndarray) -> bool:
        """Whether the hand (or the arm) may hide `track` now, so that its detections are not to be used."""
        if track.obj.id in self._occluded:
            return True
        if self._released is not None and self._released[0] == track.obj.id \
                and (self.ticks - self._released[1] <= self.config.settle_ticks or self._unconfirmed == track.obj.id):
            return False  # just let go: the camera says where it came to rest
        return bool(ee[2, 3] < self.config.hand_clear_height
                    and np.linalg.norm(track.obj.position[:2] - ee[:2, 3]) < self.config.occlusion_radius)

    def _miss(self, track: _Track, ee: np.ndarray, detections: Sequence[DetectedObject] = ()) -> None:
        """The track was not seen alone this frame. Near the hand, or under another cluster's footprint (a block
        under the block stacked on it, a part in a pocket merged with the tray), that is occlusion, not loss."""
        xy = track.obj.position[:2]
        if track.obj.shape not in MOVABLE_KINDS:
            return  # a fixture does not move: hidden, it keeps its pose
        covered = any(np.linalg.norm(xy - d.position[:2]) < max(d.size[0], d.size[1]) / 2 for d in detections)
        if not (self._near_hand(track, ee) or covered):
            track.unseen += 1

    def _view(self, failure: str | None) -> SceneView:
        lost = tuple(n for n, t in self.tracks.items() if t.unseen >= self.config.lost_after)
        return SceneView({n: copy.deepcopy(t.obj) for n, t in self.tracks.items()}, self.held, lost, failure,
                         unseen={n: t.unseen for n, t in self.tracks.items() if t.unseen},
                         occluded=tuple(sorted(self._occluded & set(self.tracks))),
                         unconfirmed=(self._unconfirmed,) if self._unconfirmed is not None else ())


def _extents(obj: DetectedObject) -> np.ndarray:
    """Footprint length >= width, then height (detectors and simulators order xy extents differently)."""
    s = np.asarray(obj.size, np.float64)
    return np.array([max(s[0], s[1]), min(s[0], s[1]), s[2]])


def pose_matrix(pose: np.ndarray) -> np.ndarray:
    """xyz + quaternion xyzw (float [7]) -> homogeneous transform [4, 4]."""
    pose = np.asarray(pose, np.float64)
    x, y, z, w = pose[3:7] / max(np.linalg.norm(pose[3:7]), 1e-12)
    m = np.eye(4)
    m[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    m[:3, 3] = pose[:3]
    return m


def object_matrix(obj: DetectedObject) -> np.ndarray:
    """An upright object's pose (position, yaw about +z) as a transform [4, 4]."""
    c, s = np.cos(obj.yaw), np.sin(obj.yaw)
    m = np.eye(4)
    m[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    m[:3, 3] = obj.position
    return m
