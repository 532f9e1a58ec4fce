"""Word tokenizer and grammar-constrained plan decoding: output always parses and names only given objects."""

from __future__ import annotations

import random

import pytest
import torch

from keystone_vla.errors import GroundingError
from keystone_vla.types import SKILLS, PlanStep
from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.modeling import VLAModel
from keystone_vla.vla.plan_grammar import PlanGrammar, learn_step_templates, render_step_text
from keystone_vla.vla.tokenizer import WordTokenizer
from keystone_vla.vocab import kind_fits

CORPUS = ["put the red block in the green bowl", "pick up the red block", "stack the blue block on the red block"]


@pytest.fixture(scope="module")
def tok():
    return WordTokenizer.build(CORPUS)


def test_tokenizer_normalises_case_punctuation_and_object_ids(tok, tmp_path):
    assert tok.encode("Pick up the RED block.") == tok.encode("pick up the red block")
    assert tok.object_ids("red_block") == tok.encode("red block")
    assert tok.unknown_words("pick the zorblax") == ["zorblax"]
    tok.save(tmp_path)
    again = WordTokenizer.load(tmp_path)
    assert again.tokenizer.get_vocab() == tok.tokenizer.get_vocab()
    assert again.encode_fixed("pick up the red block", 10) == tok.encode_fixed("pick up the red block", 10)


def _decode(ids, tok, objects):
    """Turn plan ids back into calls by walking the grammar (independent of the model)."""
    g = PlanGrammar(tok, objects)
    for t in ids:
        g.advance(t)
    return g


def test_plan_target_is_accepted_by_the_grammar(tok):
    calls = [("pick", ("red_block",)), ("place_on", ("red_block", "blue_block"))]
    g = _decode(tok.plan_target(calls), tok, ["blue_block", "red_block", "green_bowl"])
    assert g.done and g.steps == calls


def test_random_walks_through_the_grammar_always_give_grounded_parseable_plans(tok):
    rng = random.Random(0)
    objects = ["red_block", "blue_block", "cross_slot", "cross", "orange_zorb"]  # prefix ids and unknown words
    for _ in range(300):
        g = PlanGrammar(tok, objects, max_steps=4)
        n = 0
        while not g.done:
            g.advance(rng.choice(g.allowed()))
            n += 1
            assert n < 200
        assert 1 <= len(g.steps) <= 4
        for call in g.calls():
            step = PlanStep.parse(call)
            assert set(step.args) <= set(objects)
            assert len(set(step.args)) == len(step.args)
            assert len(step.args) == len(SKILLS[step.skill])
            assert all(kind_fits(step.skill, i, a) for i, a in enumerate(step.args)), call


def _open_step(g, tok, skill, *args):
    """Advance `g` through ``skill(`` and each of `args` followed by a comma: the next argument is due."""
    g.advance(tok.skill_ids[skill])
    g.advance(tok.grammar_ids["("])
    for a in args:
        for t in tok.object_ids(a):
            g.advance(t)
        g.advance(tok.grammar_ids[","])


def _advance_call(g, tok, skill, *args):
    _open_step(g, tok, skill, *args[:-1])
    for t in tok.object_ids(args[-1]):
        g.advance(t)
    g.advance(tok.grammar_ids[")"])


def _first_words(g, tok, objects):
    allowed = set(g.allowed())
    return {o for o in objects if tok.object_ids(o)[0] in allowed}


def test_grammar_only_offers_objects_whose_kind_fits_the_skill(tok):
    # a bowl is never picked, a block is never a place_in target, a peg goes into the hole only
    objects = ["yellow_bowl", "blue_block", "red_block", "peg", "hole"]
    g = PlanGrammar(tok, objects)
    assert set(g.allowed()) == {tok.skill_ids["pick"]}  # empty hands: the plan starts with a pick
    g.advance(tok.skill_ids["pick"])
    g.advance(tok.grammar_ids["("])
    firsts = _first_words(g, tok, objects)
    assert "yellow_bowl" not in firsts and "hole" not in firsts and {"blue_block", "peg"} <= firsts
    for t in tok.object_ids("blue_block"):
        g.advance(t)
    g.advance(tok.grammar_ids[")"])
    g.advance(tok.grammar_ids[";"])
    g.advance(tok.skill_ids["place_in"])
    g.advance(tok.grammar_ids["("])
    assert set(g.allowed()) == {tok.object_ids("blue_block")[0]}  # only the held part is put down
    for t in tok.object_ids("blue_block"):
        g.advance(t)
    g.advance(tok.grammar_ids[","])
    allowed_words = set(g.allowed())
    assert tok.object_ids("yellow_bowl")[0] in allowed_words
    assert tok.object_ids("red_block")[0] not in allowed_words  # "red" would start red_block: not a receptacle
    g2 = PlanGrammar(tok, ["blue_block", "peg", "hole"])
    _advance_call(g2, tok, "pick", "peg")
    g2.advance(tok.grammar_ids[";"])
    _open_step(g2, tok, "insert", "peg")
    assert set(g2.allowed()) == {tok.object_ids("hole")[0]}
    with pytest.raises(GroundingError, match="nothing in the scene can be manipulated"):
        PlanGrammar(tok, ["yellow_bowl", "hole"])


def test_grammar_rejects_disallowed_tokens_and_empty_scenes(tok):
    with pytest.raises(GroundingError, match="no objects"):
        PlanGrammar(tok, [])
    g = PlanGrammar(tok, ["red_block"])
    assert [t for t in g.allowed()] == [tok.skill_ids["pick"]]  # one object: no two-argument skills
    _advance_call(g, tok, "pick", "red_block")
    assert g.allowed() == [tok.eos_id]  # nowhere to put it down: a lone pick is the whole plan
    g = PlanGrammar(tok, ["red_block", "blue_bowl"])  # with empty hands, only a pick can start a step
    assert g.allowed() == [tok.skill_ids["pick"]]
    with pytest.raises(GroundingError):
        g.advance(tok.eos_id)
    with pytest.raises(GroundingError):
        g.advance(tok.skill_ids["place_in"])


def test_grammar_follows_what_the_plan_has_done(tok):
    """A picked part is put down next (not left in the hand), each part moves once, a part with another on top
    is not picked, a block, slot or hole takes one part, and a slot only the part of its shape."""
    objects = ["red_block", "blue_block", "green_block", "blue_bowl"]
    g = PlanGrammar(tok, objects)
    _advance_call(g, tok, "pick", "red_block")
    assert g.allowed() == [tok.grammar_ids[";"]]  # the plan cannot end with the red block in the hand
    g.advance(tok.grammar_ids[";"])
    assert tok.skill_ids["pick"] not in g.allowed()  # the hand is full
    _advance_call(g, tok, "place_on", "red_block", "blue_block")
    assert set(g.allowed()) == {tok.grammar_ids[";"], tok.eos_id}
    g.advance(tok.grammar_ids[";"])
    g.advance(tok.skill_ids["pick"])
    g.advance(tok.grammar_ids["("])
    # red moved already and blue carries red: only green is left to pick
    assert _first_words(g, tok, objects) == {"green_block"}
    for t in tok.object_ids("green_block"):
        g.advance(t)
    g.advance(tok.grammar_ids[")"])
    g.advance(tok.grammar_ids[";"])
    _open_step(g, tok, "place_on", "green_block")
    assert set(g.allowed()) == {tok.object_ids("red_block")[0]}  # blue already carries red: on top of red only
    # kit slots: a part goes into the slot of its shape, and a filled slot takes no second part
    kit = WordTokenizer.build(["put the red bar in the bar slot", "red disc", "blue bar", "disc slot"])
    k = PlanGrammar(kit, ["red_bar", "blue_bar", "red_disc", "bar_slot", "disc_slot"])
    _advance_call(k, kit, "pick", "red_bar")
    k.advance(kit.grammar_ids[";"])
    _open_step(k, kit, "place_in", "red_bar")
    assert set(k.allowed()) == {kit.object_ids("bar_slot")[0]}
    for t in kit.object_ids("bar_slot"):
        k.advance(t)
    k.advance(kit.grammar_ids[")"])
    k.advance(kit.grammar_ids[";"])
    _advance_call(k, kit, "pick", "blue_bar")
    k.advance(kit.grammar_ids[";"])
    # the bar slot is taken and the disc slot has another shape: the blue bar can only go on a part
    assert set(k.allowed()) == {kit.skill_ids["place_on"]}


@pytest.mark.parametrize("seed", range(4))
def test_untrained_model_plans_parse_and_use_only_given_objects(tok, seed):
    torch.manual_seed(seed)
    cfg = get_preset("tiny", vocab_size=tok.vocab_size)
    model = VLAModel(cfg).eval()
    objects = ["red_block", "green_bowl", "purple_peg"][: 2 + seed % 2]
    for instruction in ["put the red block in the green bowl", "do something weird", "stack everything"]:
        g = model.generate_plan(tok.plan_prompt(instruction, objects), PlanGrammar(tok, objects, max_steps=5), 64)
        assert g.done and g.steps
        for call in g.calls():
            assert set(PlanStep.parse(call).args) <= set(objects)


def test_token_budget_forces_a_valid_close(tok):
    torch.manual_seed(0)
    model = VLAModel(get_preset("tiny", vocab_size=tok.vocab_size)).eval()
    objs = ["red_block", "green_bowl"]
    g = model.generate_plan(tok.plan_prompt("x", objs), PlanGrammar(tok, objs), max_new_tokens=3)
    # the shortest valid close of "pick(red": the pick, then the part put down where it can go
    assert g.done and g.steps == [("pick", ("red_block",)), ("place_in", ("red_block", "green_bowl"))]


def test_step_templates_are_learned_from_data():
    t = learn_step_templates([
        ("place_in", ("red_cross", "cross_slot"), "put the red cross in the cross slot"),
        ("place_in", ("blue_disc", "disc_slot"), "put the blue disc in the disc slot"),
        ("pick", ("red_cross",), "pick up the red cross"),
    ])
    assert t == {"place_in": "put the {0} in the {1}", "pick": "pick up the {0}"}
    assert render_step_text("place_in", ("green_tee", "tee_slot"), t) == "put the green tee in the tee slot"
    assert render_step_text("insert", ("peg", "hole"), t) == "insert the peg into the hole"


def test_colour_swap_renames_consistently_across_instruction_plan_and_scene():
    from keystone_vla.vla.data import PlanExample, swap_colours

    ex = PlanExample("stack the red block on the blue block",
                     (("pick", ("red_block",)), ("place_on", ("red_block", "blue_block"))), ("a", "b"),
                     ("red_block", "blue_block", "green_bowl"))
    for seed in range(20):
        out = swap_colours(ex, ("red", "blue", "orange", "cyan"), random.Random(seed))
        words = out.instruction.split()
        top, bottom = words[2], words[6]
        assert out.calls == (("pick", (f"{top}_block",)), ("place_on", (f"{top}_block", f"{bottom}_block")))
        assert top != bottom and {f"{top}_block", f"{bottom}_block", "green_bowl"} == set(out.objects)


def test_grammar_says_when_a_target_is_being_decoded(tok):
    """`in_target` is true exactly while the decoder names where a part goes (the plan-confidence gate reads it)."""
    calls = [("pick", ("red_block",)), ("place_on", ("red_block", "blue_block"))]
    g = PlanGrammar(tok, ["blue_block", "red_block", "green_bowl"])
    inside = []
    for t in tok.plan_target(calls):
        inside.append(g.in_target)
        g.advance(t)
    words = [tok.tokenizer.id_to_token(t) for t in tok.plan_target(calls)]
    targets = [w for w, flag in zip(words, inside) if flag]
    assert targets == ["blue", "block", ")"]  # place_on's second argument and the token that closes it
    assert g.target_confidence == 1.0  # nothing decoded by a model yet
