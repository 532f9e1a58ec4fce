"""Closed-loop use of a `VLAPolicy` in the simulator: plan once, then execute action chunks step by step.

`ClosedLoopVLA` implements the episode-policy protocol (`reset`, `act`, optional `bind`): at the first tick
it plans over the scene's object ids (the ids perception would report; `bind` reads them from the world), then
for each plan step it predicts a chunk, executes its H actions, and moves to the next step when the model's
step-done probability says the step ends within that chunk. `evaluate_in_sim` runs a few episodes per task
with `keystone_vla.sim.rollout.run_episode`; training uses it for periodic closed-loop success.

This is the training-time monitor, not the production runtime (`keystone_vla.policies` owns queues,
smoothing and asynchronous inference). It must never read privileged sim state beyond object ids and, for
models with an object token, the step's object poses when the step begins (what the scene graph reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from keystone_vla.types import EpisodeSpec, Observation, Plan
from keystone_vla.vla.policy import VLAPolicy

EVAL_SEED_BASE = 1_000_000  # far from collection seeds, so closed-loop episodes are unseen scenes


class ClosedLoopVLA:
    """Episode policy around a `VLAPolicy` (see module docstring)."""

    def __init__(self, policy: VLAPolicy, done_threshold: float = 0.5) -> None:
        self.policy = policy
        self.done_threshold = done_threshold
        self.objects: list[str] | None = None
        self.world: Any = None
        self.reset()

    def bind(self, world: Any, instance: Any = None) -> None:
        self.objects = list(world.objects)
        self.world = world

    def reset(self) -> None:
        self.plan: Plan | None = None
        self.plan_step = 0
        self._queue: list[np.ndarray] = []
        self._step_done = False
        self._step_objects: tuple[int, np.ndarray] | None = None

    def act(self, observation: Observation) -> np.ndarray:
        if self.plan is None:
            self.plan = self.policy.plan(observation.instruction, observation, objects=self.objects)
        if not self._queue:
            if self._step_done and self.plan_step + 1 < len(self.plan.steps):
                self.plan_step += 1
            text = self.plan.steps[self.plan_step].text if self.plan.steps else observation.instruction
            chunk = self.policy.predict_chunk(observation, text, self._located())
            self._queue = list(chunk.actions)
            self._step_done = chunk.step_done > self.done_threshold
        return self._queue.pop(0)


    def _located(self) -> np.ndarray | None:
        if not (self.policy.config.object_token and self.plan and self.plan.steps and self.world is not None):
            return None
        if self._step_objects is None or self._step_objects[0] != self.plan_step:
            from keystone_vla.sim.objects import step_object_vector

            self._step_objects = (self.plan_step, step_object_vector(self.world.objects,
                                                                     self.plan.steps[self.plan_step]))
        return self._step_objects[1]


def evaluate_in_sim(policy: VLAPolicy, tasks: Sequence[str], episodes: int = 3, split: str = "seen",
                    seed: int = EVAL_SEED_BASE, arm: str = "panda") -> dict[str, Any]:
    """Success rate per task over `episodes` simulated episodes each (and overall)."""
    from keystone_vla.sim.rollout import run_episode

    cfg = policy.config
    per_task: dict[str, float] = {}
    total = 0
    for task in tasks:
        wins = 0
        for i in range(episodes):
            rec = run_episode(EpisodeSpec(task, seed + i, split, arm), policy=ClosedLoopVLA(policy),
                              cameras=cfg.cameras, image_size=cfg.image_size, record=False)
            wins += int(rec.success)
        per_task[task] = wins / max(1, episodes)
        total += wins
    return {"success_rate": total / max(1, episodes * len(tasks)), "tasks": per_task, "split": split}
