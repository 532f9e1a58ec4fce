"""`stack`: stack the {colour} block on the {colour} block (one distractor block)."""

from __future__ import annotations

import numpy as np

from keystone_vla.types import Plan
from keystone_vla.vocab import colours_for

from ..objects import make_block
from ..world import SimWorld
from .base import Task, TaskInstance, Template, noun, plan_step, sample_positions, stacked_on


class StackTask(Task):
    name = "stack"
    max_steps = 120
    templates = (
        Template("stack the {a} on the {b}", "seen"),
        Template("put the {a} on top of the {b}", "seen"),
        Template("place the {a} onto the {b}", "seen"),
        Template("set the {a} down on the {b}", "unseen"),
        Template("pile the {a} on the {b}", "unseen"),
    )

    def build(self, world: SimWorld, rng: np.random.Generator, split: str) -> TaskInstance:
        colours = rng.choice(colours_for(split), size=3, replace=False)
        pts = sample_positions(rng, [0.035] * 3, margin=0.03)
        blocks = [world.add_object(make_block(world.client, str(c), xy, rng.uniform(-0.6, 0.6)))
                  for c, xy in zip(colours, pts)]
        top, bottom = blocks[0], blocks[1]
        a = f"{top.colour} {noun(rng, 'block')}"
        b = f"{bottom.colour} {noun(rng, 'block')}"
        instruction = self.template(rng, split).format(a=a, b=b)
        plan = Plan(instruction, (
            plan_step(f"pick({top.name})", f"pick up the {top.label}"),
            plan_step(f"place_on({top.name}, {bottom.name})", f"place the {top.label} on the {bottom.label}"),
        ))
        return TaskInstance(self.name, split, 0, instruction, plan, {"top": top.name, "bottom": bottom.name})

    def success(self, world: SimWorld, inst: TaskInstance) -> bool:
        return stacked_on(world.objects[inst.targets["top"]], world.objects[inst.targets["bottom"]])
