"""Regrasp rule: a put-down's part lying released and unplaced for `patience` ticks goes back to its pick."""

from __future__ import annotations

import pytest
from assist_helpers import HELD, OPEN, PICK, PUT

from keystone_vla.errors import ConfigError
from keystone_vla.policies.assists.regrasp import RegraspConfig, RegraspRule

STEPS = (PICK, PUT)


def ticks(rule: RegraspRule, n: int, opening: float, lifted: bool, placed: bool = False) -> list[bool]:
    checks = {PICK.call: lifted, PUT.call: placed}
    return [rule.should_regrasp(1, STEPS, placed, opening, lambda s: checks[s.call]) for _ in range(n)]


def test_a_part_released_short_is_picked_again_after_patience_at_most_max_times() -> None:
    rule = RegraspRule(RegraspConfig(max_regrasps=1, patience=3))
    assert ticks(rule, 3, OPEN, lifted=False) == [False, False, True]  # released beside the target
    assert rule.regrasps == 1
    rule.step_changed()
    assert not any(ticks(rule, 6, OPEN, lifted=False))  # max_regrasps spent for this put-down
    assert ticks(RegraspRule(RegraspConfig(patience=2)), 2, 0.0, lifted=False) == [False, True]  # slipped out


def test_it_never_fires_while_the_part_is_held_lifted_or_placed() -> None:
    for opening, lifted, placed in ((HELD, False, False),  # down but still in the hand
                                    (OPEN, True, False),  # the pick's check still holds
                                    (OPEN, False, True)):  # landed in place
        rule = RegraspRule(RegraspConfig(patience=2))
        assert not any(ticks(rule, 5, opening, lifted, placed))
    rule = RegraspRule(RegraspConfig(patience=1))
    assert not rule.should_regrasp(1, STEPS, False, OPEN, None)  # no step checks: nothing to go on
    assert not rule.should_regrasp(0, STEPS, False, OPEN, lambda s: False)  # a pick has no pick before it
    assert not any(ticks(RegraspRule(RegraspConfig(max_regrasps=0, patience=1)), 3, OPEN, lifted=False))


def test_interrupted_emptiness_starts_the_count_again() -> None:
    rule = RegraspRule(RegraspConfig(patience=3))
    assert ticks(rule, 2, OPEN, lifted=False) == [False, False]
    assert ticks(rule, 1, HELD, lifted=False) == [False]
    assert ticks(rule, 3, OPEN, lifted=False) == [False, False, True]


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="regrasp.max_regrasps"):
        RegraspConfig(max_regrasps=-1)
    with pytest.raises(ConfigError, match="regrasp.patience"):
        RegraspConfig(patience=0)
