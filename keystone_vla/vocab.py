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
