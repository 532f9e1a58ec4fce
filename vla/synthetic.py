"""A small in-memory dataset in the `EpisodeWindowDataset` sample format, for tests and benchmarks only.

Each sample shows one coloured square on a grey background; the action chunk moves toward the square
(position deltas proportional to its image offset) and the gripper closes for "pick" steps and opens for
"place" steps. So a model that reads the image and the step instruction can fit it, and one that ignores
either cannot: tests use it to check that training lowers the loss for real reasons.

This module must never be used to produce a shipped checkpoint (it is not robot data).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keystone_vla.vla.data import plan_json
from keystone_vla.vla.object_token import object_features

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 60, 230), "yellow": (240, 220, 30)}
TARGETS = ("bowl", "plate")


class SyntheticDataset:
    """`n` samples, deterministic in `seed`; indexable like a torch map-style dataset."""

    def __init__(self, n: int = 64, image_size: int = 32, chunk_size: int = 4, cameras: tuple[str, ...] = ("front",),
                 state_dim: int = 8, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.samples: list[dict[str, Any]] = []
        colours = list(COLOURS)
        for _ in range(n):
            colour = colours[int(rng.integers(len(colours)))]
            target = TARGETS[int(rng.integers(len(TARGETS)))]
            obj, goal = f"{colour}_block", f"{target}"
            calls = [("pick", (obj,)), ("place_in", (obj, goal))]
            texts = [f"pick up the {colour} block", f"place the {colour} block in the {target}"]
            instruction = f"put the {colour} block in the {target}"
            step = int(rng.integers(2))
            cx, cy = rng.uniform(0.2, 0.8, size=2)
            images = np.full((len(cameras), image_size, image_size, 3), 110, dtype=np.uint8)
            r = max(1, image_size // 8)
            px, py = int(cx * image_size), int(cy * image_size)
            images[:, max(0, py - r):py + r, max(0, px - r):px + r] = COLOURS[colour]
            state = rng.normal(size=state_dim).astype(np.float32)
            direction = np.array([cx - 0.5, cy - 0.5, 0.3 * state[0]], dtype=np.float32) * 4.0
            grip = 1.0 if step == 0 else -1.0
            actions = np.zeros((chunk_size, 7), dtype=np.float32)
            for h in range(chunk_size):
                actions[h, :3] = direction * (1.0 - h / (2 * chunk_size))
                actions[h, 6] = grip
            mask = np.ones(chunk_size, dtype=bool)
            # the square as the step's object, 0.3 m x (image offset) from a gripper at the origin
            obj_vec = [0.3 * (cx - 0.5), 0.3 * (cy - 0.5), 0.02, 0.0, 0.04, 0.04, 0.04]
            step_objects = np.asarray(obj_vec * 2 + [0, 0, 0.2, 1, 0, 0, 0], np.float32)
            self.samples.append({
                "object_features": object_features(step_objects, np.array([0, 0, 0.2, 1, 0, 0, 0], np.float32)),
                "images": images, "state": state, "actions": actions, "action_mask": mask,
                "instruction": instruction, "step_instruction": texts[step],
                "plan": plan_json(instruction, calls, texts), "task": "pick_place",
                "step_done": float(rng.random() < 0.2),
            })

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]
