"""What every task shares: the `Task` interface, `TaskInstance`, instruction templates with seen/unseen splits, and
collision-free layout sampling.

A task is one file in this folder with its scene sampling, instruction templates, plan, and success check; the scripted
oracle (`keystone_vla.sim.oracle`) executes any task's plan, so tasks never contain motion code.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from keystone_vla.errors import SimError, unknown_choice
from keystone_vla.types import Plan, PlanStep
from keystone_vla.vocab import OBJECT_SYNONYMS, SPLITS

from ..geometry import yaw_error
from ..objects import SceneObject, footprint_radius
from ..world import SimWorld

POS_TOL = 0.01  # Ravens-style success tolerances
YAW_TOL = math.radians(15)
SLOT_Z_TOL = 0.003  # a part in its kit pocket rests on the floor within this
REGION = ((0.34, 0.64), (-0.22, 0.22))  # where objects are placed (x, y ranges, base frame)


@dataclass(frozen=True)
class Template:
    text: str
    split: str  # "seen" or "unseen"


@dataclass
class TaskInstance:
    """One sampled episode of a task: the instruction, its plan, and the ids the success check needs."""

    task: str
    split: str
    seed: int
    instruction: str
    plan: Plan
    targets: dict[str, str] = field(default_factory=dict)


def plan_step(call: str, text: str) -> PlanStep:
    return PlanStep.parse(call, text)


class Task(ABC):
    """A table-top task. Subclasses set `name`, `templates`, `max_steps` and implement `build` and `success`."""

    name: str = ""
    templates: tuple[Template, ...] = ()
    max_steps: int = 150

    def reset(self, world: SimWorld, seed: int, split: str = "seen", instruction: str | None = None) -> TaskInstance:
        if split not in SPLITS:
            raise unknown_choice("split", split, SPLITS)
        rng = np.random.default_rng(seed)
        world.reset_scene()
        inst = self.build(world, rng, split)
        inst.seed = seed
        if instruction is not None:
            inst.instruction = instruction
        world.settle(60)
        return inst

    def template(self, rng: np.random.Generator, split: str) -> str:
        choices = [t.text for t in self.templates if t.split == split]
        return choices[int(rng.integers(len(choices)))]

    @abstractmethod
    def build(self, world: SimWorld, rng: np.random.Generator, split: str) -> TaskInstance:
        """Add the scene's objects to `world` and return the episode's instruction and plan."""

    @abstractmethod
    def success(self, world: SimWorld, inst: TaskInstance) -> bool:
        """Whether the episode's goal holds now (privileged state)."""

    def step_success(self, world: SimWorld, inst: TaskInstance, step: PlanStep) -> bool:
        """Whether one plan step's effect holds now (used to advance learned policies through a plan)."""
        return step_effect_holds(world, step)

    def vocabulary(self) -> set[str]:
        words: set[str] = set()
        for t in self.templates:
            words.update(w.strip(",.:;") for w in t.text.split() if not w.startswith("{"))
        return words


# -- helpers shared by tasks --------------------------------------------------------------------------------------------
def noun(rng: np.random.Generator, kind: str) -> str:
    syn = OBJECT_SYNONYMS.get(kind, (kind,))
    return syn[int(rng.integers(len(syn)))]


def sample_positions(rng: np.random.Generator, radii: list[float], margin: float = 0.02, tries: int = 2000,
                     region=REGION) -> list[np.ndarray]:
    """Rejection-sample xy positions so footprints (circles of `radii`) don't overlap."""
    (x0, x1), (y0, y1) = region
    for _ in range(tries):
        pts: list[np.ndarray] = []
        for r in radii:
            for _ in range(200):
                xy = np.array([rng.uniform(x0 + r * 0.5, x1 - r * 0.5), rng.uniform(y0 + r * 0.5, y1 - r * 0.5)])
                if all(np.linalg.norm(xy - q) > r + rq + margin for q, rq in zip(pts, radii)):
                    pts.append(xy)
                    break
            else:
                break
        if len(pts) == len(radii):
            return pts
    raise SimError("could not place the scene's objects without overlap; the scene is too crowded")


def stacked_on(top: SceneObject, bottom: SceneObject, pos_tol: float = POS_TOL) -> bool:
    tp, bp = top.position(), bottom.position()
    height_ok = abs((tp[2] - bp[2]) - (top.size[2] + bottom.size[2]) / 2) < 0.008
    return bool(np.linalg.norm(tp[:2] - bp[:2]) < pos_tol and height_ok
                and yaw_error(top.yaw(), bottom.yaw(), top.symmetry) < YAW_TOL)


def inside(obj: SceneObject, container: SceneObject) -> bool:
    """Object rests within the container's inner area (1 cm margin from the walls)."""
    op, cp = obj.position(), container.position()
    d = op[:2] - cp[:2]
    c, s = math.cos(-container.yaw()), math.sin(-container.yaw())
    local = np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])
    half = container.extra["inner_half"] - POS_TOL
    return bool(np.all(np.abs(local) < half) and op[2] < container.size[2] + obj.size[2])


def at_slot(part: SceneObject, slot: SceneObject) -> bool:
    """The part rests in its kit pocket: origin within POS_TOL of the slot's in xy, yaw within YAW_TOL (modulo the
    part's symmetry), and its height that of a part lying on the pocket floor, not held or propped above it (a part
    on a rim sits the pocket's depth higher)."""
    pp, sp = part.position(), slot.position()
    floor = sp[2] - slot.size[2] / 2  # a slot's z is the middle of its pocket
    resting = abs(pp[2] - (floor + part.size[2] / 2)) < SLOT_Z_TOL
    return bool(np.linalg.norm(pp[:2] - sp[:2]) < POS_TOL and yaw_error(part.yaw(), slot.yaw(), part.symmetry) < YAW_TOL
                and resting)


def step_effect_holds(world: SimWorld, step: PlanStep) -> bool:
    """Generic per-step check: `pick` = object lifted; placing skills = the relation holds."""
    objs = world.objects
    obj = objs.get(step.args[0])
    if obj is None:
        return False
    if step.skill == "pick":
        return bool(obj.position()[2] > obj.size[2] / 2 + 0.03)
    target = objs.get(step.args[1])
    if target is None:
        return False
    if step.skill == "place_on":
        return stacked_on(obj, target)
    if step.skill == "place_in":
        if target.kind == "slot":
            return at_slot(obj, target)
        return inside(obj, target) if "inner_half" in target.extra else False
    if step.skill == "insert":
        from .insert import peg_inserted

        return peg_inserted(obj, target)
    return False


__all__ = ["Task", "TaskInstance", "Template", "plan_step", "noun", "sample_positions", "stacked_on", "inside", "at_slot",
           "footprint_radius", "POS_TOL", "YAW_TOL", "SLOT_Z_TOL", "Plan"]
