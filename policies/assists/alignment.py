"""Final alignment: a bounded visual servo that closes the last centimetres the model leaves.

Why: the model decides where to go, when to descend, grasp and let go, but it stops a few millimetres to a few
centimetres off. Measured with keystone-base's lineage on insert (12 seen episodes): the model settled the peg
20-28 mm off the hole in half of them; with this servo all 12 went in. On the never-demonstrated `tee` shape the
model came down turned 72 degrees from its grasp yaw and lost the part on the lift; with the pick servo 6 of 6
unseen kits were completed (1 of 6 without it).

What it does each tick, only within `radius` (x/y) of the goal:
- put-down with the part in the hand: moves the part (located now) toward its target;
- pick with the hand open: moves the hand onto the part's grasp point and grasp yaw (modulo half turns at least:
  a two-finger hand looks the same after one).
It adds `gain` x the x/y residual (at most `max_step` metres) and `gain` x the yaw residual (at most `max_yaw`
radians, modulo the part's symmetry, `keystone_vla.vocab.YAW_SYMMETRY`; none for round or unknown kinds) to the
model's command. It never touches z or the gripper; holding a release back is `release_interlock`'s job.
Without a live scene (`ctx.located` is None) it does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keystone_vla.errors import ConfigError
from keystone_vla.vla.object_token import gripper_yaw
from keystone_vla.vocab import yaw_symmetry

from .base import EMPTY_OPEN, PART_XY, PART_YAW, TARGET_YAW, AssistContext, part_to_target


@dataclass(frozen=True)
class AlignmentConfig:
    radius: float = 0.05  # metres (x/y) from the goal within which the servo acts
    gain: float = 0.5  # fraction of the residual corrected per tick
    max_step: float = 0.005  # metres of x/y correction per tick, at most
    max_yaw: float = 0.1  # radians of yaw correction per tick, at most

    def __post_init__(self) -> None:
        if self.radius <= 0:
            raise ConfigError(f"alignment.radius must be > 0 metres (leave 'alignment' out of assists to turn it "
                              f"off), got {self.radius}")
        if not 0 < self.gain <= 1:
            raise ConfigError(f"alignment.gain must be in (0, 1], got {self.gain}")
        if self.max_step <= 0 or self.max_yaw < 0:
            raise ConfigError(f"alignment.max_step must be > 0 and alignment.max_yaw >= 0, got {self.max_step}, "
                              f"{self.max_yaw}")


class FinalAlignment:
    name = "alignment"

    def __init__(self, config: AlignmentConfig | None = None) -> None:
        self.config = config or AlignmentConfig()
        self.aligned_ticks = 0

    def reset(self) -> None:
        self.aligned_ticks = 0

    def counts(self) -> dict[str, int]:
        return {"aligned_ticks": self.aligned_ticks}

    def apply(self, ctx: AssistContext, action: np.ndarray) -> np.ndarray:
        goal = self._residual(ctx)
        if goal is None:
            return action
        residual, turn, symmetry = goal
        if float(np.linalg.norm(residual)) > self.config.radius:
            return action
        c = self.config
        out = np.array(action, np.float32, copy=True)
        correction = c.gain * residual
        norm = float(np.linalg.norm(correction))
        if norm > c.max_step:
            correction *= c.max_step / norm
        out[0:2] += correction
        if symmetry:
            period = 2 * np.pi / symmetry
            turn = float(np.mod(turn + period / 2, period) - period / 2)
            out[5] += float(np.clip(c.gain * turn, -c.max_yaw, c.max_yaw))
        self.aligned_ticks += 1
        return out

    @staticmethod
    def _residual(ctx: AssistContext) -> tuple[np.ndarray, float, int | None] | None:
        """(x/y residual, yaw residual, yaw symmetry) toward this tick's goal, or None when there is none."""
        if ctx.held_put_down():
            located = ctx.located
            if located is None:
                return None
            return part_to_target(located), float(located[TARGET_YAW] - located[PART_YAW]), yaw_symmetry(ctx.step.args[0])
        if ctx.step.skill == "pick" and ctx.opening > EMPTY_OPEN:
            located = ctx.located
            if located is None:
                return None
            ee = ctx.ee
            symmetry = yaw_symmetry(ctx.step.args[0])
            # the two-finger gripper looks the same after a half turn: it grasps any part modulo half turns
            symmetry = symmetry and max(int(symmetry), 2)
            return located[PART_XY] - ee[0:2], float(located[PART_YAW] - float(gripper_yaw(ee[3:7]))), symmetry
        return None
