"""The reader (`perception.reader`): operators' own words over the scene -> one plan, or a refusal naming what was
wrong; and the one cross-check every execution path runs (`grounding.plan_checked`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from keystone_vla.perception.grounding import AskBack, plan_checked
from keystone_vla.perception.objects import DetectedObject
from keystone_vla.perception.reader import Options, Reading, Refusal, read_instruction, typo_fix
from keystone_vla.policies.episode import instruction_split
from keystone_vla.policies.registry import shipped_checkpoint
from keystone_vla.robots import PANDA

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from eval_language import run_rows, scene_objects  # noqa: E402


def obj(id_: str, colour: str | None, shape: str, x: float, y: float, detail: str | None = None) -> DetectedObject:
    return DetectedObject(id_, colour, shape, [x, y, 0.02], 0.0, [0.04, 0.04, 0.04], 1.0, detail)


BLOCKS = [obj("red_block", "red", "block", 0.5, 0.15), obj("blue_block", "blue", "block", 0.5, 0.0),
          obj("green_block", "green", "block", 0.5, -0.15)]
TOWER = ["pick(blue_block)", "place_on(blue_block, red_block)", "pick(green_block)", "place_on(green_block, blue_block)"]
PP = [obj("green_bowl", "green", "bowl", 0.6, 0.0), obj("red_block", "red", "block", 0.45, 0.1),
      obj("blue_cylinder", "blue", "cylinder", 0.45, -0.1)]
PP_PLAN = ["pick(red_block)", "place_in(red_block, green_bowl)"]


def calls(text: str, scene: list[DetectedObject], **kw: object) -> list[str] | str:
    got = read_instruction(text, scene, PANDA, **kw)
    return got.calls() if isinstance(got, Reading) else got.kind


@pytest.mark.parametrize("text", [
    "could you move the red block into the green bowl", "the red block goes in the green bowl",
    "into the green bowl, put the red block", "please grab the red cube and drop it in the container",
    "put the red one in the bowl", "put the red brick in the gren bowl", "I'd like the red box in the green bowl",
])
def test_phrasings_a_person_reads_plan_exactly(text: str) -> None:
    assert calls(text, PP) == PP_PLAN


@pytest.mark.parametrize("text", [
    "build a tower: red at the bottom, then blue, then green", "red under blue under green", "green on blue on red",
    "from top to bottom: green, blue, red", "put blue on red, then green on blue",
    "build a tower with green on top and red at the base",  # partial: the scene's one other block is the middle
    "i want green at the top, blue under it and red under that",
])
def test_tower_orders_bottom_up_top_down_relations_and_partial(text: str) -> None:
    assert calls(text, BLOCKS) == TOWER


def test_tower_orders_the_scene_cannot_complete_are_refused() -> None:
    four = [*BLOCKS, obj("yellow_block", "yellow", "block", 0.6, 0.0)]
    assert calls("build a tower with red at the bottom and green on top", four) == "ambiguous"
    assert calls("skip the yellow one; red at the bottom and green on top", four) == TOWER
    assert calls("red on blue and blue on red", BLOCKS) == "contradictory"


@pytest.mark.parametrize(("text", "kind", "named"), [
    ("", "empty", "empty"), ("   ", "empty", "empty"), ("blorf snizzle wimmet", "gibberish", "understand"),
    ("pon el bloque rojo en el cuenco verde", "gibberish", "english"),
    ("don't touch the red block", "negation", "not"), ("throw the red block at me", "unsafe", "throw"),
    ("move the red block as fast as you can", "unsafe", "fast"), ("shake the green bowl", "unsupported_action", "shake"),
    ("put the red block in the purple bowl", "unknown_object", "purple bowl"),
    ("put the blue one in the bowl and the blue one on the block", "invalid_plan", "same part"),
])
def test_refusals_name_what_was_wrong(text: str, kind: str, named: str) -> None:
    got = read_instruction(text, PP, PANDA)
    assert isinstance(got, Refusal) and got.kind == kind, got
    assert named in got.reason.lower()


def test_typos_are_repaired_only_where_a_person_reads_past_them() -> None:
    assert typo_fix("gren") == "green" and typo_fix("blu") == "blue" and typo_fix("blcok") == "block"
    assert typo_fix("bed") is None  # a real word one letter from 'red' is not read as red
    assert calls("put the red blok in the gren bowl", PP, opts=Options(typos=False)) != PP_PLAN


def test_parts_sharing_a_place_and_plans_that_leave_a_part_in_the_hand() -> None:
    scene = [*PP, obj("blue_block", "blue", "block", 0.45, -0.2)]
    assert calls("put the red block and the blue block in the bowl", scene) == [
        *PP_PLAN, "pick(blue_block)", "place_in(blue_block, green_bowl)"]
    assert calls("put the red block and the blue block on the blue cylinder", scene) == "invalid_plan"
    assert calls("pick up the red block, then pick up the blue block", scene) == "invalid_plan"


def test_ambiguous_and_relative_references() -> None:
    two = [*PP, obj("red_block_2", "red", "block", 0.45, -0.2)]
    assert calls("put the red block in the bowl", two) == "ambiguous"
    assert calls("put the left red block in the bowl", two) == PP_PLAN
    assert calls("stack the red cube on top of the blue one", BLOCKS) == ["pick(red_block)",
                                                                          "place_on(red_block, blue_block)"]
    assert calls("put the blue block under the red block", BLOCKS) == ["pick(red_block)",
                                                                      "place_on(red_block, blue_block)"]


def test_kit_reads_all_parts_or_the_named_order() -> None:
    kit = scene_objects(["kit", "square_slot", "disc_slot", "red_square", "blue_disc"])
    got = read_instruction("fill the kit with the parts", kit, PANDA)
    assert isinstance(got, Reading) and got.order_free
    assert sorted(got.calls()) == sorted(["pick(red_square)", "place_in(red_square, square_slot)",
                                          "pick(blue_disc)", "place_in(blue_disc, disc_slot)"])
    got = read_instruction("the disc first, then the square", kit, PANDA)
    assert isinstance(got, Reading) and not got.order_free and got.calls()[0] == "pick(blue_disc)"
    assert calls("put the blue disc in its slot", kit) == ["pick(blue_disc)", "place_in(blue_disc, disc_slot)"]


def test_instruction_split_follows_its_colours() -> None:
    assert instruction_split("put the orange block in the cyan bowl") == "unseen"
    assert instruction_split("put the red block in the green bowl") == "seen"
    assert instruction_split("assemble the kit") is None
    assert instruction_split("put the tee in its slot") == "unseen"
    assert instruction_split("put the L piece, the T piece and the disc into their slots") == "unseen"
    assert instruction_split("put the disc in its slot") is None
    # two seen shapes: no unseen kit holds them (it has one seen shape beside the held-out two)
    assert instruction_split("Start with the disc, then the square, and do the bar last.") == "seen"
    assert instruction_split("place teh square, the disc and the bar into the kit, in that order") == "seen"
    # a typo the reader repairs names its colour here too
    assert instruction_split("fit the purpel peg into the hole please") == "unseen"


def test_dev_set_reads_exactly_and_refuses_rightly() -> None:
    """The development phrasings (tests/data/language/dev_operator_set.json), the reader standing in for the model."""
    from eval_language import _Reader

    data = json.loads((ROOT / "tests/data/language/dev_operator_set.json").read_text())
    res = run_rows(data, _Reader(), Options())
    assert res["groundable"]["wrong"] == 0
    assert res["groundable"]["exact"] == res["groundable"]["n"], res["misses"]
    assert res["must_refuse"]["refused_right"] == res["must_refuse"]["n"], res["refusal_misses"]


@pytest.mark.slow
@pytest.mark.skipif(shipped_checkpoint() is None, reason="keystone-base is not installed")
def test_model_plan_is_checked_against_the_reading() -> None:
    from keystone_vla.vla.policy import VLAPolicy

    vla = VLAPolicy.from_pretrained(shipped_checkpoint(), warmup=False)
    plan = plan_checked(vla, "could you put the red brick into the green container", PP, PANDA, None, 0.9)
    assert plan.calls() == PP_PLAN and plan.instruction.startswith("could you")
    plan = plan_checked(vla, "red under blue under green", BLOCKS, PANDA, None, 0.9)
    assert plan.calls() == TOWER
    # the plan grammar cannot end with a part in the hand when it has somewhere to go: the model's plan is not
    # the reading, so it asks back with the reading instead of moving
    with pytest.raises(AskBack, match="did you mean: pick up the red block"):
        plan_checked(vla, "pick up the red block", PP, PANDA, None, 0.9)
    # the one-pass check of an expected plan gives what decoding gives, right or wrong
    for text in ("build a tower: red at the bottom, then blue, then green", "stack the green block on the red one"):
        ids = [o.id for o in BLOCKS]
        decoded = vla.plan(text, objects=ids)
        conf = vla.last_plan_confidence
        assert vla.plan(text, objects=ids, expect=decoded).calls() == decoded.calls()
        assert abs(vla.last_plan_confidence - conf) < 1e-3
        wrong = read_instruction("red on blue on green", BLOCKS)
        assert vla.plan(text, objects=ids, expect=wrong.plan).calls() == decoded.calls()


def test_eval_runs_a_phrasing_in_the_split_its_colours_belong_to() -> None:
    from keystone_vla.policies.evaluate import EpisodeResult, EvalConfig, aggregate, make_jobs

    cfg = EvalConfig("oracle", ("pick_place",), episodes=2, instructions=(
        ("pick_place", "put the orange block in the cyan bowl"), ("insert", "insert the peg into the hole")))
    assert [(j.task, j.split) for j in make_jobs(cfg)] == [("pick_place", "unseen")] * 2 + [
        ("insert", "seen")] * 2 + [("insert", "unseen")] * 2
    # asked back and wrong plans executed are counted apart from plain refusals, in total and per cell
    results = [EpisodeResult(0, "stack", "seen", 0, "x", refused=True, asked_back=True),
               EpisodeResult(1, "stack", "seen", 1, "x", wrong_plan=True), EpisodeResult(2, "stack", "seen", 2, "x")]
    summary = aggregate(cfg, results, 1.0, {})
    assert (summary["refused"], summary["asked_back"], summary["wrong_plans_executed"]) == (1, 1, 1)
    assert summary["tasks"]["stack"]["seen"]["wrong_plans_executed"] == 1
