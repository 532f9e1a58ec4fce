"""The closed vocabulary of Keystone's scenes: colours, object kinds, and their seen/unseen splits.

Sim tasks sample from it, perception names what it sees with it, grounding and the speech grammar are built
from it. Splits follow CLIPort: the `unseen` colours, part shapes and instruction templates never appear in
training data (split ``seen``), so generalisation can be measured.

Pure data; no imports beyond the standard library.
"""

from __future__ import annotations

#: colour name -> RGBA used in simulation (hues chosen to be separable by HSV thresholds)
COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.10, 0.10, 1.0),
    "green": (0.10, 0.70, 0.20, 1.0),
    "blue": (0.10, 0.25, 0.90, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "orange": (1.00, 0.50, 0.00, 1.0),
    "cyan": (0.10, 0.80, 0.85, 1.0),
    "purple": (0.55, 0.15, 0.80, 1.0),
    "white": (0.95, 0.95, 0.95, 1.0),
}
SEEN_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
UNSEEN_COLOURS: tuple[str, ...] = ("orange", "cyan", "purple", "white")

#: kit part shapes (built from box/cylinder primitives); the unseen ones are held out of training
SEEN_SHAPES: tuple[str, ...] = ("square", "disc", "bar")
UNSEEN_SHAPES: tuple[str, ...] = ("ell", "tee")

#: every object kind that can appear in a scene, with the spoken synonyms an instruction may use
OBJECT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "block": ("block", "cube", "brick"),
    "cylinder": ("cylinder", "can", "puck"),
    "bowl": ("bowl", "container"),
    "plate": ("plate", "tray"),
    "peg": ("peg", "pin"),
    "hole": ("hole", "socket", "fixture"),
    "kit": ("kit",),
    "square": ("square",),
    "disc": ("disc", "round"),
    "bar": ("bar", "rod"),
    "ell": ("ell", "angle"),
    "tee": ("tee",),
}

#: movable kind -> yaw symmetry order: the number of turns in a full revolution that look the same (4: a square
#: footprint, 2: a bar, 1: no symmetry, 0: round, any yaw). Success checks and the agent's final alignment use it.
YAW_SYMMETRY: dict[str, int] = {"block": 4, "cylinder": 0, "peg": 4, "square": 4, "disc": 0, "bar": 2, "ell": 1,
                                "tee": 1}

#: kinds a gripper can pick up and move; every other kind is a fixture (bowls, plates, the kit and its slots, the hole)
MOVABLE_KINDS: frozenset[str] = frozenset({"block", "cylinder", "peg", "square", "disc", "bar", "ell", "tee"})
#: which kinds may fill each argument of a skill (`keystone_vla.types.SKILLS` order). A plan step outside these is
#: physically meaningless (pick up a bowl, place a block *in* a block) and the plan decoder never emits one.
SKILL_ARG_KINDS: dict[str, tuple[frozenset[str], ...]] = {
    "pick": (MOVABLE_KINDS,),
    "place_on": (MOVABLE_KINDS, MOVABLE_KINDS | {"plate"}),
    "place_in": (MOVABLE_KINDS, frozenset({"bowl", "plate", "slot", "kit"})),
    "insert": (MOVABLE_KINDS, frozenset({"hole", "slot"})),
}


def object_kind(object_id: str) -> str | None:
    """The kind an object id names (``red_block`` -> ``block``, ``tee_slot`` -> ``slot``, ``peg`` -> ``peg``);
    None when its last word is no kind this vocabulary knows (such objects are not kind-checked)."""
    kind = object_id.rsplit("_", 1)[-1]
    return kind if kind in OBJECT_SYNONYMS or kind == "slot" else None


def yaw_symmetry(object_id: str) -> int | None:
    """`YAW_SYMMETRY` of the kind `object_id` names (``red_ell`` -> 1); None when the kind has no entry."""
    kind = object_kind(object_id)
    return YAW_SYMMETRY.get(kind) if kind is not None else None


def kind_fits(skill: str, arg_index: int, object_id: str) -> bool:
    """Whether `object_id` may be argument `arg_index` of `skill` (unknown skills and kinds are not judged here)."""
    roles = SKILL_ARG_KINDS.get(skill)
    kind = object_kind(object_id)
    return roles is None or kind is None or arg_index >= len(roles) or kind in roles[arg_index]


SPLITS: tuple[str, ...] = ("seen", "unseen")


def _for_split(split: str, seen: tuple[str, ...], unseen: tuple[str, ...]) -> tuple[str, ...]:
    from keystone_vla.errors import unknown_choice

    if split not in SPLITS:
        raise unknown_choice("split", split, SPLITS)
    return seen if split == "seen" else unseen


def colours_for(split: str) -> tuple[str, ...]:
    """Colours a task may use in `split` ('seen' or 'unseen')."""
    return _for_split(split, SEEN_COLOURS, UNSEEN_COLOURS)


def shapes_for(split: str) -> tuple[str, ...]:
    """Kit part shapes a task may use in `split` ('seen' or 'unseen')."""
    return _for_split(split, SEEN_SHAPES, UNSEEN_SHAPES)
