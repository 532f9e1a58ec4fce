"""Scene objects built from PyBullet primitives: blocks, cylinders, containers, the peg-in-hole fixture, kits and
kit parts.

Every object is a `SceneObject` whose name is its grounding id (`red_block`, `peg`, `bar_slot`). Builders only create
bodies; they never decide where things go (tasks sample poses) and never step the simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pybullet as p

from keystone_vla.types import PlanStep
from keystone_vla.vocab import COLOURS, SEEN_SHAPES, UNSEEN_SHAPES, YAW_SYMMETRY

from .geometry import yaw_of

GREY = (0.55, 0.55, 0.58, 1.0)
DARK = (0.2, 0.2, 0.22, 1.0)


@dataclass
class SceneObject:
    """One body in the scene, named as instructions and plans refer to it."""

    name: str
    kind: str
    body: int
    client: int
    size: tuple[float, float, float]  # full extents (m) in the object's frame
    colour: str | None = None
    symmetry: int = 4  # yaw symmetry order; 0 = round
    movable: bool = True
    grasp_height: float = 0.0  # z of the grasp point above the object's origin
    extra: dict = field(default_factory=dict)

    def pose(self) -> tuple[np.ndarray, np.ndarray]:
        pos, orn = p.getBasePositionAndOrientation(self.body, physicsClientId=self.client)
        return np.array(pos), np.array(orn)

    def position(self) -> np.ndarray:
        return self.pose()[0]

    def yaw(self) -> float:
        return yaw_of(self.pose()[1])

    @property
    def label(self) -> str:
        """Words a person would use: 'red block', 'peg'."""
        return f"{self.colour} {self.kind}" if self.colour else self.kind


def _box(cid: int, half: tuple[float, float, float], rgba, pos=(0, 0, 0)):
    col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, collisionFramePosition=pos, physicsClientId=cid)
    vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba, visualFramePosition=pos, physicsClientId=cid)
    return col, vis


def _body(cid, col, vis, mass, pos, yaw, friction=1.0) -> int:
    orn = p.getQuaternionFromEuler([0, 0, yaw])
    body = p.createMultiBody(mass, col, vis, basePosition=pos, baseOrientation=orn, physicsClientId=cid)
    p.changeDynamics(body, -1, lateralFriction=friction, spinningFriction=0.002, physicsClientId=cid)
    return body


def _compound(cid, boxes: list[tuple[tuple[float, float, float], tuple[float, float, float]]], rgba, mass, pos, yaw):
    """A rigid body made of several boxes: [(half_extents, centre offset)]."""
    halves = [b[0] for b in boxes]
    offsets = [b[1] for b in boxes]
    col = p.createCollisionShapeArray(
        [p.GEOM_BOX] * len(boxes), halfExtents=halves, collisionFramePositions=offsets, physicsClientId=cid
    )
    vis = p.createVisualShapeArray(
        [p.GEOM_BOX] * len(boxes),
        halfExtents=halves,
        visualFramePositions=offsets,
        rgbaColors=[rgba] * len(boxes),
        physicsClientId=cid,
    )
    return _body(cid, col, vis, mass, pos, yaw)


def make_block(cid, colour: str, pos, yaw: float, edge: float = 0.04, name: str | None = None) -> SceneObject:
    h = edge / 2
    col, vis = _box(cid, (h, h, h), COLOURS[colour])
    body = _body(cid, col, vis, 0.1, (pos[0], pos[1], h), yaw)
    return SceneObject(name or f"{colour}_block", "block", body, cid, (edge,) * 3, colour, symmetry=4)


def make_cylinder(cid, colour: str, pos, yaw: float, radius=0.02, height=0.04) -> SceneObject:
    col = p.createCollisionShape(p.GEOM_CYLINDER, radius=radius, height=height, physicsClientId=cid)
    vis = p.createVisualShape(p.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=COLOURS[colour], physicsClientId=cid)
    body = _body(cid, col, vis, 0.1, (pos[0], pos[1], height / 2), yaw)
    return SceneObject(f"{colour}_cylinder", "cylinder", body, cid, (2 * radius, 2 * radius, height), colour, symmetry=0)


def make_container(cid, kind: str, colour: str, pos, yaw: float) -> SceneObject:
    """`bowl`: 13 cm square open box with 3 cm walls; `plate`: flat 14 cm tray with a 1.2 cm rim. Static."""
    wall = 0.01
    inner = 0.065 if kind == "bowl" else 0.07
    height = 0.03 if kind == "bowl" else 0.012
    base_h = 0.004
    o = inner + wall / 2
    boxes = [
        ((inner + wall, inner + wall, base_h / 2), (0, 0, base_h / 2)),
        ((wall / 2, inner + wall, height / 2), (o, 0, height / 2)),
        ((wall / 2, inner + wall, height / 2), (-o, 0, height / 2)),
        ((inner, wall / 2, height / 2), (0, o, height / 2)),
        ((inner, wall / 2, height / 2), (0, -o, height / 2)),
    ]
    body = _compound(cid, boxes, COLOURS[colour], 0.0, (pos[0], pos[1], 0.0), yaw)
    size = (2 * (inner + wall), 2 * (inner + wall), height)
    return SceneObject(
        f"{colour}_{kind}", kind, body, cid, size, colour, symmetry=4, movable=False, extra={"inner_half": inner, "floor": base_h}
    )


PEG_SIDE = 0.024
PEG_HEIGHT = 0.08
HOLE_SIDE = 0.030  # 3 mm clearance per side
FIXTURE_HEIGHT = 0.04


def make_peg(cid, colour: str, pos, yaw: float) -> SceneObject:
    h = PEG_SIDE / 2
    col, vis = _box(cid, (h, h, PEG_HEIGHT / 2), COLOURS[colour])
    body = _body(cid, col, vis, 0.08, (pos[0], pos[1], PEG_HEIGHT / 2), yaw)
    return SceneObject(
        "peg", "peg", body, cid, (PEG_SIDE, PEG_SIDE, PEG_HEIGHT), colour, symmetry=4, grasp_height=PEG_HEIGHT / 2 - 0.02
    )


def make_hole_fixture(cid, pos, yaw: float) -> SceneObject:
    """A static 12 cm block with a square through-hole (built from four boxes) and a floor."""
    outer = 0.06
    hh = HOLE_SIDE / 2
    zc = FIXTURE_HEIGHT / 2
    side_w = (outer - hh) / 2
    boxes = [
        ((side_w, outer, zc), (hh + side_w, 0, zc)),
        ((side_w, outer, zc), (-hh - side_w, 0, zc)),
        ((hh, side_w, zc), (0, hh + side_w, zc)),
        ((hh, side_w, zc), (0, -hh - side_w, zc)),
    ]
    body = _compound(cid, boxes, GREY, 0.0, (pos[0], pos[1], 0.0), yaw)
    return SceneObject("hole", "hole", body, cid, (2 * outer, 2 * outer, FIXTURE_HEIGHT), None, symmetry=4, movable=False)


PART_HEIGHT = 0.025
#: part shape -> boxes (half extents, centre) in the part frame; the origin is the grasp point, and the bar through it
#: is narrow along y so the fingers (closing along the gripper's y) straddle it.
PART_BOXES: dict[str, list[tuple[tuple[float, float, float], tuple[float, float, float]]]] = {
    "square": [((0.02, 0.02, PART_HEIGHT / 2), (0, 0, 0))],
    "bar": [((0.04, 0.0125, PART_HEIGHT / 2), (0, 0, 0))],
    "ell": [((0.03, 0.0125, PART_HEIGHT / 2), (0, 0, 0)), ((0.0125, 0.03, PART_HEIGHT / 2), (0.0425, 0.0175, 0))],
    "tee": [((0.03, 0.0125, PART_HEIGHT / 2), (0, 0, 0)), ((0.0125, 0.045, PART_HEIGHT / 2), (0.0425, 0, 0))],
}
PART_SYMMETRY = {shape: YAW_SYMMETRY[shape] for shape in (*SEEN_SHAPES, *UNSEEN_SHAPES)}
KIT_THICKNESS = 0.01


def make_part(cid, shape: str, colour: str, pos, yaw: float, z: float = 0.0) -> SceneObject:
    if shape == "disc":
        col = p.createCollisionShape(p.GEOM_CYLINDER, radius=0.022, height=PART_HEIGHT, physicsClientId=cid)
        vis = p.createVisualShape(
            p.GEOM_CYLINDER, radius=0.022, length=PART_HEIGHT, rgbaColor=COLOURS[colour], physicsClientId=cid
        )
        body = _body(cid, col, vis, 0.05, (pos[0], pos[1], z + PART_HEIGHT / 2), yaw)
        size = (0.044, 0.044, PART_HEIGHT)
    else:
        body = _compound(cid, PART_BOXES[shape], COLOURS[colour], 0.05, (pos[0], pos[1], z + PART_HEIGHT / 2), yaw)
        size = _extent(PART_BOXES[shape])
    return SceneObject(f"{colour}_{shape}", shape, body, cid, size, colour, symmetry=PART_SYMMETRY[shape])


def make_kit(cid, pos, yaw: float, length: float = 0.36, width: float = 0.12) -> SceneObject:
    col, vis = _box(cid, (width / 2, length / 2, KIT_THICKNESS / 2), (0.32, 0.32, 0.36, 1.0))  # long axis: y
    body = _body(cid, col, vis, 0.0, (pos[0], pos[1], KIT_THICKNESS / 2), yaw)
    return SceneObject("kit", "kit", body, cid, (width, length, KIT_THICKNESS), None, symmetry=2, movable=False)


def make_slot(cid, shape: str, pos, yaw: float) -> SceneObject:
    """A visual-only silhouette of `shape` on the kit (no collision): where the matching part goes."""
    thin = 0.0008
    if shape == "disc":
        vis = p.createVisualShape(p.GEOM_CYLINDER, radius=0.024, length=thin, rgbaColor=DARK, physicsClientId=cid)
        size = (0.048, 0.048, thin)
    else:
        boxes = PART_BOXES[shape]
        halves = [(h[0] + 0.002, h[1] + 0.002, thin / 2) for h, _ in boxes]
        offs = [(c[0], c[1], 0.0) for _, c in boxes]
        vis = p.createVisualShapeArray(
            [p.GEOM_BOX] * len(boxes), halfExtents=halves, visualFramePositions=offs, rgbaColors=[DARK] * len(boxes),
            physicsClientId=cid,
        )
        size = _extent(boxes)
    orn = p.getQuaternionFromEuler([0, 0, yaw])
    body = p.createMultiBody(0, -1, vis, basePosition=(pos[0], pos[1], KIT_THICKNESS + thin / 2), baseOrientation=orn,
                             physicsClientId=cid)
    return SceneObject(f"{shape}_slot", "slot", body, cid, size, None, symmetry=PART_SYMMETRY[shape], movable=False,
                       extra={"shape": shape})


def _extent(boxes) -> tuple[float, float, float]:
    lo = np.min([np.subtract(c, h) for h, c in boxes], axis=0)
    hi = np.max([np.add(c, h) for h, c in boxes], axis=0)
    return tuple(float(v) for v in hi - lo)


def footprint_radius(obj: SceneObject) -> float:
    """Radius of a circle around the object's origin that covers its footprint (for collision-free sampling)."""
    if obj.kind in PART_BOXES:
        return max(math.hypot(abs(c[0]) + h[0], abs(c[1]) + h[1]) for h, c in PART_BOXES[obj.kind])
    return math.hypot(obj.size[0], obj.size[1]) / 2


def step_object_vector(objects: dict[str, SceneObject], step: PlanStep) -> np.ndarray:
    """float32 [14]: the step's first and last object (the same object for one-argument skills), each as x, y, z,
    yaw, size x/y/z in the base frame, read now. Recorded by oracle rollouts when a step begins and given to the
    VLA's object token (`keystone_vla.vla.object_token`); on a robot the same numbers come from the scene graph."""
    out = []
    for name in (step.args[0], step.args[-1]):
        obj = objects[name]
        out.extend([*obj.position(), obj.yaw(), *obj.size])
    return np.asarray(out, np.float32)
