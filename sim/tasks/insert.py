"""`insert`: insert the peg into the hole (square peg, 3 mm clearance per side, so yaw must be aligned)."""

from __future__ import annotations

import numpy as np

from keystone_vla.types import Plan
from keystone_vla.vocab import colours_for

from ..geometry import yaw_error
from ..objects import FIXTURE_HEIGHT, SceneObject, make_hole_fixture, make_peg
from ..world import SimWorld
from .base import YAW_TOL, Task, TaskInstance, Template, plan_step, sample_positions

INSERT_POS_TOL = 0.005  # tighter than 1 cm: the hole only admits 3 mm of play


def peg_inserted(peg: SceneObject, hole: SceneObject) -> bool:
    pp, hp = peg.position(), hole.position()
    bottom = pp[2] - peg.size[2] / 2
    return bool(np.linalg.norm(pp[:2] - hp[:2]) < INSERT_POS_TOL and bottom < FIXTURE_HEIGHT - 0.025
                and yaw_error(peg.yaw(), hole.yaw(), 4) < YAW_TOL)


class InsertTask(Task):
    name = "insert"
    max_steps = 180
    templates = (
        Template("insert the peg into the hole", "seen"),
        Template("put the peg in the hole", "seen"),
        Template("place the {colour} peg into the fixture", "seen"),
        Template("fit the peg into the socket", "unseen"),
        Template("push the {colour} pin into the hole", "unseen"),
    )

    def build(self, world: SimWorld, rng: np.random.Generator, split: str) -> TaskInstance:
        colour = str(rng.choice(colours_for(split)))
        pts = sample_positions(rng, [0.09, 0.03], margin=0.04)
        hole = world.add_object(make_hole_fixture(world.client, pts[0], rng.uniform(-0.5, 0.5)))
        peg = world.add_object(make_peg(world.client, colour, pts[1], rng.uniform(-0.6, 0.6)))
        instruction = self.template(rng, split).format(colour=colour)
        plan = Plan(instruction, (
            plan_step("pick(peg)", "pick up the peg"),
            plan_step("insert(peg, hole)", "insert the peg into the hole"),
        ))
        return TaskInstance(self.name, split, 0, instruction, plan, {"peg": peg.name, "hole": hole.name})

    def success(self, world: SimWorld, inst: TaskInstance) -> bool:
        return peg_inserted(world.objects[inst.targets["peg"]], world.objects[inst.targets["hole"]])
