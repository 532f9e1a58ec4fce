"""The speech recogniser's JSGF grammar, generated from command templates and the task vocabulary.

pocketsphinx's default language model fails on shop-floor commands (WER ~0.8, research/feasibility-ml.md §5); a
grammar restricted to what operators can say reaches WER ~0. The grammar is never written by hand: it is built from

- command templates: phrases with slots, e.g. ``put the {block} on the {block}``, ``insert the {peg} into the {hole}``,
  ``build a tower of {number} blocks``; every literal word of a template joins the grammar, so new task words join it
  automatically when a task adds a template;
- slot vocabularies: `{colour}`, `{number}`, `{qualifier}`, `{object}` (any object phrase), `{<kind>}` or
  `{<kind>|<kind>}` (an object phrase restricted to those kinds, e.g. ``{block|cylinder}``), `{slot}` (``bar slot``),
  `{prep}` (on, in, into, onto); any other slot name (the simulator's ``{obj}``, ``{box}``, ``{a}``) means an object
  phrase or a bare colour. An object phrase is ``[qualifier] [colour] noun`` with nouns from
  `keystone_vla.vocab.OBJECT_SYNONYMS`;
- `{block_or_colour}`: a block phrase or a bare colour (the same slot is "the red block" in a stack and "red" in a
  tower);
- polite forms around every command (``please``, ``could you``, ``can you please``, ... before it, ``please`` after
  it: `POLITE_PREFIXES`), which the instruction reader drops again;
- control words ``stop``, ``cancel``, ``resume``, always present (bare: a stop must be short to be fast).

Every word must be in the pronunciation dictionary (pocketsphinx's cmudict); `missing_words` finds the ones that are
not, so the builder can fail with a message naming them. This module builds text only and must never open audio.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from keystone_vla.errors import ConfigError
from keystone_vla.vocab import COLOURS, OBJECT_SYNONYMS, SEEN_SHAPES, UNSEEN_SHAPES

from .language import CONTROL_WORDS, NUMBERS

PREPOSITIONS = ("on", "in", "into", "onto")

_SLOT_RE = re.compile(r"\{([a-z_|]+)\}")
MOVABLE_KINDS = ("block", "cylinder", "peg", *SEEN_SHAPES, *UNSEEN_SHAPES)

#: Default command templates (the CLI adds the simulator's task templates when it can import them).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "pick up the {movable}",
    "grab the {movable}",
    "put the {movable} on the {block|cylinder|plate}",
    "place the {movable} on the {block|cylinder|plate}",
    "put the {movable} in the {bowl}",
    "place the {movable} in the {bowl}",
    "put the {movable} into the {bowl}",
    "stack the {block|cylinder} on the {block|cylinder}",
    "stack the {block|cylinder} on top of the {block|cylinder}",
    "insert the {peg} into the {hole}",
    "put the {peg} in the {hole}",
    "put the {part} in the {slot}",
    "place the {part} in the {slot}",
    "put the {part} into the {slot}",
    "build a tower of {number} blocks",
    "stack {number} blocks",
    "build a tower with {block_or_colour} {block_or_colour} and {block_or_colour}",
    "build a tower of {block_or_colour} {block_or_colour} and {block_or_colour}",
)
#: what an operator may say before a command (and ``please`` after it)
POLITE_PREFIXES: tuple[str, ...] = ("please", "could you", "can you", "would you", "could you please",
                                    "can you please", "would you please")


@dataclass
class CommandGrammar:
    """Templates + slot vocabularies -> JSGF text (`to_jsgf`) and the full word list (`words`)."""

    templates: Sequence[str] = DEFAULT_TEMPLATES
    colours: Sequence[str] = tuple(COLOURS)
    kinds: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(OBJECT_SYNONYMS))
    qualifiers: Sequence[str] = ("left", "right", "nearest", "closest", "farthest", "furthest")
    numbers: Sequence[str] = tuple(w for w in NUMBERS if w != "zero")
    control: Sequence[str] = CONTROL_WORDS
    slot_groups: Mapping[str, Sequence[str]] = field(default_factory=lambda: {
        "movable": MOVABLE_KINDS, "part": (*SEEN_SHAPES, *UNSEEN_SHAPES)})

    #: caller's slot name -> slot it means, e.g. the sim's {"obj": "block|cylinder", "a": "colour"}; keeps the grammar
    #: small (an unknown slot admits any object phrase, which multiplies the search space)
    slot_aliases: Mapping[str, str] = field(default_factory=dict)
    #: wrap every command in the optional polite forms (`POLITE_PREFIXES` before, ``please`` after)
    polite: bool = True

    def __post_init__(self) -> None:
        def alias(t: str) -> str:
            return _SLOT_RE.sub(lambda m: "{" + self.slot_aliases.get(m.group(1), m.group(1)) + "}", t)

        self.templates = tuple(dict.fromkeys(alias(_normalise(t)) for t in self.templates if _normalise(t)))
        if not self.templates and not self.control:
            raise ConfigError("the speech grammar needs at least one command template or control word")

    @classmethod
    def from_vocabulary(cls, templates: Iterable[str] | None = None,
                        extra_kinds: Mapping[str, Sequence[str]] | None = None,
                        slot_aliases: Mapping[str, str] | None = None, polite: bool = True) -> CommandGrammar:
        """Default templates plus the caller's (e.g. the sim's task templates) and extra object kinds."""
        kinds = dict(OBJECT_SYNONYMS)
        kinds.update({k: tuple(v) for k, v in (extra_kinds or {}).items()})
        return cls(templates=(*DEFAULT_TEMPLATES, *(templates or ())), kinds=kinds,
                   slot_aliases=dict(slot_aliases or {}), polite=polite)

    # -- JSGF ------------------------------------------------------------------------------------------------------
    def _np_rule(self, kinds: Sequence[str]) -> str:
        nouns: list[str] = []
        for kind in kinds:
            if kind == "slot":
                shapes = " | ".join(s for s in (*SEEN_SHAPES, *UNSEEN_SHAPES))
                nouns.append(f"[{shapes}] slot")
                continue
            if kind not in self.kinds:
                raise ConfigError(f"speech template slot names unknown object kind {kind!r}; "
                                  f"known kinds: {', '.join(sorted(self.kinds))}")
            nouns.extend(self.kinds[kind])
        alts = " | ".join(dict.fromkeys(nouns))
        return f"[<qualifier>] [<colour>] ({alts})"

    def _slot_kinds(self, name: str) -> list[str] | None:
        if name in ("colour", "number", "qualifier", "prep", "block_or_colour"):
            return None
        if name in self.slot_groups:
            return list(self.slot_groups[name])
        parts = name.split("|")
        if all(p in self.kinds or p == "slot" for p in parts):
            return parts
        if len(parts) > 1:
            bad = next(p for p in parts if p not in self.kinds and p != "slot")
            raise ConfigError(f"speech template slot {{{name}}} names unknown object kind {bad!r}; "
                              f"known kinds: {', '.join(sorted(self.kinds))}")
        return []  # {object}, {obj}, {a}, ...: any object phrase, or a bare colour ('red at the bottom')

    def to_jsgf(self) -> str:
        rules: dict[str, str] = {
            "colour": " | ".join(self.colours),
            "qualifier": " | ".join(self.qualifiers),
            "number": " | ".join(self.numbers),
            "prep": " | ".join(PREPOSITIONS),
            "block_or_colour": "[<qualifier>] (<colour> [{0}] | {0})".format(
                "(" + " | ".join(self.kinds.get("block", ("block",))) + ")"),
        }
        if self.polite:
            rules["polite"] = " | ".join(f"( {p} )" for p in POLITE_PREFIXES)
        alternatives = list(self.control)
        for tmpl in self.templates:
            out = []
            for tok in tmpl.split():
                m = _SLOT_RE.fullmatch(tok)
                if not m:
                    out.append(tok)
                    continue
                name = m.group(1)
                kinds = self._slot_kinds(name)
                if kinds is None:
                    out.append(f"<{name}>")
                    continue
                if not kinds:
                    rule = "np_any"
                    nouns = self._np_rule(sorted(self.kinds)).split("] ", 2)[2]
                    rules.setdefault(rule, f"[<qualifier>] (<colour> [{nouns}] | {nouns})")
                else:
                    rule = "np_" + "_".join(sorted(kinds))
                    rules.setdefault(rule, self._np_rule(sorted(kinds)))
                out.append(f"<{rule}>")
            alternatives.append(" ".join(out))
        body = "\n".join(f"<{name}> = {alt};" for name, alt in rules.items())
        n_control = len(self.control)
        commands = "\n    | ".join(f"( {a} )" for a in alternatives[n_control:])
        wrapped = f"( [<polite>] ( {commands} ) [please] )" if self.polite else commands
        public = "\n    | ".join([*(f"( {a} )" for a in alternatives[:n_control]), *([wrapped] if commands else [])])
        return f"#JSGF V1.0;\ngrammar keystone;\npublic <command> = {public};\n{body}\n"

    def words(self) -> set[str]:
        """Every word the grammar can produce."""
        return set(re.findall(r"(?<![<\w])[a-z]+(?![\w>])", _strip_rule_names(self.to_jsgf().split("\n", 2)[2])))


def _strip_rule_names(text: str) -> str:
    return re.sub(r"<[a-z_]+>", " ", text.replace("public", " ").replace("grammar keystone", " "))


def _normalise(template: str) -> str:
    """Lower-case, keep words and {slots}, drop punctuation: 'Put the {obj} in the {target}.' -> ..."""
    tokens = re.findall(r"\{[A-Za-z_|]+\}|[A-Za-z]+", template)
    return " ".join(t.lower() for t in tokens)


def missing_words(words: Iterable[str], dictionary: Iterable[str]) -> list[str]:
    """Words with no pronunciation in `dictionary` (sorted)."""
    known = set(dictionary)
    return sorted(w for w in set(words) if w not in known)
