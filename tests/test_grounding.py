"""Grounding: references resolve to exactly one reachable scene object, or a Refusal a person understands."""

from __future__ import annotations

import pytest

from keystone_vla.perception.grounding import (
    GroundedPlan,
    Refusal,
    check_instruction,
    ground_instruction,
    ground_plan,
)
from keystone_vla.perception.language import parse_instruction
from keystone_vla.perception.objects import DetectedObject, as_scene
from keystone_vla.robots import PANDA
from keystone_vla.types import Plan, PlanStep


def obj(id_: str, colour: str | None, shape: str, x: float, y: float, detail: str | None = None) -> DetectedObject:
    return DetectedObject(id_, colour, shape, [x, y, 0.02], 0.0, [0.04, 0.04, 0.04], 1.0, detail)


SCENE = [obj("red_block", "red", "block", 0.50, 0.10), obj("blue_block", "blue", "block", 0.50, -0.10),
         obj("green_bowl", "green", "bowl", 0.60, 0.0)]


def test_grounds_pick_and_place_to_scene_ids() -> None:
    g = ground_instruction("put the red block in the green bowl", SCENE, PANDA)
    assert isinstance(g, GroundedPlan)
    assert g.calls() == ["pick(red_block)", "place_in(red_block, green_bowl)"]
    assert set(g.bindings) == {"red_block", "green_bowl"}
    g = ground_instruction("pick up the red cube and put it on the blue brick", SCENE, PANDA)
    assert g.calls() == ["pick(red_block)", "place_on(red_block, blue_block)"]


def test_unknown_object_refusal_names_what_is_there() -> None:
    r = ground_instruction("pick up the purple block", SCENE, PANDA)
    assert isinstance(r, Refusal) and r.kind == "unknown_object"
    assert r.reason == "no purple block is on the table; I see: red block, blue block, green bowl"
    r = ground_instruction("insert the peg into the hole", SCENE, PANDA)
    assert r.kind == "unknown_object" and r.reason.startswith("no peg is on the table")
    r = ground_instruction("pick up the red block", [], PANDA)
    assert r.kind == "unknown_object" and "no objects" in r.reason


def test_ambiguous_reference_refused_and_qualifiers_disambiguate() -> None:
    scene = [*SCENE, obj("red_block_2", "red", "block", 0.40, -0.20), obj("green_bowl_2", "green", "bowl", 0.70, 0.2)]
    r = ground_instruction("pick up the red block", scene, PANDA)
    assert isinstance(r, Refusal) and r.kind == "ambiguous"
    assert "2 of them" in r.reason and "the left red block" in r.reason
    assert ground_instruction("pick up the left red block", scene, PANDA).calls() == ["pick(red_block)"]
    assert ground_instruction("pick up the right red block", scene, PANDA).calls() == ["pick(red_block_2)"]
    assert ground_instruction("pick up the nearest red block", scene, PANDA).calls() == ["pick(red_block_2)"]
    g = ground_instruction("put the left red block in the farthest bowl", scene, PANDA)
    assert g.calls() == ["pick(red_block)", "place_in(red_block, green_bowl_2)"]
    # two objects equally far to the left cannot be told apart by 'left'
    tie = [obj("a", "red", "block", 0.4, 0.1), obj("b", "red", "block", 0.6, 0.1)]
    assert ground_instruction("pick up the left red block", tie, PANDA).kind == "ambiguous"


def test_unreachable_target_refused() -> None:
    scene = [*SCENE, obj("yellow_block", "yellow", "block", 0.95, 0.0)]
    r = ground_instruction("put the yellow block in the green bowl", scene, PANDA)
    assert isinstance(r, Refusal) and r.kind == "unreachable"
    assert "yellow block" in r.reason and "outside the panda arm's workspace" in r.reason
    # without a robot spec there is no reach check
    assert isinstance(ground_instruction("pick up the yellow block", scene), GroundedPlan)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("", "empty"), ("   \n", "empty"), ("x" * 10240, "too_long"), ("put the red block " * 600, "too_long"),
     ("asdf qwer zxcv", "gibberish"), ("colourless green ideas sleep furiously", "gibberish"),
     ("don't move the red block", "negation"), ("throw the red block", "unsafe"),
     ("shake the green bowl", "unsupported_action")],
)
def test_text_refusals(text: str, kind: str) -> None:
    r = ground_instruction(text, SCENE, PANDA)
    assert isinstance(r, Refusal) and r.kind == kind, r
    assert check_instruction(text).kind == kind
    assert len(r.reason) < 320  # the refusal is readable, not an echo of a 10 kB input


def test_over_long_refusal_says_the_limit() -> None:
    r = check_instruction("pick up the red block. " * 450)
    assert r.kind == "too_long" and "limit is 80 words" in r.reason and "2250 words" in r.reason
    sixty = "please could you, when you have a moment, pick up the red block " * 4  # 52 words: a long sentence
    assert check_instruction(sixty.strip()) is None


def test_unknown_words_are_read_past_but_unknown_objects_are_refused() -> None:
    assert check_instruction("carefully pick up the red block") is None
    g = ground_instruction("could you kindly move the red block into the green bowl", SCENE, PANDA)
    assert g.calls() == ["pick(red_block)", "place_in(red_block, green_bowl)"]
    r = ground_instruction("put the banana on the red block", SCENE, PANDA)
    assert isinstance(r, Refusal) and r.kind == "unknown_word" and "banana" in r.reason


def test_control_words_and_task_level_instructions() -> None:
    g = ground_instruction("stop", SCENE, PANDA)
    assert isinstance(g, GroundedPlan) and g.control == "stop" and g.calls() == []
    scene = [obj("red_block", "red", "block", 0.5, 0.1), obj("blue_block", "blue", "block", 0.5, -0.1),
             obj("green_block", "green", "block", 0.4, 0.0)]
    # task-level instructions are read whole: a tower's order, a kit's parts
    g = ground_instruction("build a tower: red at the bottom, then blue, then green", scene, PANDA)
    assert g.calls() == ["pick(blue_block)", "place_on(blue_block, red_block)", "pick(green_block)",
                         "place_on(green_block, blue_block)"]
    assert ground_instruction("assemble the kit", [obj("kit", None, "kit", 0.4, 0.0)], PANDA).kind == "unknown_object"
    r = ground_instruction("build a tower with purple on top of blue on top of red", scene, PANDA)
    assert r.kind == "unknown_object" and r.reason.startswith("no purple block")


def test_slots_and_kit_parts() -> None:
    scene = [obj("red_square", "red", "square", 0.55, 0.1), obj("square_slot", None, "slot", 0.4, 0.1, "square"),
             obj("bar_slot", None, "slot", 0.4, -0.1, "bar"), obj("kit", None, "kit", 0.4, 0.0)]
    g = ground_instruction("put the red square in the square slot", scene, PANDA)
    assert g.calls() == ["pick(red_square)", "place_in(red_square, square_slot)"]
    # 'the slot' for a square is the square's slot; another shape's slot is refused, naming both
    assert ground_instruction("put the red square in the slot", scene, PANDA).calls()[-1] == \
        "place_in(red_square, square_slot)"
    r = ground_instruction("put the red square in the bar slot", scene, PANDA)
    assert isinstance(r, Refusal) and "bar slot" in r.reason and "red square" in r.reason
    g = ground_instruction("put each part into its matching slot in the kit", scene, PANDA)
    assert g.calls() == ["pick(red_square)", "place_in(red_square, square_slot)"]


def test_ground_plan_maps_sim_style_ids_onto_perception_ids() -> None:
    perceived = [obj("obj_0", "red", "block", 0.5, 0.1), obj("obj_1", "green", "bowl", 0.6, 0.0)]
    plan = Plan("put the red block in the green bowl",
                (PlanStep.parse("pick(red_block)"), PlanStep.parse("place_in(red_block, green_bowl)")))
    g = ground_plan(plan, perceived, PANDA)
    assert isinstance(g, GroundedPlan) and g.calls() == ["pick(obj_0)", "place_in(obj_0, obj_1)"]
    r = ground_plan(Plan("x", (PlanStep.parse("pick(purple_block)"),)), perceived, PANDA)
    assert isinstance(r, Refusal) and r.kind == "unknown_object"
    far = [obj("red_block", "red", "block", 0.1, 0.7)]
    assert ground_plan(Plan("x", (PlanStep.parse("pick(red_block)"),)), far, PANDA).kind == "unreachable"


def test_scene_accepts_dicts_and_rejects_junk() -> None:
    scene = as_scene([{"id": "red_block", "colour": "red", "shape": "block", "position": [0.5, 0, 0.02]}])
    assert scene[0].label == "red block" and scene[0].to_dict()["position"] == [0.5, 0.0, 0.02]
    from keystone_vla.errors import ConfigError

    with pytest.raises(ConfigError, match="lacks position"):
        as_scene([{"id": "x", "shape": "block"}])


def test_parser_steps_and_extra_words() -> None:
    p = parse_instruction("insert the pin into the socket")
    assert [(s.skill, [a.describe() for a in s.args]) for s in p.steps] == [
        ("pick", ["peg"]), ("insert", ["peg", "hole"])]
    assert parse_instruction("stop").control == "stop"
    assert ground_instruction("stop", SCENE).control == "stop"
