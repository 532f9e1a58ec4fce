"""Binary gripper assist: the gripper command snapped to 0 or 1; motion untouched."""

from __future__ import annotations

import numpy as np
import pytest
from assist_helpers import action, context

from keystone_vla.errors import ConfigError
from keystone_vla.policies.assists.binary_gripper import BinaryGripper, BinaryGripperConfig


def test_it_thresholds_only_the_gripper() -> None:
    rule = BinaryGripper()
    for value, expected in ((0.46, 0.0), (0.5, 1.0), (0.69, 1.0), (0.0, 0.0), (1.0, 1.0)):
        a = action(dx=0.01, dy=-0.02, yaw=0.1, gripper=value)
        out = rule.apply(context(), a)
        assert out[-1] == expected and np.array_equal(out[:6], a[:6]) and a[-1] == np.float32(value)
    assert rule.snapped == 3  # 0.46, 0.5 and 0.69 were in between
    assert BinaryGripper(BinaryGripperConfig(threshold=0.7)).apply(context(), action(gripper=0.69))[-1] == 0.0


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="binary_gripper.threshold"):
        BinaryGripperConfig(threshold=1.0)
