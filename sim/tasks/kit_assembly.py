"""`kit_assembly`: place each part into its matching slot of a kit (3 parts; unseen shapes held out of training)."""

from __future__ import annotations

import math

import numpy as np

from keystone_vla.errors import SimError
from keystone_vla.types import Plan
from keystone_vla.vocab import SEEN_SHAPES, UNSEEN_SHAPES, colours_for

from ..objects import KIT_SIZE, Pocket, make_kit, make_part, part_footprint_radius
from ..world import SimWorld
from .base import Task, TaskInstance, Template, at_slot, plan_step, sample_positions

KIT_POS = ((0.38, 0.44), (-0.05, 0.05))


def _over_kit(xy: np.ndarray, radius: float, kit_xy: np.ndarray, kit_yaw: float, margin: float = 0.01) -> bool:
    """Whether a circle at `xy` comes within `margin` of the kit tray's footprint."""
    c, s = math.cos(kit_yaw), math.sin(kit_yaw)
    d = xy - kit_xy
    local = np.abs([c * d[0] + s * d[1], -s * d[0] + c * d[1]])
    gap = np.maximum(local - np.array(KIT_SIZE) / 2, 0.0)
    return bool(np.hypot(*gap) < radius + margin)


class KitAssemblyTask(Task):
    name = "kit_assembly"
    max_steps = 450
    templates = (
        Template("put each part into its matching slot in the kit", "seen"),
        Template("place the parts in the kit", "seen"),
        Template("assemble the kit", "seen"),
        Template("fill the kit with the matching parts", "unseen"),
        Template("put every piece in the slot with the same shape", "unseen"),
    )

    def build(self, world: SimWorld, rng: np.random.Generator, split: str) -> TaskInstance:
        if split == "seen":
            shapes = list(rng.choice(SEEN_SHAPES, size=3, replace=False))
        else:  # both held-out shapes plus one seen shape
            shapes = [*UNSEEN_SHAPES, str(rng.choice(SEEN_SHAPES))]
        rng.shuffle(shapes)
        colours = rng.choice(colours_for(split), size=3, replace=False)
        cid = world.client
        kit_xy = np.array([rng.uniform(*KIT_POS[0]), rng.uniform(*KIT_POS[1])])
        kit_yaw = rng.uniform(-0.15, 0.15)
        pockets = [Pocket(str(shape), rng.uniform(-0.3, 0.3)) for shape in shapes]  # in order along the kit's +y
        kit, slots = make_kit(cid, kit_xy, kit_yaw, pockets)
        world.add_object(kit)
        for slot in slots:
            world.add_object(slot)
        # parts go in a band in front of the kit (larger x), clear of the tray
        region = ((0.53, 0.65), (-0.23, 0.23))
        for _ in range(100):
            pts = sample_positions(rng, [0.06] * 3, margin=0.02, region=region)
            if not any(_over_kit(xy, part_footprint_radius(str(s)), kit_xy, kit_yaw) for s, xy in zip(shapes, pts)):
                break
        else:
            raise SimError("could not place the kit's parts clear of the tray")
        parts = [world.add_object(make_part(cid, str(s), str(c), xy, rng.uniform(-0.8, 0.8)))
                 for s, c, xy in zip(shapes, colours, pts)]
        instruction = self.template(rng, split)
        order = sorted(range(3), key=lambda i: -parts[i].position()[1])  # left to right as seen by the operator
        steps = []
        for i in order:
            part, slot = parts[i], slots[i]
            steps.append(plan_step(f"pick({part.name})", f"pick up the {part.label}"))
            steps.append(plan_step(f"place_in({part.name}, {slot.name})", f"put the {part.label} in the {slot.extra['shape']} slot"))
        return TaskInstance(self.name, split, 0, instruction, Plan(instruction, tuple(steps)),
                            {"pairs": ";".join(f"{parts[i].name}:{slots[i].name}" for i in range(3))})

    def success(self, world: SimWorld, inst: TaskInstance) -> bool:
        pairs = [pair.split(":") for pair in inst.targets["pairs"].split(";")]
        return all(at_slot(world.objects[a], world.objects[b]) for a, b in pairs)
