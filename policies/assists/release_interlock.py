"""Release interlock: during a put-down, an open command waits until the held part is over its target.

Why: a part let go a few millimetres off its slot or hole lands beside it, and a put-down step then has nothing
left to put down. The model's release timing is learned from demonstrations that let go once the hand had
arrived; when its approach stops short, its open command still comes. Held back, the hand keeps the part while
the final alignment (`alignment`) closes the residual; alone, without the servo, holding back did not help (the
model hovered off target), which is why the shipped agent runs both.

Rule, each tick of a put-down with the part in the hand: if the command opens the hand (gripper < 0.5) and the
part, located now, lies farther than `tolerance` (x/y) from its target, the gripper command becomes closed
(1.0). With `capture_radius` > 0 it only acts within that distance of the target (farther away the approach is
the model's, and so is the decision to open); 0 means everywhere. It never opens the hand, never changes motion,
and does nothing without a live scene or with nothing in the hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keystone_vla.errors import ConfigError

from .base import AssistContext, part_to_target


@dataclass(frozen=True)
class ReleaseInterlockConfig:
    tolerance: float = 0.003  # metres (x/y): a part this close to its target may be let go
    capture_radius: float = 0.05  # metres: act only this close to the target (0: everywhere)

    def __post_init__(self) -> None:
        if self.tolerance <= 0:
            raise ConfigError(f"release_interlock.tolerance must be > 0 metres, got {self.tolerance}")
        if self.capture_radius < 0:
            raise ConfigError(f"release_interlock.capture_radius must be >= 0 metres (0: everywhere), got "
                              f"{self.capture_radius}")


class ReleaseInterlock:
    name = "release_interlock"

    def __init__(self, config: ReleaseInterlockConfig | None = None) -> None:
        self.config = config or ReleaseInterlockConfig()
        self.held_releases = 0

    def reset(self) -> None:
        self.held_releases = 0

    def counts(self) -> dict[str, int]:
        return {"held_releases": self.held_releases}

    def apply(self, ctx: AssistContext, action: np.ndarray) -> np.ndarray:
        if float(action[-1]) >= 0.5 or not ctx.held_put_down():
            return action
        located = ctx.located
        if located is None:
            return action
        distance = float(np.linalg.norm(part_to_target(located)))
        if self.config.capture_radius and distance > self.config.capture_radius:
            return action
        if distance <= self.config.tolerance:
            return action
        out = np.array(action, np.float32, copy=True)
        out[-1] = 1.0
        self.held_releases += 1
        return out
