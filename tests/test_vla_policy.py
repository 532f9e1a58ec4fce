"""VLAPolicy inference API: un-normalised chunks, grounded plans, bf16, and input validation before the model runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_vla_helpers import STEP_OBJECTS, observation, tiny_checkpoint

from keystone_vla.errors import ModelError
from keystone_vla.perception.language import unnamed_parts
from keystone_vla.types import Observation, PlanStep
from keystone_vla.vla.policy import VLAPolicy

NORM = {
    "mode": "mean_std",
    "state": {"mean": [0.1] * 8, "std": [2.0] * 8, "min": [-5.0] * 8, "max": [5.0] * 8},
    "action": {"mean": [0.01, -0.02, 0.0, 0.0, 0.0, 0.0, 0.5], "std": [0.02, 0.03, 0.01, 0.1, 0.1, 0.1, 0.5],
               "min": [-1.0] * 7, "max": [1.0] * 7},
}


@pytest.fixture(scope="module", params=["chunk", "tokens"])
def policy(request, tmp_path_factory):
    folder = tiny_checkpoint(tmp_path_factory.mktemp(request.param), steps=2, action_head=request.param,
                             normalization=NORM)
    return VLAPolicy.from_pretrained(folder)


def test_predict_chunk_returns_physical_units(policy):
    obs = observation()
    chunk = policy.predict_chunk(obs, "pick up the red block", STEP_OBJECTS)
    assert chunk.actions.shape == (policy.config.chunk_size, 7) and chunk.actions.dtype == np.float32
    assert 0.0 <= chunk.step_done <= 1.0
    # recompute by hand: model output in normalised units, then mean/std from the checkpoint
    t = policy._tensors(obs, "pick up the red block", policy.check_step_objects(STEP_OBJECTS, obs))
    np.testing.assert_allclose(t["state"].numpy()[0], (obs.state - 0.1) / 2.0, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        prefix = policy.model.action_prefix(t["images"], t["instruction_ids"], t["state"],
                                            object_features=t["object_features"])
        z = (policy.model.chunk_forward(prefix) if policy.config.action_head == "chunk"
             else policy.model.token_generate(prefix))[0][0].numpy()
    expect = z * np.array(NORM["action"]["std"]) + np.array(NORM["action"]["mean"])
    expect[:, 6] = np.clip(expect[:, 6], 0, 1)
    np.testing.assert_allclose(chunk.actions, expect, rtol=1e-5, atol=1e-6)


def test_plan_is_grounded_in_the_given_objects(policy):
    objects = ["yellow_block", "plate", "orange_cylinder"]
    plan = policy.plan("put the yellow block on the plate", observation(), objects=objects)
    assert plan.steps and plan.instruction == "put the yellow block on the plate"
    for step in plan.steps:
        assert set(PlanStep.parse(step.call).args) <= set(objects)
        assert step.text  # rendered from the learned templates
    default = policy.plan("put the red block in the bowl")
    assert all(set(s.args) <= set(policy.config.known_objects) for s in default.steps)


def test_bf16_is_close_to_fp32(policy, tmp_path):
    from keystone_vla.vla.checkpoint import save_pretrained

    b = policy.bundle
    save_pretrained(tmp_path, b.model, b.tokenizer, b.normalizer, b.train_info)
    bf = VLAPolicy.from_pretrained(tmp_path, bf16=True)
    assert bf.model.dtype == torch.bfloat16
    obs = observation(seed=3)
    a32 = policy.predict_chunk(obs, "pick up the red block", STEP_OBJECTS).actions
    a16 = bf.predict_chunk(obs, "pick up the red block", STEP_OBJECTS).actions
    scale = np.array(NORM["action"]["std"])
    if policy.config.action_head == "chunk":
        assert np.abs((a32 - a16) / scale).max() < 0.15
    else:  # greedy bins may flip to a neighbour under bf16 rounding; the chunk must still be valid
        assert a16.shape == a32.shape and np.isfinite(a16).all()


def _explode(*_a, **_k):
    raise AssertionError("the model ran before the input was validated")


@pytest.mark.parametrize("case", ["empty", "blank", "overlong_words", "overlong_chars", "not_str", "nan_state",
                                  "wrong_state_size", "wrong_image_size", "missing_camera", "wrong_dtype",
                                  "no_step_objects", "short_step_objects", "nan_step_objects"])
def test_bad_input_is_rejected_before_the_model_runs(policy, monkeypatch, case):
    monkeypatch.setattr(policy.model, "action_prefix", _explode)
    monkeypatch.setattr(policy.model, "generate_plan", _explode)
    obs, text, step_objects = observation(), "pick up the red block", STEP_OBJECTS.copy()
    if case == "empty":
        text = ""
    elif case == "blank":
        text = "   "
    elif case == "overlong_words":
        text = " ".join(["block"] * 40)
    elif case == "overlong_chars":
        text = "a" * 400
    elif case == "not_str":
        text = 42
    elif case == "nan_state":
        obs.state[3] = np.nan
    elif case == "wrong_state_size":
        obs.state = np.zeros(5, np.float32)
    elif case == "wrong_image_size":
        obs.images["front"] = np.zeros((64, 64, 3), np.uint8)
    elif case == "missing_camera":
        obs.images = {"wrist": obs.images["front"]}
    elif case == "wrong_dtype":
        obs.images["front"] = obs.images["front"].astype(np.float32)
    elif case == "no_step_objects":
        step_objects = None
    elif case == "short_step_objects":
        step_objects = step_objects[:14]
    elif case == "nan_step_objects":
        step_objects[2] = np.nan
    with pytest.raises(ModelError) as err:
        policy.predict_chunk(obs, text, step_objects)
    msg = str(err.value)
    expected = {"empty": "empty", "blank": "empty", "overlong_words": "too long", "overlong_chars": "too long",
                "not_str": "string", "nan_state": "NaN", "wrong_state_size": "state has shape",
                "wrong_image_size": "[32, 32, 3]", "missing_camera": "lacks camera 'front'", "wrong_dtype": "uint8",
                "no_step_objects": "pass step_objects", "short_step_objects": "step_objects has shape [14]",
                "nan_step_objects": "NaN"}
    assert expected[case] in msg
    if case in ("empty", "overlong_words", "nan_state", "wrong_image_size"):
        with pytest.raises(ModelError):
            policy.plan(text if case in ("empty", "overlong_words") else "pick up the red block", obs)


def test_observation_contract_still_rejects_non_uint8_at_construction():
    from keystone_vla.errors import ConfigError

    with pytest.raises(ConfigError):
        Observation(images={"front": np.zeros((32, 32, 3), np.float32)}, state=np.zeros(8), ee_pose=np.zeros(7))


def test_plan_moves_only_parts_the_instruction_names_by_colour(policy):
    """Whatever the (here untrained) weights, a plan for an instruction that names colours never moves a part of
    another colour; an instruction naming no colour is not constrained; no named part at all is refused."""
    from keystone_vla.errors import GroundingError

    objects = ["red_block", "blue_block", "green_block", "yellow_block", "orange_cylinder", "plate"]
    for instruction in ("build a tower: red at the bottom, then blue, then green",
                        "make a tower of green, blue and red"):
        plan = policy.plan(instruction, observation(), objects=objects)
        moved = {a for s in plan.steps for a in s.args[:1]}
        assert plan.steps and moved <= {"red_block", "blue_block", "green_block"}, plan.calls()
    assert unnamed_parts("stack the blocks", objects) == set()
    assert unnamed_parts("Build a tower: red, then blue, then green.", objects) == {"yellow_block", "orange_cylinder"}
    assert unnamed_parts("put the red block on the plate", objects) == {"blue_block", "green_block", "yellow_block",
                                                                        "orange_cylinder"}
    with pytest.raises(GroundingError, match="no part of a named colour"):
        policy.plan("put the purple block on the plate", observation(), objects=objects)


def test_plan_rejects_bad_object_lists(policy):
    with pytest.raises(ModelError, match="object id"):
        policy.plan("put the red block in the bowl", objects=["red_block", ""])


def test_package_exports_are_lazy():
    import subprocess
    import sys

    code = ("import sys, keystone_vla.vla as v; assert 'torch' not in sys.modules; "
            "from keystone_vla.vla import VLAPolicy, get_preset; assert get_preset('tiny').preset == 'tiny'; "
            "assert 'torch' in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_plan_confidence_gate_refuses_unsure_plans_naming_the_guess(policy):
    """The least probability given to a chosen target token is kept; a plan below `min_confidence` is refused
    with the value, the threshold and the model's best guess; 0 never refuses."""
    from keystone_vla.errors import GroundingError

    objects = ["red_block", "blue_block", "green_bowl"]
    plan = policy.plan("stack the red block on the blue block", observation(), objects=objects)
    conf = policy.last_plan_confidence
    assert 0.0 < conf <= 1.0 and plan.steps
    if conf < 1.0:  # an untrained tiny model is unsure; the gate turns that into a refusal, never into motion
        with pytest.raises(GroundingError, match=rf"plan confidence {conf:.2f}.*best guess was pick\("):
            policy.plan("stack the red block on the blue block", observation(), objects=objects,
                        min_confidence=min(0.999, (conf + 1.0) / 2))
    again = policy.plan("stack the red block on the blue block", observation(), objects=objects,
                        min_confidence=conf / 2)
    assert again.calls() == plan.calls()
    with pytest.raises(ModelError, match="min_confidence"):
        policy.plan("stack the red block on the blue block", objects=objects, min_confidence=1.0)
