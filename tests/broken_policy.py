"""A deliberately useless policy for testing harnesses: it rises and drifts sideways with the gripper open, so no
task can succeed. Importing this module registers it as ``--policy broken`` (tests/conftest.py does)."""

from __future__ import annotations

import numpy as np

from keystone_vla.policies.registry import POLICIES, register_policy
from keystone_vla.types import Observation, Plan


class BrokenPolicy:
    name = "broken"
    needs_images = False

    def __init__(self) -> None:
        self.plan: Plan | None = None

    def reset(self) -> None:
        pass

    def act(self, observation: Observation) -> np.ndarray:
        return np.array([0.0, 0.01, 0.01, 0.0, 0.0, 0.05, 0.0], dtype=np.float32)


if "broken" not in POLICIES:
    register_policy("broken")(lambda folder, agent, **runtime: BrokenPolicy())
