"""Whether a plan step's effect holds, judged from scene-graph objects (what the robot sees), not the simulator.

A learned agent advances through its plan, retries and regrasps on these checks, so they read only
`DetectedObject`s (perception's, or the simulator's adapted to the same shape when a run is explicitly
privileged) and the gripper state. The simulator keeps its own, stricter success check for scoring.

Relations (tolerances are those of the simulator's tasks, Ravens-style; perception's mean position error on
static scenes is ~1 mm, well inside them):

- `pick(obj)`: the object is lifted (its centre more than `LIFT` above its resting height).
- `place_on(obj, target)`: stacked: xy within `POS_TOL`, heights adding up within `STACK_Z_TOL`, yaw within
  `YAW_TOL` modulo the object's symmetry.
- `place_in(obj, bowl | plate)`: inside the container's inner area (`CONTAINER_WALL` walls, `POS_TOL` margin).
- `place_in(part, slot)` / `insert(part, slot)`: at the pocket (xy, yaw) and resting on its floor (within
  `SLOT_HEIGHT_TOL`), not on its rim or held above it.
- `insert(peg, hole)`: centred within `INSERT_POS_TOL`, yaw aligned, its bottom below the fixture's rim.

This module must never import the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from keystone_vla.types import PlanStep
from keystone_vla.vocab import YAW_SYMMETRY

from .objects import DetectedObject

POS_TOL = 0.01
YAW_TOL = math.radians(15)
STACK_Z_TOL = 0.008
INSERT_POS_TOL = 0.005  # the hole admits 3 mm of play per side
INSERT_DEPTH = 0.025  # the peg's bottom at least this far below the fixture's rim
LIFT = 0.03
CONTAINER_WALL = 0.01  # bowls and plates: 1 cm walls (the container's inner area is its extent minus these)
#: a part in its pocket sits within this of the pocket floor plus its own half height; on the rim it sits the
#: pocket's 8 mm higher. Perception reads a part in a pocket ~3.5 mm high (it measures from the tray around it).
SLOT_HEIGHT_TOL = 0.006


def symmetry(obj: DetectedObject) -> int:
    """Yaw symmetry order of `obj` (0 round, 1 none; slots take their part shape's)."""
    kind = obj.detail if obj.shape == "slot" and obj.detail else obj.shape
    return YAW_SYMMETRY.get(kind, 1)


def yaw_error(a: float, b: float, order: int) -> float:
    """Smallest yaw difference modulo the symmetry `order` (0: round, always 0)."""
    if order == 0:
        return 0.0
    period = 2 * math.pi / order
    d = (a - b) % period
    return float(min(d, period - d))


def lifted(obj: DetectedObject) -> bool:
    return bool(obj.position[2] > obj.size[2] / 2 + LIFT)


def stacked_on(top: DetectedObject, bottom: DetectedObject) -> bool:
    dz = top.position[2] - bottom.position[2]
    return bool(np.linalg.norm(top.position[:2] - bottom.position[:2]) < POS_TOL
                and abs(dz - (top.size[2] + bottom.size[2]) / 2) < STACK_Z_TOL
                and yaw_error(top.yaw, bottom.yaw, symmetry(top)) < YAW_TOL)


def inside(obj: DetectedObject, container: DetectedObject) -> bool:
    d = obj.position[:2] - container.position[:2]
    c, s = math.cos(-container.yaw), math.sin(-container.yaw)
    local = np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])
    half = container.size[:2] / 2 - CONTAINER_WALL - POS_TOL
    return bool(np.all(np.abs(local) < half) and obj.position[2] < container.size[2] + obj.size[2])


def at_slot(part: DetectedObject, slot: DetectedObject) -> bool:
    floor = slot.position[2] - slot.size[2] / 2
    return bool(np.linalg.norm(part.position[:2] - slot.position[:2]) < POS_TOL
                and yaw_error(part.yaw, slot.yaw, symmetry(part)) < YAW_TOL
                and abs(part.position[2] - (floor + part.size[2] / 2)) < SLOT_HEIGHT_TOL)


def inserted(peg: DetectedObject, hole: DetectedObject) -> bool:
    bottom = peg.position[2] - peg.size[2] / 2
    rim = hole.position[2] + hole.size[2] / 2
    return bool(np.linalg.norm(peg.position[:2] - hole.position[:2]) < INSERT_POS_TOL
                and bottom < rim - INSERT_DEPTH and yaw_error(peg.yaw, hole.yaw, symmetry(peg)) < YAW_TOL)


def effect_holds(step: PlanStep, objects: Mapping[str, DetectedObject]) -> bool:
    """Whether `step`'s effect holds among `objects` (id -> object); False when an argument is not in the scene
    or the step is meaningless for the kinds it names (place a block *in* a block)."""
    obj = objects.get(step.args[0])
    if obj is None:
        return False
    if step.skill == "pick":
        return lifted(obj)
    target = objects.get(step.args[-1])
    if target is None or target is obj:
        return False
    if step.skill == "place_on":
        return stacked_on(obj, target)
    if target.shape == "slot":
        return at_slot(obj, target)
    if step.skill == "place_in":
        return inside(obj, target) if target.shape in ("bowl", "plate") else False
    if step.skill == "insert":
        return inserted(obj, target) if target.shape == "hole" else False
    return False
