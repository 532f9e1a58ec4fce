"""Release interlock assist: an open command waits until the held part is over its target."""

from __future__ import annotations

import numpy as np
import pytest
from assist_helpers import HELD, OPEN, PICK, PUT, action, context, located, observation

from keystone_vla.errors import ConfigError
from keystone_vla.policies.assists.release_interlock import ReleaseInterlock, ReleaseInterlockConfig

RELEASE = action(gripper=0.0)


def test_an_open_command_off_target_is_held_back() -> None:
    lock = ReleaseInterlock()
    out = lock.apply(context(PUT, observation(HELD), located(part_xy=(0.5, 0.19))), RELEASE)  # 10 mm off
    assert out[-1] == 1.0 and np.array_equal(out[:6], RELEASE[:6]) and lock.held_releases == 1
    assert RELEASE[-1] == 0.0  # the input is never modified


def test_it_lets_go_on_target_and_leaves_everything_else_alone() -> None:
    lock = ReleaseInterlock()
    off = located(part_xy=(0.5, 0.19))
    cases = [
        context(PUT, observation(HELD), located(part_xy=(0.5, 0.2 - 0.002))),  # 2 mm: within tolerance
        context(PICK, observation(HELD), off),  # a pick may always open
        context(PUT, observation(OPEN), off),  # nothing held: nothing to hold back
        context(PUT, observation(HELD), located(part_xy=(0.5, 0.1))),  # 10 cm: outside the capture radius
        context(PUT, observation(HELD), off, live=False),  # no live scene
    ]
    for ctx in cases:
        assert lock.apply(ctx, RELEASE)[-1] == 0.0
    assert lock.apply(context(PUT, observation(HELD), off), action(gripper=1.0))[-1] == 1.0  # a close passes
    assert lock.held_releases == 0


def test_capture_radius_zero_acts_everywhere_and_tolerance_is_its_own() -> None:
    everywhere = ReleaseInterlock(ReleaseInterlockConfig(tolerance=0.008, capture_radius=0.0))
    assert everywhere.apply(context(PUT, observation(HELD), located(part_xy=(0.5, 0.1))), RELEASE)[-1] == 1.0
    assert everywhere.apply(context(PUT, observation(HELD), located(part_xy=(0.5, 0.195))), RELEASE)[-1] == 0.0
    strict = ReleaseInterlock()  # 3 mm default: 5 mm off is held
    assert strict.apply(context(PUT, observation(HELD), located(part_xy=(0.5, 0.195))), RELEASE)[-1] == 1.0


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="release_interlock.tolerance"):
        ReleaseInterlockConfig(tolerance=0)
    with pytest.raises(ConfigError, match="release_interlock.capture_radius"):
        ReleaseInterlockConfig(capture_radius=-1)
