"""Final alignment assist: bounded x/y/yaw corrections toward the goal, only where it has one."""

from __future__ import annotations

import numpy as np
import pytest
from assist_helpers import HELD, OPEN, PICK, PUT, action, context, located, observation

from keystone_vla.errors import ConfigError
from keystone_vla.policies.assists.alignment import AlignmentConfig, FinalAlignment
from keystone_vla.types import PlanStep

CFG = AlignmentConfig()


def test_a_held_part_is_moved_toward_its_target_by_a_bounded_step() -> None:
    servo = FinalAlignment()
    ctx = context(PUT, observation(HELD), located(part_xy=(0.5, 0.18), target_xy=(0.5, 0.2)))  # 20 mm short in +y
    out = servo.apply(ctx, action())
    assert out[1] == pytest.approx(CFG.max_step) and out[0] == pytest.approx(0.0, abs=1e-7)  # clipped at 5 mm
    assert out[-1] == 1.0 and servo.aligned_ticks == 1  # the gripper is not its business
    near = context(PUT, observation(HELD), located(part_xy=(0.5, 0.198), target_xy=(0.5, 0.2)))  # 2 mm short
    assert servo.apply(near, action())[1] == pytest.approx(CFG.gain * 0.002, rel=1e-4)  # half the residual


def test_yaw_is_corrected_modulo_the_parts_symmetry() -> None:
    servo = FinalAlignment()
    peg = PlanStep.parse("insert(red_peg, hole)", "insert it")
    assert servo.apply(context(peg, observation(HELD), located(part_yaw=0.3)), action())[5] == pytest.approx(
        -min(CFG.gain * 0.3, CFG.max_yaw))
    # a square peg a quarter turn round is aligned: no yaw correction
    assert servo.apply(context(peg, observation(HELD), located(part_yaw=np.pi / 2)), action())[5] == pytest.approx(
        0.0, abs=1e-6)
    ell = PlanStep.parse("place_in(red_ell, ell_slot)", "put it in the ell slot")
    assert abs(servo.apply(context(ell, observation(HELD), located(part_yaw=np.pi / 2)), action())[5]) == \
        pytest.approx(CFG.max_yaw)  # an ell has no symmetry
    disc = PlanStep.parse("place_in(red_disc, disc_slot)", "put it in the disc slot")
    assert servo.apply(context(disc, observation(HELD), located(part_yaw=1.0)), action())[5] == 0.0  # round


def test_a_pick_with_the_open_hand_is_servoed_onto_the_part() -> None:
    servo = FinalAlignment()
    # open hand at yaw 0, 10 mm short of the part in y; the part turned a half turn + 0.3: same grasp as 0.3
    ctx = context(PICK, observation(OPEN, ee=(0.5, 0.17, 0.1)), located(part_xy=(0.5, 0.18), part_yaw=0.3 + np.pi))
    out = servo.apply(ctx, action(dy=1.0, yaw=1.0))
    assert out[1] == pytest.approx(1 + CFG.max_step) and out[5] == pytest.approx(1 + CFG.max_yaw)
    assert out[-1] == 1.0  # a pick's close command stays the model's


def test_it_leaves_alone_what_it_has_no_goal_for() -> None:
    servo = FinalAlignment()
    a = action(dx=0.01, gripper=0.0)
    far = located(part_xy=(0.5, 0.1), target_xy=(0.5, 0.2))  # 10 cm: outside the capture radius
    for ctx in (context(PICK, observation(HELD)),  # a pick with the hand closing
                context(PUT, observation(OPEN), far),  # nothing held
                context(PUT, observation(HELD), far),  # outside the radius: the model alone
                context(PUT, observation(HELD), located(part_xy=(0.5, 0.19)), live=False)):  # no live scene
        assert np.array_equal(servo.apply(ctx, a), a)
    assert servo.aligned_ticks == 0
    assert a[0] == np.float32(0.01)  # the input is never modified


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="alignment.radius"):
        AlignmentConfig(radius=0)
    with pytest.raises(ConfigError, match="alignment.gain"):
        AlignmentConfig(gain=1.5)
