"""Synthetic episodes for tests and benchmarks of the store and loaders (not for training).

Frames look like a flat-shaded rendered scene (a table gradient plus coloured squares that move a little each
step), so codec sizes are comparable with simulator frames; arrays follow the store schema exactly. Values
are deterministic in `seed` so tests can compare them with what comes back from disk.

This module must never be used to produce data presented as demonstrations.
"""

from __future__ import annotations

import numpy as np

from keystone_vla.datasets.writer import EpisodeData
from keystone_vla.types import Plan, PlanStep

_PLAN = Plan("put the red block on the blue block", (
    PlanStep.parse("pick(red_block)", "pick up the red block"),
    PlanStep.parse("place_on(red_block, blue_block)", "place it on the blue block"),
))


def synthetic_frames(rng: np.random.Generator, steps: int, size: int = 64) -> np.ndarray:
    """uint8 [steps, size, size, 3] frames of a simple scene with two moving squares."""
    yy = np.linspace(60, 140, size, dtype=np.float32)[:, None]
    base = np.zeros((size, size, 3), np.uint8)
    base[..., 0] = yy
    base[..., 1] = yy * 0.8
    base[..., 2] = 40
    frames = np.repeat(base[None], steps, axis=0)
    s = max(size // 8, 2)
    x0, y0 = rng.integers(0, size - s, 2)
    x1, y1 = rng.integers(0, size - s, 2)
    for t in range(steps):
        a = (int(x0 + t // 3) % (size - s), int(y0))
        b = (int(x1), int(y1 + t // 4) % (size - s))
        frames[t, a[1]:a[1] + s, a[0]:a[0] + s] = (220, 30, 30)
        frames[t, b[1]:b[1] + s, b[0]:b[0] + s] = (30, 60, 230)
    return frames


def synthetic_episode(seed: int, steps: int = 40, cameras: tuple[str, ...] = ("front",), size: int = 64,
                      task: str = "stack", split: str = "seen") -> EpisodeData:
    """One schema-complete episode with `steps` ticks at 10 Hz."""
    rng = np.random.default_rng(seed)
    state = np.cumsum(rng.normal(0, 0.02, (steps, 8)), axis=0).astype(np.float32)
    state[:, 7] = np.clip(1.0 - np.arange(steps) / steps, 0, 1)
    action = rng.normal(0, 0.01, (steps, 7)).astype(np.float32)
    action[:, 6] = (np.arange(steps) > steps // 2).astype(np.float32)
    return EpisodeData(
        task=task, instruction=_PLAN.instruction, plan=_PLAN.to_json(), split=split, success=True, seed=seed,
        robot="panda", source={"kind": "synthetic"}, state=state, action=action,
        timestamp=np.arange(steps, dtype=np.float64) / 10.0,
        images={cam: synthetic_frames(rng, steps, size) for cam in cameras},
        plan_step=(np.arange(steps) >= steps // 2).astype(np.int32),
        ee_pose=rng.normal(0, 0.1, (steps, 7)).astype(np.float32),
    )
