"""The scripted control (`policies.scripted.ScriptedModel`): rule-based plans from ids, waypoint chunks from the
located objects, and a whole episode through `VLAAgent` in the real simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keystone_vla.errors import GroundingError
from keystone_vla.policies.scripted import ScriptedModel, StepSpec, read_step
from keystone_vla.types import EpisodeSpec, Observation

DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # the hand pointing down, yaw 0 (the panda's home orientation)


def hand(pos, yaw: float = 0.0) -> np.ndarray:
    """ee_pose float32 [7]: `pos` with the top-down hand turned to `yaw`."""
    from keystone_vla.sim.geometry import quat_multiply

    turn = np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])
    return np.array([*pos, *quat_multiply(turn, DOWN)], np.float32)


def observe(ee: np.ndarray, opening: float) -> Observation:
    state = np.zeros(8, np.float32)
    state[-1] = opening
    return Observation({"front": np.zeros((128, 128, 3), np.uint8)}, state, ee)


def located(part, target, ee_at_start) -> np.ndarray:
    return np.asarray([*part, *target, *ee_at_start], np.float32)


BLOCK = (0.5, 0.1, 0.02, 0.3, 0.04, 0.04, 0.04)  # x y z yaw size_xyz, as the scene locates a 4 cm block


def path(chunk) -> np.ndarray:
    """Commanded positions relative to the start, float [H, 3]."""
    return np.cumsum(chunk.actions[:, :3], axis=0)


# ---------------------------------------------------------------------------------------------- plans
def test_plans_a_put_down_from_the_scene_ids_with_texts_it_reads_back():
    plan = ScriptedModel().plan("pick up the red cube and drop it in the green container", None,
                                objects=["green_bowl", "red_block", "blue_cylinder"])
    assert plan.calls() == ["pick(red_block)", "place_in(red_block, green_bowl)"]
    assert [read_step(s.text) for s in plan.steps] == [StepSpec("pick", "block", "block"),
                                                     StepSpec("place_in", "block", "bowl")]


def test_a_colour_said_of_a_colourless_id_grounds():
    plan = ScriptedModel().plan("push the cyan pin into the hole", None, objects=["hole", "peg"])
    assert plan.calls() == ["pick(peg)", "insert(peg, hole)"]


def test_scene_objects_resolve_what_ids_cannot():
    from keystone_vla.perception.objects import DetectedObject

    ids = ["green_bowl", "blue_bowl", "red_block"]
    with pytest.raises(GroundingError, match="ambiguous"):  # ids carry no pose
        ScriptedModel().plan("put the red block in the left bowl", None, objects=ids)
    scene = [DetectedObject("green_bowl", "green", "bowl", [0.5, 0.2, 0.0]),
             DetectedObject("blue_bowl", "blue", "bowl", [0.5, -0.2, 0.0]),
             DetectedObject("red_block", "red", "block", [0.4, 0.0, 0.02])]
    plan = ScriptedModel().plan("put the red block in the left bowl", None, objects=scene)
    assert plan.calls() == ["pick(red_block)", "place_in(red_block, green_bowl)"]


@pytest.mark.parametrize("text", [
    "build a tower: red at the bottom, then blue, then green",
    "stack the blocks with red at the bottom, blue in the middle and green on top",
    "make a tower of red, blue and green, from the bottom up",
    "build a tower with green on top of blue on top of red",
    "assemble a tower: first red, next blue, last green",
])
def test_tower_instructions_are_stacked_bottom_first(text):
    ids = ["yellow_block", "green_block", "blue_block", "red_block"]
    assert ScriptedModel().plan(text, None, objects=ids).calls() == [
        "pick(blue_block)", "place_on(blue_block, red_block)", "pick(green_block)", "place_on(green_block, blue_block)"]


def test_a_kit_pairs_each_slot_with_the_part_of_its_shape():
    ids = ["kit", "bar_slot", "disc_slot", "blue_disc", "red_bar"]
    assert ScriptedModel().plan("assemble the kit", None, objects=ids).calls() == [
        "pick(red_bar)", "place_in(red_bar, bar_slot)", "pick(blue_disc)", "place_in(blue_disc, disc_slot)"]


def test_refuses_what_the_rules_cannot_ground():
    with pytest.raises(GroundingError, match="purple block"):
        ScriptedModel().plan("put the purple block in the green bowl", None, objects=["green_bowl", "red_block"])
    with pytest.raises(GroundingError, match="bar slot has no matching"):
        ScriptedModel().plan("assemble the kit", None, objects=["kit", "bar_slot", "red_disc"])


# ---------------------------------------------------------------------------------------------- chunks
def test_pick_chunks_move_toward_the_part_and_close_only_at_it():
    model = ScriptedModel()
    start = hand((0.42, 0.0, 0.36))
    so = located(BLOCK, BLOCK, start)
    far = model.predict_chunk(observe(start, 1.0), "pick up the red block", so)
    assert far.actions.shape == (8, 7) and far.actions.dtype == np.float32
    xy = start[:2] + path(far)[:, :2]
    gaps = np.linalg.norm(xy - np.array(BLOCK[:2]), axis=1)
    assert np.all(np.diff(gaps) < 0) and gaps[-1] < np.linalg.norm(start[:2] - BLOCK[:2]) - 0.1
    assert np.all(far.actions[:, 6] == 0.0) and far.step_done == 0.0
    assert far.actions[0, 5] > 0  # turning toward the block's yaw (0.3 rad)

    above = model.predict_chunk(observe(hand((0.5, 0.1, 0.06), 0.3), 1.0), "pick up the red block", so)
    assert np.all(above.actions[:, 6] == 0.0) and above.actions[0, 2] < 0  # still open, descending

    at = model.predict_chunk(observe(hand((0.5, 0.1, 0.021), 0.3), 1.0), "pick up the red block", so)
    assert np.all(at.actions[:, 6] == 1.0) and np.abs(at.actions[:, :3]).max() == 0.0  # close in place

    gripped = observe(hand((0.5, 0.1, 0.021), 0.3), 0.5)
    model.predict_chunk(gripped, "pick up the red block", so)  # the fingers are still closing
    lift = model.predict_chunk(gripped, "pick up the red block", so)  # they have stopped: lift
    assert np.all(lift.actions[:, 6] == 1.0) and lift.actions[0, 2] > 0


def test_put_down_opens_at_the_release_height_then_retreats_and_ends_the_step():
    model = ScriptedModel()
    target = (0.5, -0.1, 0.02, 0.0, 0.04, 0.04, 0.04)
    text = "place the red block on the blue block"
    carry = hand((0.45, 0.0, 0.22))
    moving = model.predict_chunk(observe(carry, 0.5), text, located((0.45, 0.0, 0.22, 0.0, 0.04, 0.04, 0.04),
                                                                     target, carry))
    assert np.all(moving.actions[:, 6] == 1.0) and moving.step_done == 0.0
    release = (0.5, -0.1, 0.02 + 0.02 + 0.02 + 0.002)  # the target's top + half the part + 2 mm
    at = hand(release)
    so = located((*release, 0.0, 0.04, 0.04, 0.04), target, at)
    opening = model.predict_chunk(observe(at, 0.5), text, so)
    assert np.all(opening.actions[:, 6] == 0.0) and opening.step_done == 0.0
    retreat = model.predict_chunk(observe(at, 1.0), text, so)
    assert retreat.actions[0, 2] > 0 and np.all(retreat.actions[:, 6] == 0.0) and retreat.step_done == 1.0


# ---------------------------------------------------------------------------------------------- wiring
def test_registered_as_an_agent_policy_with_the_shipped_agent_by_default():
    from keystone_vla.policies.registry import agent_config_of, load_policy
    from keystone_vla.policies.vla_agent import VLAAgent

    assert agent_config_of("scripted").preset == "shipped"
    assert agent_config_of("scripted", "raw").assists == ()
    agent = load_policy("scripted")
    assert isinstance(agent, VLAAgent) and isinstance(agent.vla, ScriptedModel)
    assert agent.cameras == ("front",) and agent.image_size == 128 and agent.runtime.config.n_action_steps == 2


@pytest.mark.slow
def test_completes_a_pick_place_episode_in_the_real_simulator():
    from keystone_vla.policies.registry import load_policy
    from keystone_vla.sim.rollout import run_episode

    agent = load_policy("scripted")
    rec = run_episode(EpisodeSpec("pick_place", 0, "seen", "panda"), policy=agent, cameras=("front",),
                      image_size=128, record=False)
    assert rec.success and rec.steps < 120
    assert agent.plan.calls() == rec.plan.calls()
