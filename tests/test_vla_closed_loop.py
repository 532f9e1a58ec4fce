"""Closed-loop use of a VLA checkpoint in the real simulator: plans over the scene's ids, steps through the plan."""

from __future__ import annotations

import numpy as np
import pytest
from test_vla_helpers import tiny_checkpoint

from keystone_vla.types import ActionChunk, EpisodeSpec, Plan, PlanStep
from keystone_vla.vla.closed_loop import ClosedLoopVLA, evaluate_in_sim
from keystone_vla.vla.policy import VLAPolicy


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return VLAPolicy.from_pretrained(tiny_checkpoint(tmp_path_factory.mktemp("cl"), steps=2))


@pytest.mark.slow
def test_episode_runs_with_a_plan_grounded_in_the_scene(policy):
    from keystone_vla.sim.rollout import run_episode

    runner = ClosedLoopVLA(policy)
    rec = run_episode(EpisodeSpec("pick_place", 0), policy=runner, image_size=32, max_steps=12)
    assert rec.steps == 12 and not rec.success  # an untrained model does not solve the task in 12 ticks
    assert rec.action.shape == (12, 7) and np.isfinite(rec.action).all()
    assert runner.objects and runner.plan is not None and runner.plan.steps
    assert all(set(s.args) <= set(runner.objects) for s in runner.plan.steps)
    res = evaluate_in_sim(policy, ["stack"], episodes=1)
    assert res["tasks"]["stack"] in (0.0, 1.0) and res["split"] == "seen"


def test_step_advances_only_after_a_done_chunk(policy, monkeypatch):
    from test_vla_helpers import observation

    plan = Plan("x", (PlanStep("pick", ("red_block",), "pick up the red block"),
                      PlanStep("place_in", ("red_block", "bowl"), "place the red block in the bowl")))
    texts = []
    dones = iter([0.9, 0.1, 0.9, 0.9])

    def fake_chunk(obs, text, step_objects=None):
        texts.append(text)
        return ActionChunk(np.zeros((2, 7), np.float32), step_done=next(dones))

    runner = ClosedLoopVLA(policy)
    runner.plan = plan
    monkeypatch.setattr(policy, "predict_chunk", fake_chunk)
    for _ in range(8):
        runner.act(observation())
    assert texts == ["pick up the red block", "place the red block in the bowl",
                     "place the red block in the bowl", "place the red block in the bowl"]
    assert runner.plan_step == 1  # never runs past the last step
