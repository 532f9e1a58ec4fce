"""What every assist sees and is: `AssistContext` (one control tick) and the `Assist` protocol.

An assist is a small rule that changes the action the model commanded before it leaves the agent (a bounded
alignment, a held-back release, a thresholded gripper). The agent runs its assists in the order its
`AgentConfig.assists` lists them, each getting the previous one's output:

    action = model action
    for assist in assists: action = assist.apply(ctx, action)

An assist reads only what a real cell has: the observation (images, joint state, gripper opening, end-effector
pose), the plan step being executed, the located objects of that step (`ctx.located`, from whatever scene source
the agent was given) and the model's latest chunk. It must never read simulator state, never move the arm by
more than its config's bounds per tick, and never change an action it has no reason to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

# the gripper openings (state[-1], 1 = open) beyond which nothing is held, and how the opening is read, are the
# tracker's, so the assists and the scene agree on when a part is in the hand
from keystone_vla.perception.tracker import EMPTY_CLOSED, EMPTY_OPEN, gripper_opening
from keystone_vla.types import ActionChunk, Observation, PlanStep

#: layout of a located step (`Locate` in `keystone_vla.policies.vla_agent`): float [14], the step's first object
#: (part) then its last (target), each x y z yaw size_x size_y size_z in the robot base frame
PART_XY, PART_Z, PART_YAW, PART_HEIGHT = slice(0, 2), 2, 3, 6
TARGET_XY, TARGET_Z, TARGET_YAW, TARGET_HEIGHT = slice(7, 9), 9, 10, 13


@dataclass
class AssistContext:
    """One control tick as the assists see it.

    `step_visit` counts how many times a plan step became current this episode (a regrasp that goes back to a
    pick and forward again makes a new visit of the put-down), so per-step state can be kept per visit.
    `locate` gives the current step's objects now (float [14], layout above) or is None when the agent has no
    live scene; `located` calls it at most once per tick."""

    observation: Observation
    step: PlanStep
    step_visit: int
    chunk: ActionChunk | None = None
    locate: Any = None  # Callable[[PlanStep], np.ndarray] | None
    kinds: dict[str, str] = field(default_factory=dict)  # scene object id -> its kind ('block', 'slot', ...)
    _located: np.ndarray | None = field(default=None, repr=False)

    @property
    def located(self) -> np.ndarray | None:
        """The current step's objects located now (float64 [14]), or None without a live scene."""
        if self.locate is None:
            return None
        if self._located is None:
            self._located = np.asarray(self.locate(self.step), np.float64)
        return self._located

    @property
    def opening(self) -> float:
        return gripper_opening(self.observation)

    @property
    def ee(self) -> np.ndarray:
        """End-effector pose, float64 [7] (xyz + quaternion, base frame)."""
        return np.asarray(self.observation.ee_pose, np.float64)

    def held_put_down(self) -> bool:
        """Whether the current step puts a part onto another object while the hand still holds something
        (opening strictly between empty-closed and empty-open)."""
        return is_put_down(self.step) and EMPTY_CLOSED < self.opening < EMPTY_OPEN


@runtime_checkable
class Assist(Protocol):
    """A rule applied to the commanded action every tick (see module docstring)."""

    name: str

    def reset(self) -> None:
        """Forget the previous episode (per-step state, counters)."""

    def apply(self, ctx: AssistContext, action: np.ndarray) -> np.ndarray:
        """The action to command instead of `action` (float32 [7]); `action` itself is never modified."""

    def counts(self) -> dict[str, int]:
        """What the assist did this episode, e.g. {"aligned_ticks": 12}."""


def is_put_down(step: PlanStep) -> bool:
    """A step that puts its first argument onto/into a different object (not a pick)."""
    return step.skill != "pick" and len(step.args) >= 2 and step.args[0] != step.args[-1]


def part_to_target(located: np.ndarray) -> np.ndarray:
    """x/y vector from the located part to its target, float64 [2]."""
    return located[TARGET_XY] - located[PART_XY]
