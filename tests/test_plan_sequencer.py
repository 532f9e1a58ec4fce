"""PlanSequencer: step hand-over on done + check, patience, release before a put-down ends, retries, regrasp."""

from __future__ import annotations

import numpy as np
import pytest
from assist_helpers import HELD, OPEN, PICK, PUT, observation

from keystone_vla.errors import ConfigError
from keystone_vla.policies.assists.regrasp import RegraspConfig
from keystone_vla.policies.plan_sequencer import Event, PlanSequencer, SequencerConfig
from keystone_vla.types import ActionChunk, Plan, PlanStep

PLAN = Plan("x", (PICK, PUT))


def tick(seq: PlanSequencer, opening: float = HELD, done: float | None = None) -> Event:
    """One tick: decide the step, then (as the runtime would) maybe a chunk of 4 with step-done `done`."""
    event = seq.update(observation(opening))
    if done is not None:
        seq.on_chunk(ActionChunk(np.zeros((4, 7), np.float32), step_done=done))
    seq.end_tick()
    return event


def test_a_step_ends_once_the_done_chunk_ran_out_and_its_check_holds() -> None:
    checks = {PICK.call: False}
    seq = PlanSequencer(SequencerConfig(check_patience=1000))
    seq.start(PLAN, lambda s: checks.get(s.call, False))
    assert tick(seq, done=0.9) is Event.NONE  # done called for a chunk of 4: over at tick 4
    assert [tick(seq) for _ in range(3)] == [Event.NONE] * 3
    assert tick(seq) is Event.RETRY and seq.retries == 1 and seq.index == 0  # ran out, the grasp check fails
    tick(seq, done=0.9)
    checks[PICK.call] = True
    assert [tick(seq) for _ in range(4)] == [Event.NONE] * 3 + [Event.ADVANCED]
    assert seq.index == 1 and seq.visit == 1


def test_patience_ends_a_put_down_only_once_the_hand_has_opened() -> None:
    plan = Plan("x", (PICK, PUT, PlanStep.parse("pick(green_block)", "pick"),
                      PlanStep.parse("place_in(green_block, blue_bowl)", "put")))
    for require_release in (True, False):
        seq = PlanSequencer(SequencerConfig(check_patience=2, require_release=require_release))
        seq.start(plan, lambda s: True)
        [tick(seq) for _ in range(2)]  # a pick ends by patience with the part in the closed hand
        assert seq.index == 1
        [tick(seq) for _ in range(2)]  # in the bowl but still gripped
        assert seq.index == (1 if require_release else 2)
        if require_release:
            [tick(seq) for _ in range(4)]  # however long it stays gripped
            assert seq.index == 1
            [tick(seq, OPEN) for _ in range(2)]  # let go: now the put-down is over
            assert seq.index == 2


def test_without_a_check_the_model_alone_decides_and_the_last_step_is_kept() -> None:
    seq = PlanSequencer()
    seq.start(PLAN, None)
    assert [tick(seq) for _ in range(30)] == [Event.NONE] * 30  # no done, no check: no patience either
    tick(seq, done=0.9)
    assert [tick(seq) for _ in range(4)][-1] is Event.ADVANCED
    tick(seq, done=0.9)
    assert all(tick(seq) is Event.NONE for _ in range(10)) and seq.index == 1


def test_a_regrasp_goes_back_to_the_pick_as_a_new_visit() -> None:
    checks = {PICK.call: True, PUT.call: False}
    seq = PlanSequencer(SequencerConfig(check_patience=1), RegraspConfig(patience=2))
    seq.start(PLAN, lambda s: checks[s.call])
    assert tick(seq) is Event.ADVANCED
    checks[PICK.call] = False  # the part lies beside the bowl, the hand open
    assert [tick(seq, OPEN) for _ in range(2)] == [Event.NONE, Event.REGRASP]
    assert seq.index == 0 and seq.regrasps == 1 and seq.visit == 2


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="sequencer.check_patience"):
        SequencerConfig(check_patience=0)
    with pytest.raises(ConfigError, match="sequencer.done_threshold"):
        SequencerConfig(done_threshold=1.0)


def test_a_put_down_seen_after_a_look_is_judged_at_once() -> None:
    """Once the camera has seen a released part the hand hid, its put-down is decided on that tick: advance
    when it is placed, back to its pick when it lies short, and nothing when it is still lifted."""
    plan = Plan("x", (PICK, PUT, PlanStep.parse("pick(green_block)", "pick")))
    checks = {PICK.call: False, PUT.call: True}
    seq = PlanSequencer(SequencerConfig(check_patience=1000), RegraspConfig(patience=50))
    seq.start(plan, lambda s: checks.get(s.call, False))
    seq.go_to(1)
    assert seq.judge_now(observation(OPEN)) is Event.ADVANCED and seq.index == 2
    seq.go_to(1)
    checks[PUT.call] = False
    assert seq.judge_now(observation(OPEN)) is Event.REGRASP and seq.index == 0 and seq.regrasps == 1
    seq.go_to(1)
    checks[PICK.call] = True  # still lifted: not a part lying short, so no regrasp
    assert seq.judge_now(observation(OPEN)) is Event.NONE and seq.index == 1
