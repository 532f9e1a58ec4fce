"""Set-down: stop pressing a part into what it was put on, and lift straight off it once it is let go.

Why: the demonstrations end the moment a goal first holds, so the model never saw what comes after a release,
and a success now has to survive a second of the hand open and clear (`keystone_vla.sim.judge`). Measured on the
shipped checkpoint before this rule, with either scene source: on build_tower the hand kept descending 1.5-2 cm
after the top block had touched down, wedged the stack between the fingers, and the lift that followed dragged the
top blocks off (goal met, then lost, in 4 of 4 towers tried).

Rule, each tick of a put-down step:

- while the part is in the hand and the step stacks it (`place_on`) or puts it in a kit pocket (`place_in` a
  slot), when the part, located now, is set down (its bottom at most `press` above the target's top: a block's
  top, the tray's top around a pocket) a descending command keeps its x/y/rotation but stops going down,
  and once the part is also within `tolerance` (x/y) of its target the hand opens and stays open for the rest of
  the visit (the model, stopped short of the depth it learned to release at, would otherwise never open);
- once the plan is done (`VLAAgent` asks `after_plan`), the hand lifts straight up at `speed` metres per tick,
  open, until it is `lift` above where it let go, then holds still. Between steps the model's own retreat runs:
  the demonstrations show it there, and a scripted lift moved the next pick's start off the demonstrated states
  (a missed grasp on build_tower seed 1).

A part let go at the tray's top drops the pocket's 8 mm into it; lower, the fingers jam against the pocket's walls
and cannot open (measured: the hand stayed closed at 34 % for the rest of the episode). Pegs and containers are
not clamped: their part has to go below the target's top. It never closes the
hand and does nothing without a live scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keystone_vla.errors import ConfigError

from .base import (
    EMPTY_OPEN,
    PART_HEIGHT,
    PART_Z,
    TARGET_HEIGHT,
    TARGET_Z,
    AssistContext,
    is_put_down,
    part_to_target,
)


@dataclass(frozen=True)
class SetDownConfig:
    press: float = 0.002  # metres: a part whose bottom is this close above its target's top is set down
    lift: float = 0.06  # metres the hand rises straight up after letting go
    speed: float = 0.015  # metres per tick while rising
    tolerance: float = 0.004  # metres (x/y): a set-down part this close to its target is let go

    def __post_init__(self) -> None:
        if self.press < 0:
            raise ConfigError(f"set_down.press must be >= 0 metres, got {self.press}")
        for key in ("lift", "speed", "tolerance"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"set_down.{key} must be > 0 metres, got {getattr(self, key)}")


class SetDown:
    name = "set_down"

    def __init__(self, config: SetDownConfig | None = None) -> None:
        self.config = config or SetDownConfig()
        self.reset()

    def reset(self) -> None:
        self.stopped_descents = 0
        self.set_down_releases = 0
        self.lift_ticks = 0
        self._opened_visit: int | None = None  # visit in which this rule opened the hand
        self._held_visit: int | None = None  # visit of a put-down in which the part was in the hand
        self._release_z: float | None = None  # hand height when it let go in that visit

    def counts(self) -> dict[str, int]:
        return {"stopped_descents": self.stopped_descents, "set_down_releases": self.set_down_releases,
                "lift_ticks": self.lift_ticks}

    def apply(self, ctx: AssistContext, action: np.ndarray) -> np.ndarray:
        if not is_put_down(ctx.step):
            return action
        if ctx.held_put_down():
            if self._held_visit != ctx.step_visit:
                self._held_visit, self._release_z = ctx.step_visit, None
            if self._opened_visit == ctx.step_visit:  # opening: keep it open, do not move
                out = np.zeros_like(np.asarray(action, np.float32))
                return out
            located = ctx.located
            stacks = ctx.step.skill == "place_on" or ctx.kinds.get(ctx.step.args[-1]) == "slot"
            if not stacks or float(action[2]) >= 0 or located is None:
                return action
            if not _set_down(located, self.config.press):
                return action
            out = np.array(action, np.float32, copy=True)
            out[2] = 0.0
            self.stopped_descents += 1
            if float(np.linalg.norm(part_to_target(located))) <= self.config.tolerance:
                out[:6] = 0.0
                out[-1] = 0.0
                self.set_down_releases += 1
                self._opened_visit = ctx.step_visit
            return out
        if self._held_visit == ctx.step_visit and ctx.opening > EMPTY_OPEN and self._release_z is None:
            self._release_z = float(ctx.ee[2])  # where the hand let go
        return action

    def after_plan(self, ctx: AssistContext) -> np.ndarray:
        """The command once the plan is done: lift straight up, open, to `lift` above the release, then hold."""
        out = np.zeros(7, np.float32)
        z = float(ctx.ee[2])
        start = self._release_z if self._release_z is not None else z
        if self._release_z is None:
            self._release_z = z
        if z < start + self.config.lift:
            out[2] = self.config.speed
            self.lift_ticks += 1
        return out


def _set_down(located: np.ndarray, press: float) -> bool:
    bottom = float(located[PART_Z]) - float(located[PART_HEIGHT]) / 2
    top = float(located[TARGET_Z]) + float(located[TARGET_HEIGHT]) / 2
    return bottom <= top + press
