"""The reference policy that needs no training: the scripted oracle.

`OraclePolicy` wraps the simulator's scripted expert (`keystone_vla.sim.oracle.OracleExpert`), which reads
privileged world state; `run_episode` binds it to each episode's world and task instance before the first
`act`. It is the upper bound every learned policy is compared against.

It may never be used on a real robot: it reads simulator state, which no cell has.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError
from keystone_vla.types import Observation, Plan


class OraclePolicy:
    """The sim's scripted expert behind the Policy protocol (sim only: it reads the world, not the images)."""

    name = "oracle"
    needs_images = False

    def __init__(self) -> None:
        self._expert: Any = None
        self.plan: Plan | None = None

    def bind(self, world: Any, instance: Any) -> None:
        """Attach to an episode: `world` is a SimWorld, `instance` its TaskInstance (plan = what to execute)."""
        from keystone_vla.sim.oracle import OracleExpert

        self._expert = OracleExpert(world, instance)
        self.plan = instance.plan

    def reset(self) -> None:
        """Nothing to forget: `bind` builds a fresh expert for every episode."""

    @property
    def plan_step(self) -> int:
        if self._expert is None:
            return 0
        return min(self._expert.plan_step, max(len(self._expert.steps) - 1, 0))

    def act(self, observation: Observation) -> np.ndarray:
        if self._expert is None:
            raise ConfigError("OraclePolicy is not bound to a simulator world; it runs only inside run_episode / "
                              "keystone eval (it reads privileged sim state)")
        return np.asarray(self._expert.act(), dtype=np.float32)
