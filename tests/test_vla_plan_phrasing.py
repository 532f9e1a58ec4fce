"""Relational re-descriptions of stacking plans (the plan adapter's text augmentation)."""

from __future__ import annotations

import random
import re

import pytest

from keystone_vla.errors import ConfigError
from keystone_vla.vla.data import PlanExample
from keystone_vla.vla.plan_phrasing import describe_chain, held_out_patterns, redescribe, stack_chain

TOWER = PlanExample("build a tower: red at the bottom, then blue, then green",
                    (("pick", ("blue_block",)), ("place_on", ("blue_block", "red_block")),
                     ("pick", ("green_block",)), ("place_on", ("green_block", "blue_block"))),
                    ("pick up the blue block", "place it", "pick up the green block", "place it"),
                    ("blue_block", "green_block", "red_block", "white_block"), "build_tower")


def test_stack_chain_reads_the_plan_bottom_first_and_rejects_other_plans():
    assert stack_chain(TOWER) == ["red_block", "blue_block", "green_block"]
    stack = PlanExample("s", (("pick", ("a_block",)), ("place_on", ("a_block", "b_block"))), ())
    assert stack_chain(stack) == ["b_block", "a_block"]
    broken = PlanExample("s", TOWER.calls[:2] + (("pick", ("green_block",)), ("place_on", ("green_block", "red_block"))), ())
    kit = PlanExample("k", (("pick", ("red_bar",)), ("place_in", ("red_bar", "bar_slot"))), ())
    odd = PlanExample("o", TOWER.calls[:3], ())
    loop = PlanExample("l", (("pick", ("a_block",)), ("place_on", ("a_block", "b_block")),
                             ("pick", ("b_block",)), ("place_on", ("b_block", "a_block"))), ())
    assert [stack_chain(e) for e in (broken, kit, odd, loop)] == [None] * 4


def test_descriptions_name_the_end_blocks_once_and_say_the_order_both_ways():
    rng = random.Random(0)
    texts = [describe_chain(["red_block", "blue_block", "green_block"], rng) for _ in range(400)]
    for t in texts:
        words = re.findall(r"[a-z]+", t)
        # pairwise relations name the middle block in both of its relations
        assert words.count("red") == words.count("green") == 1 and words.count("blue") in (1, 2), t
    # both reading directions occur: text order bottom-first and top-first
    first = [min(("red", "green"), key=lambda c, t=t: t.index(c)) for t in texts]
    assert 0.25 < first.count("red") / len(first) < 0.75
    assert any("under" in t or "below" in t or "beneath" in t for t in texts)
    assert any("top to bottom" in t or "from the top down" in t for t in texts)
    with pytest.raises(ValueError, match="at least 2"):
        describe_chain(["red_block"], rng)


def test_held_out_templates_are_never_produced():
    patterns = held_out_patterns(["{c} on {b} on {a}", "build a tower with {c} on top of {b} on top of {a}"])
    assert patterns[1].match("build a tower with the green block on top of blue on top of the red cube")
    assert not patterns[1].match("i want a tower with green on top of blue on top of red")
    rng = random.Random(1)
    # unguarded, the grammar does produce the first pattern's shape
    assert any(patterns[0].match(describe_chain(["red_block", "blue_block", "green_block"], rng)) for _ in range(500))
    for _ in range(500):
        ex = redescribe(TOWER, rng, patterns)
        assert not any(p.match(ex.instruction) for p in patterns), ex.instruction


def test_redescribe_keeps_the_plan_and_leaves_other_plans_alone():
    rng = random.Random(2)
    new = redescribe(TOWER, rng)
    assert new.instruction != TOWER.instruction
    assert (new.calls, new.texts, new.objects, new.task) == (TOWER.calls, TOWER.texts, TOWER.objects, TOWER.task)
    kit = PlanExample("assemble the kit", (("pick", ("red_bar",)), ("place_in", ("red_bar", "bar_slot"))), ())
    assert redescribe(kit, rng) is kit


class RecordingEncoder:
    """The real MiniLM encoder, also recording which instruction texts each batch was built from."""

    def __init__(self, encoder) -> None:
        self.encoder, self.texts = encoder, []

    def encode(self, texts):
        self.texts.extend(texts)
        return self.encoder.encode(texts)


def test_collator_applies_relation_phrasing_to_stacking_plans_only():
    from test_vla_plan_adapter import _examples

    from keystone_vla.text_encoder import MiniLMEncoder
    from keystone_vla.vla.configuration import get_preset
    from keystone_vla.vla.plan_adapter import PlanAdapterCollator
    from keystone_vla.vla.tokenizer import WordTokenizer

    examples = _examples()
    tok = WordTokenizer.build([e.instruction for e in examples] + ["grey bowl block"])
    cfg = get_preset("tiny", vocab_size=tok.vocab_size)
    with pytest.raises(ConfigError, match="relation_phrasing"):
        PlanAdapterCollator(cfg, tok, RecordingEncoder(None), examples, (), relation_phrasing=1.5)
    enc = RecordingEncoder(MiniLMEncoder())
    coll = PlanAdapterCollator(cfg, tok, enc, examples, (), noise=False, relation_phrasing=1.0,
                               held_out=("{a} on {b}",))
    coll.plan_batch(examples * 5)
    held = held_out_patterns(("{a} on {b}",))
    for ex, text in zip(examples * 5, enc.texts):
        if ex.calls[-1][0] == "place_on":  # a stack: re-described, never as the held-out template
            assert text != ex.instruction and not held[0].match(text), text
        else:  # a bowl plan is not a stack: as it was
            assert text == ex.instruction
    enc.texts.clear()
    PlanAdapterCollator(cfg, tok, enc, examples, (), noise=False).plan_batch(examples)
    assert enc.texts == [e.instruction for e in examples]


def test_forms_can_be_chosen_and_descriptions_filtered_by_length():
    from keystone_vla.vla.plan_phrasing import FORMS

    rng = random.Random(3)
    chain = ["red_block", "blue_block", "green_block"]
    seq = describe_chain(chain, rng, "sequence")
    assert seq.index("red") < seq.index("blue") < seq.index("green")  # the build order, bottom first
    assert all(describe_chain(chain, rng, f) for f in FORMS)
    with pytest.raises(ValueError, match="roles"):
        describe_chain(chain[:2], rng, "roles")
    short = [redescribe(TOWER, rng, fits=lambda t: len(t.split()) <= 6).instruction for _ in range(50)]
    assert all(len(t.split()) <= 6 or t == TOWER.instruction for t in short)
    assert redescribe(TOWER, rng, fits=lambda t: False) is TOWER
