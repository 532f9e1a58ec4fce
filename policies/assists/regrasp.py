"""Regrasp: a put-down whose part lies released short of its target goes back to its pick.

Why: parts released 11-23 mm outside a kit slot's 10 mm tolerance were 4 of 6 kit_assembly failures before this
rule; the arm then hovered to the tick limit, because a put-down step has nothing left to put down.

Rule, each tick of a put-down step whose previous step picked the same part: when the part is no longer lifted
(the pick's check fails), the put-down's own check fails too, and the hand is empty (fully open: released beside
the target; or fully closed: the part slipped out) for `patience` consecutive ticks, the plan goes back to the
pick, at most `max_regrasps` times per put-down step. It needs step checks (the caller's: in simulation the
task's per-step check, on a robot a check from the perceived scene); without them it never fires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keystone_vla.errors import ConfigError
from keystone_vla.types import PlanStep

from .base import EMPTY_CLOSED, EMPTY_OPEN


@dataclass(frozen=True)
class RegraspConfig:
    max_regrasps: int = 2  # per put-down step; 0 turns regrasping off
    patience: int = 10  # consecutive ticks the part must lie released and unplaced

    def __post_init__(self) -> None:
        if self.max_regrasps < 0:
            raise ConfigError(f"regrasp.max_regrasps must be >= 0 (0 turns regrasping off), got {self.max_regrasps}")
        if self.patience < 1:
            raise ConfigError(f"regrasp.patience must be >= 1 tick, got {self.patience}")


class RegraspRule:
    """Counts the ticks a put-down's part lies released and unplaced; says when to pick it again."""

    def __init__(self, config: RegraspConfig | None = None) -> None:
        self.config = config or RegraspConfig()
        self.reset()

    def reset(self) -> None:
        self.regrasps = 0
        self._at: dict[int, int] = {}  # put-down step index -> regrasps it caused
        self._empty_ticks = 0

    def step_changed(self) -> None:
        self._empty_ticks = 0

    def should_regrasp(self, index: int, steps: tuple[PlanStep, ...], checked: bool, opening: float,
                       step_check: Callable[[PlanStep], bool] | None, now: bool = False) -> bool:
        """Whether step `index` (a put-down whose check gave `checked` this tick) should go back to its pick now;
        counts the regrasp when it says yes. `now`: the part's resting pose has just been seen (after the hand
        moved away to look), so one tick is enough; there is nothing to wait for."""
        step = steps[index]
        pick = steps[index - 1] if index > 0 else None
        released = (not checked and step_check is not None and step.skill != "pick"
                    and pick is not None and pick.skill == "pick" and pick.args[0] == step.args[0]
                    and self._at.get(index, 0) < self.config.max_regrasps
                    and (opening > EMPTY_OPEN or opening < EMPTY_CLOSED) and not step_check(pick))
        self._empty_ticks = self._empty_ticks + 1 if released else 0
        if self._empty_ticks < (1 if now else self.config.patience):
            return False
        self._at[index] = self._at.get(index, 0) + 1
        self.regrasps += 1
        return True
