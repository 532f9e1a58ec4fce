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
DISC_RADIUS = 0.022

# The kit is a static tray: a base plate whose top is the pocket floor (at the height the earlier flat kit's top had,
# so parts rest where policies trained on it release them), and a top layer KIT_DEPTH thick with one pocket per part
# cut through it. A pocket is its part's outline grown by KIT_CLEARANCE on every side (the disc's is a 16-sided
# polygon), so a part lowered within that clearance, yaw aligned, drops in; rims are what a front camera sees in depth.
KIT_THICKNESS = 0.01  # base plate: its top is the pocket floor
KIT_DEPTH = 0.008  # pocket depth: the tray's top face stands this far above the floor
KIT_HEIGHT = KIT_THICKNESS + KIT_DEPTH
KIT_CLEARANCE = 0.004
KIT_SIZE = (0.13, 0.36)  # across (x) and along (y, the long axis) the tray, in its own frame
KIT_PITCH = 0.11  # pocket spacing along the tray; each pocket's footprint is centred on its station
KIT_COLOUR = (0.32, 0.32, 0.36, 1.0)
_COLLAR = 0.007  # tray material built in each pocket's own frame around it (the rest is a coarser grid, see below)
_GRID = 0.004  # cell size of the tray's top layer away from the pockets; _COLLAR must exceed _GRID * sqrt(2)
_DISC_SIDES = 16


@dataclass(frozen=True)
class Pocket:
    """One pocket of a kit tray: its part shape and its yaw relative to the tray."""

    shape: str
    yaw: float = 0.0


def pocket_rects(shape: str) -> list[tuple[float, float, float, float]]:
    """A box-built part's pocket in the part frame as (x0, x1, y0, y1) rectangles: the part's boxes grown by
    KIT_CLEARANCE (growing each box grows their union). Not defined for the disc, whose pocket is a polygon."""
    c = KIT_CLEARANCE
    return [(cx - hx - c, cx + hx + c, cy - hy - c, cy + hy + c) for (hx, hy, _), (cx, cy, _) in PART_BOXES[shape]]


def _pocket_outline(shape: str) -> np.ndarray:
    """float [K, 2]: the pocket's corner points in the part frame (the disc's polygon circumscribes its circle)."""
    if shape == "disc":
        r = (DISC_RADIUS + KIT_CLEARANCE) / math.cos(math.pi / _DISC_SIDES)
        a = (np.arange(_DISC_SIDES) + 0.5) * 2 * math.pi / _DISC_SIDES
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    return np.array([(x, y) for x0, x1, y0, y1 in pocket_rects(shape) for x in (x0, x1) for y in (y0, y1)])


def _pocket_distance(shape: str, xy: np.ndarray) -> np.ndarray:
    """Distance (m, 0 inside) from points xy [N, 2] in the part frame to the pocket (the disc's: to its polygon's
    circumscribed circle, so never less than the true distance)."""
    if shape == "disc":
        return np.maximum(np.linalg.norm(xy, axis=1) - (DISC_RADIUS + KIT_CLEARANCE) / math.cos(math.pi / _DISC_SIDES), 0)
    out = np.full(len(xy), np.inf)
    for x0, x1, y0, y1 in pocket_rects(shape):
        dx = np.maximum(np.maximum(x0 - xy[:, 0], xy[:, 0] - x1), 0)
        dy = np.maximum(np.maximum(y0 - xy[:, 1], xy[:, 1] - y1), 0)
        out = np.minimum(out, np.hypot(dx, dy))
    return out


def _rot(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s], [s, c]])


def kit_stations(pockets: list[Pocket]) -> list[np.ndarray]:
    """Where each pocket's part origin sits in the tray frame: pockets are spaced KIT_PITCH apart along the tray's y
    axis, each placed so its rotated footprint is centred on its station (the part origin is not the footprint's
    centre for every shape)."""
    out = []
    for i, pocket in enumerate(pockets):
        corners = _pocket_outline(pocket.shape) @ _rot(pocket.yaw).T
        centre = (corners.min(axis=0) + corners.max(axis=0)) / 2
        out.append(np.array([0.0, (i - (len(pockets) - 1) / 2) * KIT_PITCH]) - centre)
    return out


def _grid_boxes(free: np.ndarray, x0: float, y0: float, cell: tuple[float, float]) -> list[tuple[float, float, float, float]]:
    """Merge a boolean cell grid [nx, ny] (True = material) into few rectangles (x0, x1, y0, y1): runs along y,
    then identical runs in neighbouring x columns joined."""
    runs: dict[tuple[int, int], int] = {}  # (j0, j1) -> first column of the run now open
    out = []

    def close(j0: int, j1: int, i0: int, i1: int) -> None:
        out.append((x0 + i0 * cell[0], x0 + i1 * cell[0], y0 + j0 * cell[1], y0 + j1 * cell[1]))

    for i in range(free.shape[0] + 1):
        col = free[i] if i < free.shape[0] else np.zeros(free.shape[1], bool)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], col.astype(np.int8), [0]])))
        now = set(zip(edges[::2].tolist(), edges[1::2].tolist()))
        for key in [k for k in runs if k not in now]:
            close(*key, runs.pop(key), i)
        for key in now:
            runs.setdefault(key, i)
    return out


def _collar_boxes(shape: str) -> list[tuple[tuple[float, float], tuple[float, float], float]]:
    """Top-layer material around one pocket in the part frame: [(half extents xy, centre xy, yaw)]. It reaches
    _COLLAR beyond the pocket everywhere (each of the pocket's rectangles grown by _COLLAR, less the pocket), so the
    coarse grid that fills the rest of the tray may stop short of it, and no further, so it stays inside the tray."""
    if shape == "disc":
        r = DISC_RADIUS + KIT_CLEARANCE
        half_side = (r + _COLLAR) * math.tan(math.pi / _DISC_SIDES)
        out = []
        for k in range(_DISC_SIDES):
            a = k * 2 * math.pi / _DISC_SIDES
            out.append(((_COLLAR / 2, half_side), ((r + _COLLAR / 2) * math.cos(a), (r + _COLLAR / 2) * math.sin(a)), a))
        return out
    rects = pocket_rects(shape)
    grown = [(x0 - _COLLAR, x1 + _COLLAR, y0 - _COLLAR, y1 + _COLLAR) for x0, x1, y0, y1 in rects]
    xs = sorted({round(v, 9) for r in rects + grown for v in r[:2]})  # rounded: no sliver cells between near-equal edges
    ys = sorted({round(v, 9) for r in rects + grown for v in r[2:]})
    out = []
    for i in range(len(xs) - 1):
        for j in range(len(ys) - 1):
            cx, cy = (xs[i] + xs[i + 1]) / 2, (ys[j] + ys[j + 1]) / 2
            if any(x0 < cx < x1 and y0 < cy < y1 for x0, x1, y0, y1 in grown) and not any(
                    x0 < cx < x1 and y0 < cy < y1 for x0, x1, y0, y1 in rects):
                out.append((((xs[i + 1] - xs[i]) / 2, (ys[j + 1] - ys[j]) / 2), (cx, cy), 0.0))
    return out


def kit_tray_boxes(pockets: list[Pocket]) -> list[tuple[tuple[float, float, float], tuple[float, float, float], float]]:
    """The tray as boxes in its own frame (origin at the tray's centre, half way up): [(half extents, centre, yaw)].

    The base plate is one box. The top layer is each pocket's collar (exact, in the pocket's frame) plus a grid of
    _GRID cells in the tray frame that keeps every cell clear of all pockets; the cells it leaves out lie within
    _GRID * sqrt(2) of a pocket, which the collars cover."""
    width, length = KIT_SIZE
    z_plate = KIT_THICKNESS / 2 - KIT_HEIGHT / 2
    z_top = KIT_THICKNESS + KIT_DEPTH / 2 - KIT_HEIGHT / 2
    boxes = [((width / 2, length / 2, KIT_THICKNESS / 2), (0.0, 0.0, z_plate), 0.0)]
    nx, ny = math.ceil(width / _GRID - 1e-9), math.ceil(length / _GRID - 1e-9)  # cells of at most _GRID that tile it
    cell = (width / nx, length / ny)
    gx, gy = np.meshgrid((np.arange(nx) + 0.5) * cell[0] - width / 2, (np.arange(ny) + 0.5) * cell[1] - length / 2,
                         indexing="ij")
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1)
    free = np.ones(len(centres), bool)
    for pocket, station in zip(pockets, kit_stations(pockets)):
        local = (centres - station) @ _rot(pocket.yaw)  # tray frame -> pocket frame
        free &= _pocket_distance(pocket.shape, local) > math.hypot(*cell) / 2 + 1e-4
        rot = _rot(pocket.yaw)
        for (hx, hy), c, yaw in _collar_boxes(pocket.shape):
            cx, cy = station + rot @ np.asarray(c)
            boxes.append(((hx, hy, KIT_DEPTH / 2), (float(cx), float(cy), z_top), pocket.yaw + yaw))
    for x0, x1, y0, y1 in _grid_boxes(free.reshape(nx, ny), -width / 2, -length / 2, cell):
        boxes.append((((x1 - x0) / 2, (y1 - y0) / 2, KIT_DEPTH / 2), ((x0 + x1) / 2, (y0 + y1) / 2, z_top), 0.0))
    return boxes


def make_part(cid, shape: str, colour: str, pos, yaw: float, z: float = 0.0) -> SceneObject:
    if shape == "disc":
        col = p.createCollisionShape(p.GEOM_CYLINDER, radius=DISC_RADIUS, height=PART_HEIGHT, physicsClientId=cid)
        vis = p.createVisualShape(
            p.GEOM_CYLINDER, radius=DISC_RADIUS, length=PART_HEIGHT, rgbaColor=COLOURS[colour], physicsClientId=cid
        )
        body = _body(cid, col, vis, 0.05, (pos[0], pos[1], z + PART_HEIGHT / 2), yaw)
        size = (2 * DISC_RADIUS, 2 * DISC_RADIUS, PART_HEIGHT)
    else:
        body = _compound(cid, PART_BOXES[shape], COLOURS[colour], 0.05, (pos[0], pos[1], z + PART_HEIGHT / 2), yaw)
        size = _extent(PART_BOXES[shape])
    return SceneObject(f"{colour}_{shape}", shape, body, cid, size, colour, symmetry=PART_SYMMETRY[shape])


def make_kit(cid, pos, yaw: float, pockets: list[Pocket]) -> tuple[SceneObject, list[SceneObject]]:
    """The static kit tray with `pockets` (in order along its +y axis) and one slot object per pocket.

    Returns (kit, slots): the kit `kit` (long axis: its y), and one `{shape}_slot` per pocket (`make_slot`): a part
    rests in its pocket when its origin is at the slot's xy, yaw aligned, on the pocket floor."""
    boxes = kit_tray_boxes(pockets)
    # PyBullet keeps at most 16 shapes of a shape array: the tray's boxes go 16 to a fixed link (the base holds the
    # first 16)
    chunks = [boxes[i:i + 16] for i in range(0, len(boxes), 16)]
    cols, visuals = [], []
    for chunk in chunks:
        halves, centres = [b[0] for b in chunk], [b[1] for b in chunk]
        orns = [p.getQuaternionFromEuler([0, 0, b[2]]) for b in chunk]
        cols.append(p.createCollisionShapeArray([p.GEOM_BOX] * len(chunk), halfExtents=halves,
                                                collisionFramePositions=centres, collisionFrameOrientations=orns,
                                                physicsClientId=cid))
        visuals.append(p.createVisualShapeArray([p.GEOM_BOX] * len(chunk), halfExtents=halves,
                                                visualFramePositions=centres, visualFrameOrientations=orns,
                                                rgbaColors=[KIT_COLOUR] * len(chunk), physicsClientId=cid))
    links = len(cols) - 1
    body = p.createMultiBody(
        0, cols[0], visuals[0], basePosition=(pos[0], pos[1], KIT_HEIGHT / 2),
        baseOrientation=p.getQuaternionFromEuler([0, 0, yaw]), linkMasses=[0] * links,
        linkCollisionShapeIndices=cols[1:], linkVisualShapeIndices=visuals[1:], linkPositions=[(0, 0, 0)] * links,
        linkOrientations=[(0, 0, 0, 1)] * links, linkInertialFramePositions=[(0, 0, 0)] * links,
        linkInertialFrameOrientations=[(0, 0, 0, 1)] * links, linkParentIndices=[0] * links,
        linkJointTypes=[p.JOINT_FIXED] * links, linkJointAxis=[(0, 0, 1)] * links, physicsClientId=cid)
    for link in range(-1, links):
        p.changeDynamics(body, link, lateralFriction=1.0, spinningFriction=0.002, physicsClientId=cid)
    kit = SceneObject("kit", "kit", body, cid, (*KIT_SIZE, KIT_HEIGHT), None, symmetry=2, movable=False)
    rot = _rot(yaw)
    slots = [make_slot(cid, pocket.shape, np.asarray(pos[:2]) + rot @ station, yaw + pocket.yaw)
             for pocket, station in zip(pockets, kit_stations(pockets))]
    return kit, slots


def make_slot(cid, shape: str, pos, yaw: float) -> SceneObject:
    """The marker of one kit pocket: a body without collision, drawn as a dark inset of the pocket's outline on its
    floor. Its xy and yaw are where the part's origin rests in the pocket; like every object's, its z is the middle
    of its box (the pocket: floor at KIT_THICKNESS, KIT_DEPTH deep). The pocket itself is part of the kit tray
    (`make_kit`)."""
    thin = 0.0008
    c = KIT_CLEARANCE
    if shape == "disc":
        vis = p.createVisualShape(p.GEOM_CYLINDER, radius=DISC_RADIUS + c, length=thin, rgbaColor=DARK,
                                  visualFramePosition=(0, 0, thin / 2 - KIT_DEPTH / 2), physicsClientId=cid)
        size = (2 * (DISC_RADIUS + c), 2 * (DISC_RADIUS + c), KIT_DEPTH)
    else:
        boxes = PART_BOXES[shape]
        halves = [(h[0] + c, h[1] + c, thin / 2) for h, _ in boxes]
        offs = [(ctr[0], ctr[1], thin / 2 - KIT_DEPTH / 2) for _, ctr in boxes]
        vis = p.createVisualShapeArray(
            [p.GEOM_BOX] * len(boxes), halfExtents=halves, visualFramePositions=offs, rgbaColors=[DARK] * len(boxes),
            physicsClientId=cid,
        )
        ext = _extent(boxes)
        size = (ext[0] + 2 * c, ext[1] + 2 * c, KIT_DEPTH)
    orn = p.getQuaternionFromEuler([0, 0, yaw])
    body = p.createMultiBody(0, -1, vis, basePosition=(pos[0], pos[1], KIT_THICKNESS + KIT_DEPTH / 2), baseOrientation=orn,
                             physicsClientId=cid)
    return SceneObject(f"{shape}_slot", "slot", body, cid, size, None, symmetry=PART_SYMMETRY[shape], movable=False,
                       extra={"shape": shape})


def _extent(boxes) -> tuple[float, float, float]:
    lo = np.min([np.subtract(c, h) for h, c in boxes], axis=0)
    hi = np.max([np.add(c, h) for h, c in boxes], axis=0)
    return tuple(float(v) for v in hi - lo)


def part_footprint_radius(shape: str) -> float:
    """Radius of a circle around a kit part's origin that covers its footprint at any yaw."""
    if shape == "disc":
        return DISC_RADIUS
    return max(math.hypot(abs(c[0]) + h[0], abs(c[1]) + h[1]) for h, c in PART_BOXES[shape])


def footprint_radius(obj: SceneObject) -> float:
    """Radius of a circle around the object's origin that covers its footprint (for collision-free sampling)."""
    if obj.kind in PART_BOXES:
        return part_footprint_radius(obj.kind)
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
