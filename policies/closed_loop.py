"""Closed-loop success of a `VLAPolicy` in the simulator, for the training-time monitor.

`evaluate_in_sim` runs a few seeded episodes per task with `keystone_vla.sim.rollout.run_episode` and the same
per-tick driver the evaluation harness and the ROS policy node use (`keystone_vla.policies.vla_agent.VLAAgent`:
plan, ground, step through the plan, object token located when each step begins), so the numbers training
prints are the numbers `keystone eval` would give for those seeds. An instruction the agent refuses counts
as a failure here. Seeds start at `EVAL_SEED_BASE`, far from collection seeds, so these are unseen scenes.

It lives in `policies`, not `vla`, because it needs the agent: `vla.train` never imports it and only calls the
monitor it is handed (`keystone train --eval-tasks` builds that callable from this function).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keystone_vla.errors import GroundingError
from keystone_vla.policies.vla_agent import VLAAgent
from keystone_vla.sim.rollout import run_episode
from keystone_vla.types import EpisodeSpec
from keystone_vla.vla.policy import VLAPolicy

EVAL_SEED_BASE = 1_000_000


def evaluate_in_sim(policy: VLAPolicy, tasks: Sequence[str], episodes: int = 3, split: str = "seen",
                    seed: int = EVAL_SEED_BASE, arm: str = "panda", max_steps: int | None = None) -> dict[str, Any]:
    """Success rate per task over `episodes` simulated episodes each (and overall)."""
    cfg = policy.config
    agent = VLAAgent(policy)
    per_task: dict[str, float] = {}
    total = refused = 0
    try:
        for task in tasks:
            wins = 0
            for i in range(episodes):
                try:
                    rec = run_episode(EpisodeSpec(task, seed + i, split, arm), policy=agent, cameras=cfg.cameras,
                                      image_size=cfg.image_size, record=False, max_steps=max_steps)
                except GroundingError:
                    refused += 1
                    continue
                wins += int(rec.success)
            per_task[task] = wins / max(1, episodes)
            total += wins
    finally:
        agent.close()
    return {"success_rate": total / max(1, episodes * len(tasks)), "tasks": per_task, "split": split,
            "refused": refused}
