"""DAgger data (Ross et al., 2011): let a learned policy drive, record what the scripted oracle would do there.

Why: a policy trained only on the oracle's clean paths is never shown a state off them. In that data every descent
starts exactly above the target, and a model trained on it alone was measured stopping 1-1.5 cm beside a stacking
or insertion goal and hovering there; DART noise (`--action-noise`) produced only ~2 mm corrective labels. Here the
*learner's own* errors create the states, and the oracle, which is a state-feedback controller on the commanded
pose (`keystone_vla.sim.oracle`), labels each of them with the motion that would recover. The shipped keystone-base
recipe does not use it: with the agent's still-hand release, a model trained on clean demonstrations alone runs
2 actions per chunk. It stays an option for other recipes and new tasks.

`LearnerMix` is an `keystone_vla.sim.rollout.Executor`: the episode alternates between segments driven by the
learner and segments driven by the oracle (segment lengths and the learner's share drawn from a seeded RNG), so
the learner's drift develops for up to a second and the oracle then brings the episode back; only successful
episodes are stored (`keystone data collect --learner CKPT`), so every label belongs to a step the oracle did
complete. The learner predicts with the oracle's current plan step and that step's objects (the same inputs
`VLAAgent` gives it), and replans every `n_action_steps` ticks (by default the checkpoint's
`VLAConfig.n_action_steps`), as in evaluation. `DaggerLearner` is the picklable factory the collector
(`keystone_vla.datasets.collect.LearnerFactory`) sends to its workers; the collector never imports this module.

This module must never read privileged simulator state: it sees observations and the step the oracle is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError
from keystone_vla.types import Observation, PlanStep
from keystone_vla.vla.object_token import with_step_start

_POLICIES: dict[str, Any] = {}  # checkpoint folder -> VLAPolicy, one model per (worker) process


class LearnerMix:
    """Alternate learner- and oracle-driven segments of `segment` ticks (inclusive range); `share` of the
    segments go to the learner."""

    def __init__(self, vla: Any, share: float = 0.5, segment: tuple[int, int] = (6, 16),
                 n_action_steps: int | None = None) -> None:
        if not 0.0 < share <= 1.0:
            raise ConfigError(f"the learner's share of segments must be in (0, 1], got {share}")
        if not 1 <= segment[0] <= segment[1]:
            raise ConfigError(f"segment must be (min, max) ticks with 1 <= min <= max, got {segment}")
        if n_action_steps is None:  # as the agent runs this checkpoint in evaluation
            n_action_steps = min(int(vla.config.chunk_size), int(vla.config.n_action_steps))
        if not 1 <= n_action_steps <= int(vla.config.chunk_size):
            raise ConfigError(f"n_action_steps must be in 1..{vla.config.chunk_size}, got {n_action_steps}")
        self.vla = vla
        self.share = float(share)
        self.segment = (int(segment[0]), int(segment[1]))
        self.n_action_steps = int(n_action_steps)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng([int(seed), 4111])
        self._left = 0
        self._learner = False
        self._queue: list[np.ndarray] = []
        self._step: PlanStep | None = None
        self.learner_ticks = 0

    def execute(self, label: np.ndarray, observation: Observation, step: PlanStep, objects: np.ndarray,
                ee_at_step_start: np.ndarray) -> np.ndarray:
        if self._left <= 0:
            self._learner = bool(self.rng.random() < self.share)
            self._left = int(self.rng.integers(self.segment[0], self.segment[1] + 1))
            self._queue.clear()
        if step != self._step:  # no action of the previous step runs in the next one
            self._step = step
            self._queue.clear()
        self._left -= 1
        if not self._learner:
            return label
        if not self._queue:
            chunk = self.vla.predict_chunk(observation, step.text, with_step_start(objects, ee_at_step_start))
            self._queue = [np.asarray(a, np.float32) for a in chunk.actions[: self.n_action_steps]]
        self.learner_ticks += 1
        return self._queue.pop(0)


@dataclass(frozen=True)
class DaggerLearner:
    """`LearnerMix` factory for `keystone_vla.datasets.collect.collect`: `folder` is a VLA checkpoint folder
    (already resolved, e.g. by `keystone data collect --learner`), `share` the learner's share of the segments.
    Picklable, so spawned workers receive the folder name and load the model themselves, once per process."""

    folder: str
    share: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ConfigError(f"--learner-share must be in (0, 1], got {self.share}")

    @property
    def name(self) -> str:
        return self.folder

    def __call__(self) -> LearnerMix:
        if self.folder not in _POLICIES:
            from keystone_vla.vla.policy import VLAPolicy

            _POLICIES[self.folder] = VLAPolicy.from_pretrained(self.folder)
        return LearnerMix(_POLICIES[self.folder], share=self.share)
