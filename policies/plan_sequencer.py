"""`PlanSequencer`: which plan step runs now, and when it hands over to the next.

A step ends when the model's step-done probability fired for a chunk that has since run out *and* the step's
check holds (in simulation the task's per-step check; on a robot whatever check the caller passes; no check: the
model alone decides). The model, not the check, times the hand-over, because the next step was trained to start
where the demonstrations started it (after the lift, not the moment the part leaves the table: advancing on the
check alone left the arm frozen 5 cm above the table). If the model says done but the check fails (a missed
grasp), the step is retried with its objects located again. If the check holds for `check_patience` ticks while
the model never says done, the step ends anyway; for a put-down only ticks with the hand open count
(`require_release`: a put-down that ended with the part still gripped started the next pick with a closed hand,
and that pick never recovered). A put-down whose part lies released short of its target goes back to its pick
(`keystone_vla.policies.assists.regrasp`).

The sequencer never changes an action and never reads anything but the observation's gripper opening, the
model's chunks (through `on_chunk`) and the step check it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from keystone_vla.errors import ConfigError
from keystone_vla.types import ActionChunk, Observation, Plan, PlanStep

from .assists.base import EMPTY_OPEN, gripper_opening
from .assists.regrasp import RegraspConfig, RegraspRule

StepCheck = Callable[[PlanStep], bool]


@dataclass(frozen=True)
class SequencerConfig:
    done_threshold: float = 0.5  # step-done probability that calls a step done
    check_patience: int = 15  # ticks a holding check ends the step although the model never said done
    require_release: bool = True  # a put-down ends by patience only once the hand has opened

    def __post_init__(self) -> None:
        if not 0.0 < self.done_threshold < 1.0:
            raise ConfigError(f"sequencer.done_threshold must be in (0, 1), got {self.done_threshold}")
        if self.check_patience < 1:
            raise ConfigError(f"sequencer.check_patience must be >= 1 tick, got {self.check_patience}")


class Event(Enum):
    """What `PlanSequencer.update` did this tick."""

    NONE = "none"
    ADVANCED = "advanced"  # the next step is current
    REGRASP = "regrasp"  # back to the pick of the current put-down
    RETRY = "retry"  # the model said done but the check fails: locate the step's objects again


class PlanSequencer:
    def __init__(self, config: SequencerConfig | None = None, regrasp: RegraspConfig | None = None) -> None:
        self.config = config or SequencerConfig()
        self.regrasp = RegraspRule(regrasp if regrasp is not None else RegraspConfig())
        self.plan: Plan | None = None
        self.step_check: StepCheck | None = None
        self.reset()

    def start(self, plan: Plan, step_check: StepCheck | None) -> None:
        self.plan, self.step_check = plan, step_check
        self.reset()

    def reset(self) -> None:
        self.index = 0
        self.visit = 0  # how many times a step became current this episode, minus one
        self.tick = 0  # update() calls this episode
        self.retries = 0
        self.regrasp.reset()
        self._done_at: int | None = None  # tick at which the first chunk that called the step done runs out
        self._checked_ticks = 0

    @property
    def step(self) -> PlanStep:
        assert self.plan is not None
        return self.plan.steps[self.index]

    @property
    def regrasps(self) -> int:
        return self.regrasp.regrasps

    def update(self, observation: Observation) -> Event:
        """Decide this tick's step (call once per tick, before the model acts)."""
        assert self.plan is not None
        step, check = self.step, self.step_check
        checked = check is None or bool(check(step))
        opening = gripper_opening(observation)
        # also on the last step: its part may lie short too
        if self.regrasp.should_regrasp(self.index, self.plan.steps, checked, opening, check):
            self.go_to(self.index - 1)
            return Event.REGRASP
        if self.index >= len(self.plan.steps) - 1:
            return Event.NONE
        released = step.skill == "pick" or opening > EMPTY_OPEN
        counted = checked and check is not None and (released or not self.config.require_release)
        self._checked_ticks = self._checked_ticks + 1 if counted else 0
        # the done head says "this step ends within the chunk": the step is over when that whole chunk would
        # have run, however many of its actions were executed before replanning
        ran_out = self._done_at is not None and self.tick >= self._done_at
        if (ran_out and checked) or self._checked_ticks >= self.config.check_patience:
            self.go_to(self.index + 1)
            return Event.ADVANCED
        if ran_out:
            self.retries += 1
            self._done_at = None
            return Event.RETRY
        return Event.NONE

    def judge_now(self, observation: Observation) -> Event:
        """The current put-down has just become judgeable: its released part, which the hand hid, has been seen
        where it came to rest (`VLAAgent` moved the hand away to look). Its check decides at once: it holds ->
        the next step (the model is not left acting in a finished put-down: measured, it went back down onto the
        part and the next pick closed on it); it fails with the part lying released -> back to its pick; else
        nothing (the usual `update` follows)."""
        assert self.plan is not None
        step, check = self.step, self.step_check
        if check is None:
            return Event.NONE
        checked = bool(check(step))
        if checked and self.index < len(self.plan.steps) - 1:
            self.go_to(self.index + 1)
            return Event.ADVANCED
        if not checked and self.regrasp.should_regrasp(self.index, self.plan.steps, False,
                                                       gripper_opening(observation), check, now=True):
            self.go_to(self.index - 1)
            return Event.REGRASP
        return Event.NONE

    def go_to(self, index: int) -> None:
        """Make plan step `index` current with fresh done/check counters (a new visit)."""
        self.index = index
        self.visit += 1
        self._done_at = None
        self._checked_ticks = 0
        self.regrasp.step_changed()

    def on_chunk(self, chunk: ActionChunk) -> None:
        """The runtime predicted `chunk` for the current step (during this tick)."""
        if chunk.step_done > self.config.done_threshold and self._done_at is None:
            self._done_at = self.tick + len(chunk.actions)

    def end_tick(self) -> None:
        self.tick += 1
