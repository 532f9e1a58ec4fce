"""Still-hand release: once the hand has stopped with the part set down on its target, run the open the model
predicts for later in its chunk, and keep the hand open for the rest of the step.

Why: the scripted experts let go once the hand has arrived or stalled against contact, but one observation
(joint positions and finger opening, no velocity) does not show that the hand has stopped, so a model trained on
them keeps predicting the release a couple of actions ahead. Executing 2 actions per chunk, the release never
comes within reach: keystone-base completes 2 of 60 insert, kit_assembly and build_tower episodes without this
rule (seeds 0-9, seen and unseen) and 60 of 60 with it. The open is held for the rest of the step because a
one-tick open followed by the model's own closed commands re-grasped the part (kit_assembly 0 of 20 and
build_tower 1 of 20 that way).

Rule, each tick: the hand is *still* when the end effector moved less than `speed` metres since the previous
tick. During a put-down with the part in the hand, when the hand is still, the command is closed, the part
(located now) is within `tolerance` (x/y) of its target and set down (its bottom at most `gap` above the
target's top), and the latest chunk commands an open anywhere in its horizon, the gripper command becomes open
(0.0), at most once per visit of the step; after that every command of that visit is open. It never moves the
arm and never fires without a live scene, off target, hovering, or when the model predicts no open at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keystone_vla.errors import ConfigError

from .base import PART_HEIGHT, PART_Z, TARGET_HEIGHT, TARGET_Z, AssistContext, part_to_target


@dataclass(frozen=True)
class StillReleaseConfig:
    speed: float = 0.002  # metres per tick: a hand moving less has stopped
    tolerance: float = 0.003  # metres (x/y) between the part and its target
    gap: float = 0.01  # metres: the part's bottom at most this far above the target's top

    def __post_init__(self) -> None:
        for key in ("speed", "tolerance", "gap"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"still_release.{key} must be > 0 metres, got {getattr(self, key)} (leave "
                                  "'still_release' out of assists to turn it off)")


class StillHandRelease:
    name = "still_release"

    def __init__(self, config: StillReleaseConfig | None = None) -> None:
        self.config = config or StillReleaseConfig()
        self.reset()

    def reset(self) -> None:
        self.still_releases = 0
        self._fired_visit: int | None = None  # step visit in which the release fired (held for its rest)
        self._prev_ee: np.ndarray | None = None

    def counts(self) -> dict[str, int]:
        return {"still_releases": self.still_releases}

    def apply(self, ctx: AssistContext, action: np.ndarray) -> np.ndarray:
        ee = ctx.ee[:3]
        still = self._prev_ee is not None and float(np.linalg.norm(ee - self._prev_ee)) < self.config.speed
        self._prev_ee = ee
        if self._fired_visit == ctx.step_visit:
            out = np.array(action, np.float32, copy=True)
            out[-1] = 0.0
            return out
        if not still or float(action[-1]) < 0.5 or not ctx.held_put_down() or not _open_predicted(ctx):
            return action
        located = ctx.located
        if located is None or float(np.linalg.norm(part_to_target(located))) > self.config.tolerance:
            return action
        if not set_down(located, self.config.gap):
            return action
        out = np.array(action, np.float32, copy=True)
        out[-1] = 0.0
        self.still_releases += 1
        self._fired_visit = ctx.step_visit
        return out


def _open_predicted(ctx: AssistContext) -> bool:
    """Whether the model's latest chunk commands an open (gripper < 0.5) anywhere in its horizon."""
    return ctx.chunk is not None and bool(np.any(np.asarray(ctx.chunk.actions)[:, -1] < 0.5))


def set_down(located: np.ndarray, gap: float) -> bool:
    """Whether a located part rests on or in its target: its bottom at most `gap` above the target's top (centre z
    plus half its height; sizes may be zero when the scene source gives none)."""
    bottom = float(located[PART_Z]) - float(located[PART_HEIGHT]) / 2
    top = float(located[TARGET_Z]) + float(located[TARGET_HEIGHT]) / 2
    return bottom <= top + gap
