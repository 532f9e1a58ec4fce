"""Set-down assist: a stacked part stops pressing down and is let go on its target; after the plan the hand lifts
straight up and holds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from assist_helpers import HELD, OPEN, PICK, action, context, located, observation

from keystone_vla.errors import ConfigError
from keystone_vla.policies.assists.set_down import SetDown, SetDownConfig
from keystone_vla.types import PlanStep

STACK = PlanStep.parse("place_on(red_block, blue_block)", "put the red block on the blue block")
POCKET = PlanStep.parse("place_in(red_bar, bar_slot)", "put the red bar in the bar slot")
BOWL = PlanStep.parse("place_in(red_block, blue_bowl)", "put it in the bowl")
ON_TOP = located(part_z=0.06, target_z=0.02, target_size=(0.04, 0.04, 0.04))  # part bottom 0.04 = target top
ABOVE = located(part_z=0.09, target_z=0.02, target_size=(0.04, 0.04, 0.04))  # 3 cm above


def down(gripper: float = 1.0) -> np.ndarray:
    a = action(gripper=gripper)
    a[2] = -0.008
    return a


def test_a_set_down_part_stops_descending_and_is_let_go_on_target() -> None:
    rule = SetDown()
    out = rule.apply(context(STACK, observation(HELD), ON_TOP), down())
    assert out[2] == 0.0 and out[-1] == 0.0, "set down on target: no further descent, the hand opens"
    assert rule.stopped_descents == 1 and rule.set_down_releases == 1
    # while the fingers open (still between empty and open) the hand stays open and still
    again = rule.apply(context(STACK, observation(0.7), ON_TOP), down(gripper=1.0))
    assert again[-1] == 0.0 and np.all(again[:6] == 0.0)
    # off target (8 mm in y) it stops descending but keeps the part: the alignment closes the gap first
    off = SetDown()
    out = off.apply(context(STACK, observation(HELD), located(part_xy=(0.5, 0.208), part_z=0.06, target_z=0.02,
                                                              target_size=(0.04, 0.04, 0.04))), down())
    assert out[2] == 0.0 and out[-1] == 1.0 and off.set_down_releases == 0


def test_it_leaves_alone_what_it_must_not_touch() -> None:
    cases = {
        "hovering above the target": (STACK, HELD, ABOVE, down()),
        "rising": (STACK, HELD, ON_TOP, action()),
        "a bowl (the part goes below its rim)": (BOWL, HELD, ON_TOP, down()),
        "a pick": (PICK, HELD, ON_TOP, down()),
        "nothing in the hand": (STACK, OPEN, ON_TOP, down()),
    }
    for why, (step, opening, objects, act) in cases.items():
        rule = SetDown()
        out = rule.apply(context(step, observation(opening), objects), act)
        assert np.array_equal(out, act), why
    live_off = SetDown().apply(context(STACK, observation(HELD), ON_TOP, live=False), down())
    assert live_off[2] == pytest.approx(-0.008), "without a live scene it does nothing"


def test_a_kit_pocket_counts_as_a_surface_at_the_tray_top() -> None:
    pocket = located(part_z=0.018 + 0.0125, part_size=(0.08, 0.025, 0.025), target_z=0.014,
                     target_size=(0.088, 0.033, 0.008))  # part bottom at the tray top (pocket top 0.018)
    ctx = context(POCKET, observation(HELD), pocket)
    assert SetDown().apply(ctx, down())[2] == pytest.approx(-0.008), "unknown target kind: not clamped"
    ctx = dataclasses.replace(ctx, kinds={"bar_slot": "slot", "red_bar": "bar"})
    out = SetDown().apply(ctx, down())
    assert out[2] == 0.0 and out[-1] == 0.0


def test_after_the_plan_the_hand_lifts_straight_up_then_holds() -> None:
    rule = SetDown(SetDownConfig(lift=0.03, speed=0.015))
    rule.apply(context(STACK, observation(HELD, ee=(0.5, 0.2, 0.1)), ON_TOP), down())
    rule.apply(context(STACK, observation(OPEN, ee=(0.5, 0.2, 0.1)), ON_TOP), action(gripper=0.0))
    zs, moves = [0.1, 0.115, 0.135], []
    for z in zs:
        moves.append(rule.after_plan(context(STACK, observation(OPEN, ee=(0.5, 0.2, z)), ON_TOP)))
    assert [m[2] for m in moves] == [0.015, 0.015, 0.0] and all(m[-1] == 0.0 for m in moves)
    assert all(np.all(m[[0, 1, 3, 4, 5]] == 0.0) for m in moves), "straight up: no lateral motion, no turn"


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="set_down.lift"):
        SetDownConfig(lift=0.0)
    with pytest.raises(ConfigError, match="set_down.press"):
        SetDownConfig(press=-0.01)
