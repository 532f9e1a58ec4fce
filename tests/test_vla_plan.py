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


def test_grammar_only_offers_objects_whose_kind_fits_the_skill(tok):
    # a bowl is never picked, a block is never a place_in target, a peg goes into the hole only
    objects = ["yellow_bowl", "blue_block", "red_block", "peg", "hole"]
    g = PlanGrammar(tok, objects)
    g.advance(tok.skill_ids["place_in"])
    g.advance(tok.grammar_ids["("])
    firsts = {o for o in objects if all(t in g.allowed() for t in tok.object_ids(o)[:1])}
    assert "yellow_bowl" not in firsts and "hole" not in firsts and "blue_block" in firsts
    for t in tok.object_ids("blue_block"):
        g.advance(t)
    g.advance(tok.grammar_ids[","])
    allowed_words = set(g.allowed())
    assert tok.object_ids("yellow_bowl")[0] in allowed_words
    assert tok.object_ids("red_block")[0] not in allowed_words  # "red" would start red_block: not a receptacle
    g2 = PlanGrammar(tok, ["blue_block", "peg", "hole"])
    g2.advance(tok.skill_ids["insert"])
    g2.advance(tok.grammar_ids["("])
    for t in tok.object_ids("peg"):
        g2.advance(t)
    g2.advance(tok.grammar_ids[","])
    assert set(g2.allowed()) == {tok.object_ids("hole")[0]}
    with pytest.raises(GroundingError, match="nothing in the scene can be manipulated"):
        PlanGrammar(tok, ["yellow_bowl", "hole"])


def test_grammar_rejects_disallowed_tokens_and_empty_scenes(tok):
    with pytest.raises(GroundingError, match="no objects"):
        PlanGrammar(tok, [])
    g = PlanGrammar(tok, ["red_block"])
    assert [t for t in g.allowed()] == [tok.skill_ids["pick"]]  # one object: no two-argument skills
    g = PlanGrammar(tok, ["red_block", "blue_bowl"])  # place_on needs a second part; insert needs a hole
    assert sorted(g.allowed()) == sorted([tok.skill_ids["pick"], tok.skill_ids["place_in"]])
    with pytest.raises(GroundingError):
        g.advance(tok.eos_id)


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
    assert g.done and len(g.steps) == 1


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
