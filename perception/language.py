"""Instruction language: the words Keystone understands and a small parser from instruction text to skill steps.

Shared by grounding (text -> references -> scene objects) and speech (the recogniser's grammar is built from the same
word classes, so a word the grammar can produce is a word the parser knows). Vocabulary comes from
`keystone_vla.vocab` plus an optional extra word set from the caller (e.g. the sim's task templates).

Conventions: `left`/`right` are from the robot's point of view (base frame +y is left); `nearest`/`farthest` are
xy distances from the robot base.

This module is pure text processing: it must never import the simulator, open3d or pocketsphinx.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from keystone_vla.vocab import COLOURS, MOVABLE_KINDS, OBJECT_SYNONYMS, object_kind

#: spoken qualifier -> canonical qualifier
QUALIFIERS: dict[str, str] = {
    "left": "left", "leftmost": "left", "right": "right", "rightmost": "right",
    "nearest": "nearest", "closest": "nearest", "near": "nearest",
    "farthest": "farthest", "furthest": "farthest", "far": "farthest",
}
#: spoken verb -> what it asks for: 'pick' (grasp only) or 'place' (move somewhere; the preposition decides how)
VERBS: dict[str, str] = {
    "pick": "pick", "grab": "pick", "lift": "pick", "take": "pick", "grasp": "pick",
    "put": "place", "place": "place", "move": "place", "set": "place", "drop": "place", "stack": "place",
    "insert": "insert", "fit": "insert", "push": "insert",
    "transfer": "place", "pile": "place",
}
#: preposition -> skill it selects for 'place'
PREPOSITIONS: dict[str, str] = {"on": "place_on", "onto": "place_on", "in": "place_in", "into": "place_in",
                                "inside": "place_in", "to": "place_in"}
CONTROL_WORDS: tuple[str, ...] = ("stop", "cancel", "resume")
NUMBERS: dict[str, int] = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())}
#: words that carry no object or skill on their own (task-level verbs like 'build' are left to the plan head)
FUNCTION_WORDS: frozenset[str] = frozenset(
    "the a an of up down top bottom middle then and it them one please all blocks parts part piece pieces slot slots "
    "tower build make assemble fill with each every its matching same shape from first next last at".split()
)
#: target kinds that things are put *in* (place_in); 'hole' takes insert; anything else takes place_on
CONTAINER_KINDS: frozenset[str] = frozenset({"bowl", "plate", "kit", "slot"})
MAX_INSTRUCTION_CHARS = 500
#: words that make a bare noun mean 'each of them' ('put each part into its matching slot'): not one object
DISTRIBUTIVE: frozenset[str] = frozenset({"each", "every", "its", "all", "matching"})


def noun_table(extra_kinds: dict[str, Iterable[str]] | None = None) -> dict[str, str]:
    """Spoken noun -> canonical object kind, from `vocab.OBJECT_SYNONYMS` (+ `slot`) and optional extra kinds."""
    table = {syn: kind for kind, syns in OBJECT_SYNONYMS.items() for syn in syns}
    table["slot"] = "slot"
    for kind, syns in (extra_kinds or {}).items():
        table.update({s: kind for s in syns})
    return table


def known_words(extra_words: Iterable[str] = ()) -> set[str]:
    """Every single word the parser and the speech grammar accept."""
    words = set(COLOURS) | set(QUALIFIERS) | set(VERBS) | set(PREPOSITIONS) | set(CONTROL_WORDS)
    words |= set(NUMBERS) | set(FUNCTION_WORDS)
    for noun in noun_table():
        words.update(noun.split())
    words.update(w.lower() for w in extra_words)
    return words


def tokenize(text: str) -> list[str]:
    """Lower-case words; punctuation separates words (so 'red_block' and 'red-block' both give red, block)."""
    return re.findall(r"[a-z0-9]+", text.lower().replace("_", " "))


def unnamed_parts(instruction: str, object_ids: Iterable[str]) -> set[str]:
    """Movable parts of `object_ids` whose colour the instruction does not name, when it names any colour
    (``build a tower of red, blue and green`` -> every yellow part): an operator who picks parts by colour has
    not asked for the others to move. Empty when the instruction names no colour (``assemble the kit``)."""
    named = {w for w in tokenize(instruction) if w in COLOURS}
    if not named:
        return set()
    return {o for o in object_ids
            if (c := o.split("_", 1)[0]) in COLOURS and c not in named and object_kind(o) in MOVABLE_KINDS}


@dataclass(frozen=True)
class Reference:
    """A phrase that names one object: 'the left red block' -> kind block, colour red, qualifier left.

    `detail` refines a kind that has sub-types: 'the bar slot' -> kind slot, detail bar. `kind` None means
    'any object' ('the red one'); `pronoun` marks 'it', resolved to the previous reference by the caller.
    """

    text: str
    kind: str | None = None
    colour: str | None = None
    qualifier: str | None = None
    detail: str | None = None
    pronoun: bool = False

    def describe(self) -> str:
        """The words a person would use, without the qualifier: 'red block', 'bar slot', 'red object'."""
        noun = self.kind or "object"
        if self.kind == "slot" and self.detail:
            noun = f"{self.detail} slot"
        return f"{self.colour} {noun}" if self.colour else noun


@dataclass
class ParsedStep:
    """One skill with its argument references, before grounding."""

    skill: str
    args: tuple[Reference, ...]
    text: str


@dataclass
class ParsedInstruction:
    """What the parser found: control command, steps, every reference, and words it did not know."""

    text: str
    control: str | None = None
    steps: list[ParsedStep] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    unknown_words: list[str] = field(default_factory=list)
    known_word_count: int = 0
    needs_planner: bool = False  # some clause names objects but no skill this parser can build


def parse_references(tokens: list[str], nouns: dict[str, str]) -> list[tuple[int, int, Reference]]:
    """Find noun phrases in `tokens`; returns (start, end, Reference) with end exclusive, left to right."""
    out: list[tuple[int, int, Reference]] = []
    i = 0
    while i < len(tokens):
        start = i
        qualifier = colour = None
        while i < len(tokens) and (tokens[i] in QUALIFIERS or tokens[i] in COLOURS or tokens[i] == "the"):
            if tokens[i] in COLOURS and colour is not None:
                break  # 'red, blue and green': a second colour starts the next reference
            if tokens[i] in QUALIFIERS:
                qualifier = QUALIFIERS[tokens[i]]
            elif tokens[i] in COLOURS:
                colour = tokens[i]
            i += 1
        if i < len(tokens) and tokens[i] in ("it", "them") and qualifier is None and colour is None:
            out.append((i, i + 1, Reference(tokens[i], pronoun=True)))
            i += 1
            continue
        if i < len(tokens) and tokens[i] in nouns:
            kind, detail = nouns[tokens[i]], None
            # '<shape> slot': the shape word names which slot, not a second object
            if i + 1 < len(tokens) and tokens[i + 1] == "slot" and kind != "slot":
                detail, kind = kind, "slot"
                i += 1
            i += 1
            words = [t for t in tokens[start:i] if t != "the"]
            out.append((start, i, Reference(" ".join(words), kind, colour, qualifier, detail)))
            continue
        if colour is not None or qualifier is not None:
            # 'the red one' / 'the left one': a colour or qualifier without a known noun
            if i < len(tokens) and tokens[i] == "one":
                i += 1
            words = [t for t in tokens[start:i] if t != "the"]
            out.append((start, i, Reference(" ".join(words), None, colour, qualifier)))
            continue
        i = start + 1
    return out


def parse_instruction(text: str, extra_words: Iterable[str] = (),
                      extra_kinds: dict[str, Iterable[str]] | None = None) -> ParsedInstruction:
    """Parse an instruction into skill steps over references (no scene needed).

    'put the red block on the blue block' -> pick(red block), place_on(red block, blue block);
    'insert the peg into the hole' -> pick(peg), insert(peg, hole); 'stop' -> control 'stop'.
    Clauses joined by 'then' / 'and' are parsed in order; 'it' refers to the previous object.
    """
    nouns = noun_table(extra_kinds)
    tokens = tokenize(text)
    vocab = known_words(extra_words) | set(nouns)
    result = ParsedInstruction(text=text)
    result.unknown_words = [t for t in tokens if t not in vocab and not t.isdigit()]
    result.known_word_count = len(tokens) - len(result.unknown_words)
    controls = [t for t in tokens if t in CONTROL_WORDS]
    if controls and len(tokens) <= 3:
        result.control = controls[0]
        return result
    clauses: list[list[str]] = [[]]
    for tok in tokens:
        if tok in ("then", "and", "after", "next") and clauses[-1]:
            clauses.append([])
        elif tok not in ("then", "and"):
            clauses[-1].append(tok)
    last: Reference | None = None
    distributive = any(t in DISTRIBUTIVE for t in tokens)
    tower = "tower" in tokens or "blocks" in tokens
    for clause in clauses:
        refs = parse_references(clause, nouns)
        if distributive:  # 'its matching slot', 'the parts': not a single object; the plan head expands them
            refs = [r for r in refs if r[2].colour or r[2].qualifier or r[2].detail or r[2].pronoun]
            result.needs_planner = True
        if tower:  # 'build a tower: red at the bottom, then blue': bare colours name blocks
            refs = [(a, b, Reference(r.text, "block", r.colour, r.qualifier) if r.kind is None and not r.pronoun else r)
                    for a, b, r in refs]
        resolved: list[Reference] = []
        for _s, _e, ref in refs:
            if ref.pronoun:
                if last is None:
                    continue
                ref = last
            resolved.append(ref)
        result.references.extend(resolved)
        verb = next((VERBS[t] for t in clause if t in VERBS), None)
        prep = _preposition_between(clause, refs)
        if not resolved:
            continue
        obj = resolved[0]
        phrase = " ".join(clause)
        if len(resolved) >= 2:
            target = resolved[1]
            skill = _place_skill(verb, prep, target)
            _add_pick(result.steps, obj, f"pick up the {obj.text}")
            result.steps.append(ParsedStep(skill, (obj, target), phrase))
            last = obj
        elif verb in ("place", "insert") and prep and last is not None and last is not obj:
            # 'pick up the red block, then place it in the bowl': the earlier object goes to this target
            result.steps.append(ParsedStep(_place_skill(verb, prep, obj), (last, obj), phrase))
        elif verb == "pick":
            _add_pick(result.steps, obj, phrase)
            last = obj
        else:
            # 'assemble the kit', 'build a tower: red at the bottom, ...': task-level, left to the plan head
            result.needs_planner = True
    if tower:  # the order words ('at the bottom', 'on top of') are the plan head's job; objects are checked here
        result.steps, result.needs_planner = [], True
    return result


def _add_pick(steps: list[ParsedStep], obj: Reference, text: str) -> None:
    if not (steps and steps[-1].skill == "pick" and steps[-1].args[0] == obj):
        steps.append(ParsedStep("pick", (obj,), text))


def _preposition_between(clause: list[str], refs: list[tuple[int, int, Reference]]) -> str | None:
    """The first preposition after the first reference (or anywhere, if there is one reference)."""
    start = refs[0][1] if refs else 0
    for tok in clause[start:]:
        if tok in PREPOSITIONS:
            return tok
    return next((t for t in clause if t in PREPOSITIONS), None)


def _place_skill(verb: str | None, prep: str | None, target: Reference) -> str:
    """The target decides the skill (a plate takes place_in whether one says 'on' or 'in'); the preposition only
    decides for an unnamed kind ('the red one')."""
    if target.kind == "hole" or (verb == "insert" and target.kind is None):
        return "insert"
    if target.kind in CONTAINER_KINDS:
        return "place_in"
    if target.kind is not None:
        return "place_on"
    return PREPOSITIONS.get(prep or "on", "place_on")
