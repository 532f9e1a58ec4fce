"""`pick_place`: put the {colour} {object} in/on the {colour} {container}, with distractors."""

from __future__ import annotations

import numpy as np

from keystone_vla.types import Plan
from keystone_vla.vocab import colours_for

from ..objects import make_block, make_container, make_cylinder
from ..world import SimWorld
from .base import Task, TaskInstance, Template, inside, noun, plan_step, sample_positions


class PickPlaceTask(Task):
    name = "pick_place"
    max_steps = 120
    templates = (
        Template("put the {obj} {prep} the {box}", "seen"),
        Template("place the {obj} {prep} the {box}", "seen"),
        Template("move the {obj} {prep} the {box}", "seen"),
        Template("pick up the {obj} and drop it {prep} the {box}", "unseen"),
        Template("transfer the {obj} {prep} the {box}", "unseen"),
    )

    def build(self, world: SimWorld, rng: np.random.Generator, split: str) -> TaskInstance:
        colours = list(rng.choice(colours_for(split), size=4, replace=False))
        kind = ("block", "cylinder")[int(rng.integers(2))]
        box_kind = ("bowl", "plate")[int(rng.integers(2))]
        pts = sample_positions(rng, [0.10, 0.035, 0.035], margin=0.03)
        cid = world.client
        box = world.add_object(make_container(cid, box_kind, str(colours[0]), pts[0], rng.uniform(-0.4, 0.4)))
        maker = make_block if kind == "block" else make_cylinder
        obj = world.add_object(maker(cid, str(colours[1]), pts[1], rng.uniform(-0.6, 0.6)))
        other_kind = ("block", "cylinder")[int(rng.integers(2))]
        other = make_block if other_kind == "block" else make_cylinder
        world.add_object(other(cid, str(colours[2]), pts[2], rng.uniform(-0.6, 0.6)))
        prep = "in" if box_kind == "bowl" else "on"
        instruction = self.template(rng, split).format(
            obj=f"{obj.colour} {noun(rng, kind)}", box=f"{box.colour} {noun(rng, box_kind)}", prep=prep)
        plan = Plan(instruction, (
            plan_step(f"pick({obj.name})", f"pick up the {obj.label}"),
            plan_step(f"place_in({obj.name}, {box.name})", f"put the {obj.label} {prep} the {box.label}"),
        ))
        return TaskInstance(self.name, split, 0, instruction, plan, {"obj": obj.name, "box": box.name})

    def success(self, world: SimWorld, inst: TaskInstance) -> bool:
        return inside(world.objects[inst.targets["obj"]], world.objects[inst.targets["box"]])
