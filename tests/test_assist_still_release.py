"""Still-hand release assist: a predicted open runs once the hand has stopped with the part set down."""

from __future__ import annotations

import pytest
from assist_helpers import HELD, PICK, PUT, action, chunk, context, located, observation

from keystone_vla.errors import ConfigError
from keystone_vla.policies.assists.still_release import StillHandRelease, StillReleaseConfig

SET_DOWN = located(part_z=0.05, part_size=(0.04, 0.04, 0.04), target_z=0.02, target_size=(0.12, 0.12, 0.04))
# part bottom 0.03, target top 0.04: resting on it


def run(rule: StillHandRelease, ticks: int, move: float = 0.0, objects=SET_DOWN, open_at: int | None = 4,
        step=PUT, visit: int = 0, gripper: float = 1.0) -> list[float]:
    """Gripper commands over `ticks` ticks, the hand moving `move` metres per tick, the model commanding `gripper`."""
    out = []
    for k in range(ticks):
        ctx = context(step, observation(HELD, ee=(0.5, 0.2 + move * k, 0.1)), objects, visit, chunk(open_at))
        out.append(float(rule.apply(ctx, action(gripper=gripper))[-1]))
    return out


def test_it_fires_once_the_hand_stops_and_holds_the_hand_open_for_the_step() -> None:
    rule = StillHandRelease()
    assert run(rule, 6) == [1.0] + [0.0] * 5  # still from the second tick: open, and it stays open
    assert rule.still_releases == 1
    assert run(rule, 2, visit=1) == [0.0, 0.0]  # a new visit of the step (a regrasp): fires again at once (still)
    assert rule.still_releases == 2


def test_it_does_not_fire_where_it_must_not() -> None:
    hovering = located(part_z=0.05 + 0.025, target_z=0.02)  # bottom 1.5 cm above the target's top
    cases = {
        "moving": dict(move=0.01),
        "hovering": dict(objects=hovering),
        "off target": dict(objects=located(part_xy=(0.5, 0.19), part_z=0.05)),
        "no open predicted": dict(open_at=None),
        "a pick": dict(step=PICK),
    }
    for why, kwargs in cases.items():
        rule = StillHandRelease()
        assert run(rule, 5, **kwargs) == [1.0] * 5, why
        assert rule.still_releases == 0, why
    rule = StillHandRelease()
    ctx = context(PUT, observation(HELD), SET_DOWN, 0, chunk(4), live=False)  # no live scene
    assert [float(rule.apply(ctx, action())[-1]) for _ in range(3)] == [1.0] * 3


def test_it_only_ever_opens_and_never_moves() -> None:
    rule = StillHandRelease()
    a = action(dx=0.003, dy=-0.002)
    for _ in range(3):
        out = rule.apply(context(PUT, observation(HELD), SET_DOWN, 0, chunk(4)), a)
        assert list(out[:6]) == list(a[:6])
    assert run(StillHandRelease(), 3, gripper=0.0) == [0.0] * 3  # an open stays open (nothing to run early)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="still_release.speed"):
        StillReleaseConfig(speed=0)
