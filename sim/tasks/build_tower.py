"""`build_tower` (multi-step): build a tower in a named colour order; every episode records its step-by-step plan."""

from __future__ import annotations

import numpy as np

from keystone_vla.types import Plan
from keystone_vla.vocab import colours_for

from ..objects import make_block
from ..world import SimWorld
from .base import Task, TaskInstance, Template, plan_step, sample_positions, stacked_on


class BuildTowerTask(Task):
    name = "build_tower"
    max_steps = 300
    templates = (
        Template("build a tower: {a} at the bottom, then {b}, then {c}", "seen"),
        Template("stack the blocks with {a} at the bottom, {b} in the middle and {c} on top", "seen"),
        Template("make a tower of {a}, {b} and {c}, from the bottom up", "seen"),
        Template("build a tower with {c} on top of {b} on top of {a}", "unseen"),
        Template("assemble a tower: first {a}, next {b}, last {c}", "unseen"),
    )

    def build(self, world: SimWorld, rng: np.random.Generator, split: str) -> TaskInstance:
        n_blocks = 3 + int(rng.integers(2))  # sometimes a distractor block
        colours = rng.choice(colours_for(split), size=n_blocks, replace=False)
        pts = sample_positions(rng, [0.035] * n_blocks, margin=0.03)
        blocks = [world.add_object(make_block(world.client, str(c), xy, rng.uniform(-0.6, 0.6)))
                  for c, xy in zip(colours, pts)]
        order = blocks[:3]
        instruction = self.template(rng, split).format(a=order[0].colour, b=order[1].colour, c=order[2].colour)
        steps = []
        for below, above in zip(order[:-1], order[1:]):
            steps.append(plan_step(f"pick({above.name})", f"pick up the {above.label}"))
            steps.append(plan_step(f"place_on({above.name}, {below.name})", f"place the {above.label} on the {below.label}"))
        return TaskInstance(self.name, split, 0, instruction, Plan(instruction, tuple(steps)),
                            {"order": ",".join(b.name for b in order)})

    def success(self, world: SimWorld, inst: TaskInstance) -> bool:
        names = inst.targets["order"].split(",")
        objs = [world.objects[n] for n in names]
        return all(stacked_on(above, below) for below, above in zip(objs[:-1], objs[1:]))
