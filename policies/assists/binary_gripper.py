"""Binary gripper: the model's gripper command thresholded to open (0) or closed (1).

Why: the gripper output is a regression onto demonstrations that only ever command 0 or 1; when the model is
unsure it answers in between and the fingers half-close on the part. Measured on kit_assembly: a bar sat in its
slot 0.1 mm off for 350 ticks while the command swung between 0.46 and 0.69, never letting go.
It changes only the gripper entry, never motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keystone_vla.errors import ConfigError

from .base import AssistContext


@dataclass(frozen=True)
class BinaryGripperConfig:
    threshold: float = 0.5  # commands at or above it close the hand

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError(f"binary_gripper.threshold must be in (0, 1), got {self.threshold}")


class BinaryGripper:
    name = "binary_gripper"

    def __init__(self, config: BinaryGripperConfig | None = None) -> None:
        self.config = config or BinaryGripperConfig()
        self.snapped = 0

    def reset(self) -> None:
        self.snapped = 0

    def counts(self) -> dict[str, int]:
        return {"gripper_snapped": self.snapped}

    def apply(self, ctx: AssistContext, action: np.ndarray) -> np.ndarray:
        out = np.array(action, np.float32, copy=True)
        value = 1.0 if float(action[-1]) >= self.config.threshold else 0.0
        self.snapped += int(float(action[-1]) not in (0.0, 1.0))
        out[-1] = value
        return out
