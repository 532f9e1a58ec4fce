"""Constrained decoding for the plan head: which token ids may come next so the output stays a valid plan.

`PlanGrammar` is a small state machine over the word-level ids of `tokenizer.WordTokenizer`:

    plan  := step (";" step)* EOS          (at most `max_steps` steps, at least 2 allowed)
    step  := SKILL "(" obj ("," obj)* ")"  (exactly the skill's arity, `keystone_vla.types.SKILLS`)
    obj   := the parts of one of the scene's object ids (a trie over ``red_block`` -> ``red block``)

Arguments of one step are distinct objects whose kinds fit the skill (`vocab.SKILL_ARG_KINDS`: only movable
parts are picked, ``place_in`` targets are receptacles, ``insert`` targets are holes or slots), and a skill is
only offered when the scene has objects to fill all its arguments.

The machine also tracks what the steps decoded so far do to the scene, and only offers steps that still make
sense after them (the plan head's wrong plans on unseen phrasings broke exactly these rules: a second
``place_in`` of a part already put down, a ``place_on`` with nothing in the hand, a part parked on another part
when the kit had its slot):

- a ``pick`` is followed by a step that puts *that* part down (``place_on``, ``place_in`` or ``insert`` with
  it as first argument), and the plan does not end with a part in the hand, unless the scene has nowhere that
  part could go (then a lone pick is the whole plan);
- each part is picked at most once, and never while another part sits on it;
- a part, a slot or a hole takes one part (bowls, plates and the kit take several); a slot takes only the part
  of its shape (``bar_slot`` <- a ``bar``).

So every path through the machine ends in a plan that parses, names only given objects, and asks for nothing
physically meaningless. The model only chooses among `allowed()` ids; whatever its weights, it cannot produce
an unparseable, ungrounded or self-contradicting plan. This module must never import torch: it is pure
bookkeeping, tested without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from keystone_vla.errors import GroundingError
from keystone_vla.types import SKILLS
from keystone_vla.vla.tokenizer import WordTokenizer
from keystone_vla.vocab import kind_fits, object_kind

PICK = "pick"
MULTI_TARGET_KINDS = frozenset({"bowl", "plate", "kit"})  # receptacles that take more than one part


def _single_target(object_id: str) -> bool:
    return object_kind(object_id) not in MULTI_TARGET_KINDS


def _shape_fits(part: str, target: str) -> bool:
    """A slot takes only the part of its shape (``bar_slot`` <- ``red_bar``); anything else is not judged here."""
    part_kind = object_kind(part)
    if object_kind(target) != "slot" or part_kind is None:
        return True
    return part_kind == target.rsplit("_", 1)[0].rsplit("_", 1)[-1]


@dataclass
class _Trie:
    children: dict[int, _Trie] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)  # ids ending exactly here (first one wins on ties)


class PlanGrammar:
    """Tracks one plan being decoded; call `allowed()` then `advance(token_id)` until `done`."""

    def __init__(self, tokenizer: WordTokenizer, objects: Sequence[str], max_steps: int = 12) -> None:
        objs = list(dict.fromkeys(o for o in objects if o))
        if not objs:
            raise GroundingError("no objects to plan over; pass the scene's object ids, e.g. ['red_block', 'blue_bowl']")
        self.tok = tokenizer
        self.objects = objs
        self.max_steps = max(2, max_steps)  # room for a pick and its put-down
        self._paths = {o: tokenizer.object_ids(o) for o in objs}
        self._skills = {s: len(r) for s, r in SKILLS.items() if self._first_args(s)}
        if not self._skills:
            raise GroundingError(f"nothing in the scene can be manipulated ({', '.join(objs)}): no skill fits these "
                                 "objects, so there is no plan to make")
        g = tokenizer.grammar_ids
        self._lp, self._rp, self._comma, self._semi = g["("], g[")"], g[","], g[";"]
        self._skill_of_id = {tokenizer.skill_ids[s]: s for s in self._skills}
        self.steps: list[tuple[str, tuple[str, ...]]] = []
        self._held: str | None = None  # the part picked by the last step, until a step puts it down
        self._moved: set[str] = set()  # parts picked so far (each part moves once)
        self._occupied: set[str] = set()  # parts, slots and holes that received a part (they take one)
        if not any(self._pickable(o) for o in self.objects):
            raise GroundingError(f"nothing in the scene can be manipulated ({', '.join(objs)}): no part can be "
                                 "picked, so there is no plan to make")
        self.done = False
        #: set by the decoder: the lowest probability it gave a chosen token of a step's target (where a part
        #: goes) among the tokens allowed there, 1.0 when no target was a choice (`VLAPolicy.plan` refuses below
        #: its threshold)
        self.target_confidence = 1.0
        self._state = "skill"
        self._skill = ""
        self._args: list[str] = []
        self._node: _Trie | None = None
        self._node_depth = 0

    # ---- the machine -----------------------------------------------------------------------------------
    def _first_args(self, skill: str) -> list[str]:
        """Objects that can open a `skill` step: the kind fits and the remaining arguments can still be filled."""
        arity = len(SKILLS[skill])
        return [o for o in self.objects if kind_fits(skill, 0, o) and
                all(any(kind_fits(skill, i, p) and p != o for p in self.objects) for i in range(1, arity))]

    def _targets(self, skill: str, part: str) -> list[str]:
        """Where `skill` may put `part` down, given what the plan so far has done."""
        return [o for o in self.objects if o != part and kind_fits(skill, 1, o) and _shape_fits(part, o)
                and not (o in self._occupied and _single_target(o))]

    def _pickable(self, part: str) -> bool:
        return kind_fits(PICK, 0, part) and part not in self._moved and part not in self._occupied

    def _can_put_down(self, part: str) -> bool:
        return any(self._targets(s, part) for s in self._skills if s != PICK)

    def _pick_candidates(self) -> list[str]:
        """Parts a next pick may take: pickable, with room left for its put-down step when it has a target."""
        if PICK not in self._skills:
            return []
        room = self.max_steps - len(self.steps)
        return [o for o in self.objects
                if self._pickable(o) and room >= 1 and (room >= 2 or not self._can_put_down(o))]

    def _open_skills(self) -> list[str]:
        """Skills the next step may use: a pick with empty hands, a put-down of the held part otherwise."""
        if self._held is None:
            return [PICK] if self._pick_candidates() else []
        return [s for s in self._skills if s != PICK and self._targets(s, self._held)]

    def _candidates(self) -> list[str]:
        """Objects allowed as the next argument of the step being decoded."""
        i = len(self._args)
        if self._skill == PICK:
            return self._pick_candidates()
        if i == 0:
            return [self._held] if self._held is not None else []
        return [o for o in self._targets(self._skill, self._args[0]) if o not in self._args]

    def _trie(self) -> _Trie:
        root = _Trie()
        for obj in self._candidates():
            path = self._paths[obj]
            node = root
            for tid in path:
                node = node.children.setdefault(tid, _Trie())
            node.objects.append(obj)
        return root

    @property
    def in_target(self) -> bool:
        """Whether the next token belongs to a step's second or later argument: where the part goes."""
        return self._state == "obj" and len(self._args) >= 1

    def allowed(self) -> list[int]:
        """Token ids that keep the output a valid, grounded prefix (never empty until `done`)."""
        if self.done:
            return []
        if self._state == "skill":
            open_skills = self._open_skills()
            return sorted(i for i, s in self._skill_of_id.items() if s in open_skills)
        if self._state == "lparen":
            return [self._lp]
        if self._state == "obj":
            assert self._node is not None
            ids = list(self._node.children)
            if self._node.objects and self._node_depth > 0:
                last = len(self._args) + 1 == len(SKILLS[self._skill])
                ids.append(self._rp if last else self._comma)
            return sorted(set(ids))
        if self._state == "after_step":
            if self._held is not None and self._can_put_down(self._held):
                return [self._semi]  # a part in the hand is put down before the plan may end
            return [self._semi, self.tok.eos_id] if self._open_skills() else [self.tok.eos_id]
        raise AssertionError(self._state)

    def advance(self, token_id: int) -> None:
        """Consume `token_id`; raises GroundingError if it is not in `allowed()` (a decoding bug)."""
        if token_id not in self.allowed():
            raise GroundingError(f"token id {token_id} is not allowed in state {self._state!r}")
        if self._state == "skill":
            self._skill, self._args = self._skill_of_id[token_id], []
            self._state = "lparen"
        elif self._state == "lparen":
            self._start_object()
        elif self._state == "obj":
            assert self._node is not None
            if token_id in (self._comma, self._rp) and self._node.objects and token_id not in self._node.children:
                self._args.append(self._node.objects[0])
                if token_id == self._rp:
                    self._record_step(self._skill, tuple(self._args))
                    self._state = "after_step"
                else:
                    self._start_object()
            else:
                self._node = self._node.children[token_id]
                self._node_depth += 1
        elif self._state == "after_step":
            if token_id == self.tok.eos_id:
                self.done = True
            else:
                self._state = "skill"

    def _record_step(self, skill: str, args: tuple[str, ...]) -> None:
        self.steps.append((skill, args))
        if skill == PICK:
            self._held = args[0]
            self._moved.add(args[0])
        else:
            self._held = None
            self._occupied.add(args[-1])

    def _start_object(self) -> None:
        self._node = self._trie()
        self._node_depth = 0
        self._state = "obj"

    def force_finish(self) -> list[int]:
        """Shortest continuation that closes the plan (used when the token budget runs out)."""
        out: list[int] = []
        while not self.done:
            ids = self.allowed()
            pick = self.tok.eos_id if self.tok.eos_id in ids else (self._rp if self._rp in ids else
                                                                   (self._comma if self._comma in ids else ids[0]))
            self.advance(pick)
            out.append(pick)
        return out

    def calls(self) -> list[str]:
        return [f"{s}({', '.join(a)})" for s, a in self.steps]


def render_step_text(skill: str, args: Sequence[str], templates: dict[str, str]) -> str:
    """The imperative instruction for one step, from templates learned in training (fallback: generic)."""
    fallback = {
        "pick": "pick up the {0}",
        "place_on": "place the {0} on the {1}",
        "place_in": "place the {0} in the {1}",
        "insert": "insert the {0} into the {1}",
    }
    template = templates.get(skill) or fallback.get(skill, skill + " {0}")
    phrases = [a.replace("_", " ") for a in args]
    try:
        return template.format(*phrases)
    except (IndexError, KeyError):
        return fallback.get(skill, skill + " {0}").format(*phrases)


def learn_step_templates(examples: Sequence[tuple[str, Sequence[str], str]]) -> dict[str, str]:
    """From ``(skill, args, text)`` training examples, the most common text pattern per skill with the
    argument phrases replaced by ``{0}``, ``{1}`` (so the policy sees the phrasing it was trained on)."""
    counts: dict[str, dict[str, int]] = {}
    for skill, args, text in examples:
        t = " ".join(text.lower().split())
        ok = True
        for i, a in enumerate(args):
            phrase = a.replace("_", " ")
            if phrase not in t:
                ok = False
                break
            t = t.replace(phrase, f"{{{i}}}", 1)
        if ok and "{" in t:
            counts.setdefault(skill, {}).setdefault(t, 0)
            counts[skill][t] += 1
    return {s: max(c.items(), key=lambda kv: (kv[1], kv[0]))[0] for s, c in counts.items()}
