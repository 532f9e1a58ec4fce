"""Grounding: bind the objects an instruction or plan names to objects in the scene, or refuse with a reason.

An industrial arm must never guess what an operator meant. Every reference ('the red block', 'the peg',
'the left bowl') must resolve to exactly one object in the scene graph (or the simulator's ground-truth object list,
same shape) that the arm can reach; otherwise the result is a `Refusal` whose `reason` a person understands, e.g.
``no purple block is on the table; I see: red block, blue block, green bowl``.

Entry points:
- `check_instruction(text)`: text-only refusals (empty, too long, gibberish, unknown words).
- `ground_instruction(text, scene, robot)`: parse + resolve + build a `Plan` whose arguments are scene object ids.
- `ground_plan(plan, scene, robot)`: resolve the arguments of a plan (e.g. from the VLA plan head) the same way.

Vocabulary comes from `keystone_vla.vocab` (+ caller's extra words); this module must never import the simulator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keystone_vla.robots import RobotSpec
from keystone_vla.types import Plan, PlanStep

from .language import (
    MAX_INSTRUCTION_CHARS,
    Reference,
    noun_table,
    parse_instruction,
    parse_references,
    tokenize,
)
from .objects import DetectedObject, as_scene

EXAMPLE = "e.g. 'put the red block in the green bowl'"
#: two candidates closer than this along a qualifier's axis (m) cannot be told apart by it
QUALIFIER_MARGIN = 0.01


@dataclass(frozen=True)
class Refusal:
    """Why an instruction or plan will not be executed. `kind`: empty, too_long, gibberish, unknown_word,
    no_object, unknown_object, ambiguous, unreachable, invalid_plan."""

    reason: str
    kind: str
    mention: str | None = None

    def __str__(self) -> str:
        return self.reason


@dataclass
class GroundedPlan:
    """A plan whose arguments are scene object ids, with the objects they bind to (`control` for stop/cancel/resume)."""

    plan: Plan
    bindings: dict[str, DetectedObject] = field(default_factory=dict)
    control: str | None = None
    needs_planner: bool = False  # every named object was found, but the steps must come from the plan head

    def calls(self) -> list[str]:
        return self.plan.calls()


def check_instruction(text: str, extra_words: Iterable[str] = ()) -> Refusal | None:
    """Refusals that need no scene: empty, over-long, gibberish or unknown words. None means 'looks like a command'."""
    if not isinstance(text, str) or not text.strip():
        return Refusal(f"the instruction is empty; say what to do, {EXAMPLE}", "empty")
    if len(text) > MAX_INSTRUCTION_CHARS:
        return Refusal(
            f"the instruction is {len(text)} characters long; the limit is {MAX_INSTRUCTION_CHARS}. "
            f"Give one short command, {EXAMPLE}", "too_long")
    parsed = parse_instruction(text, extra_words)
    if parsed.control:
        return None
    shown = text.strip() if len(text.strip()) <= 60 else text.strip()[:57] + "..."
    if parsed.known_word_count == 0 or (parsed.unknown_words and not parsed.references):
        return Refusal(f"I did not understand {shown!r}: it names no object I know. Say what to do, {EXAMPLE}",
                       "gibberish")
    if parsed.unknown_words:
        words = ", ".join(repr(w) for w in dict.fromkeys(parsed.unknown_words))
        return Refusal(f"I do not know the word(s) {words} in {shown!r}; rephrase with the objects on the table, "
                       f"{EXAMPLE}", "unknown_word", parsed.unknown_words[0])
    return None


def ground_instruction(text: str, scene: Iterable[Any], robot: RobotSpec | None = None,
                       extra_words: Iterable[str] = ()) -> GroundedPlan | Refusal:
    """Parse `text`, resolve every reference in `scene`, and build a Plan over scene object ids.

    Returns a `Refusal` for empty/long/gibberish text and unknown/ambiguous/unreachable objects. Task-level
    instructions ('build a tower: red at the bottom, then blue, then green', 'assemble the kit') have every object
    they name checked first; then, since their steps are the plan head's job, they come back as a Refusal of kind
    ``no_object`` (not an error: plan them with the plan head and check the plan with `ground_plan`).
    """
    refusal = check_instruction(text, extra_words)
    if refusal is not None:
        return refusal
    objects = as_scene(scene)
    parsed = parse_instruction(text, extra_words)
    if parsed.control:
        return GroundedPlan(Plan(text, ()), {}, parsed.control)
    if not parsed.steps and not parsed.references and not parsed.needs_planner:
        return Refusal(f"{text.strip()!r} names no object to act on; say which object, {EXAMPLE}", "no_object")
    bindings: dict[str, DetectedObject] = {}
    resolved: dict[Reference, DetectedObject] = {}
    for ref in parsed.references:
        if ref in resolved:
            continue
        hit = resolve_reference(ref, objects, robot)
        if isinstance(hit, Refusal):
            return hit
        resolved[ref] = hit
        bindings[hit.id] = hit
    steps = []
    for step in parsed.steps:
        ids = tuple(resolved[a].id for a in step.args)
        if len(ids) == 2 and ids[0] == ids[1]:
            return Refusal(f"the {resolved[step.args[0]].label} cannot be put {_prep(step.skill)} itself", "invalid_plan")
        steps.append(PlanStep(step.skill, ids, step.text))
    if not steps:
        # every object it names is here, but the steps are the plan head's job (tower order, 'each part')
        return Refusal(f"{text.strip()!r} names no single step I can build; the plan head must plan it",
                       "no_object", None)
    return GroundedPlan(Plan(text, tuple(steps)), bindings, needs_planner=parsed.needs_planner)


def ground_plan(plan: Plan, scene: Iterable[Any], robot: RobotSpec | None = None) -> GroundedPlan | Refusal:
    """Resolve each step argument of `plan` ('red_block', 'left_bowl', 'peg') to one scene object id."""
    objects = as_scene(scene)
    by_id = {o.id: o for o in objects}
    nouns = noun_table()
    bindings: dict[str, DetectedObject] = {}
    steps = []
    for step in plan.steps:
        ids = []
        for arg in step.args:
            obj = by_id.get(arg)
            if obj is None:
                refs = parse_references(tokenize(arg), nouns)
                if len(refs) != 1:
                    return Refusal(f"plan step {step.call} names {arg!r}, which is no object I know; "
                                   f"objects on the table: {_seen(objects)}", "invalid_plan", arg)
                hit = resolve_reference(refs[0][2], objects, robot)
                if isinstance(hit, Refusal):
                    return hit
                obj = hit
            elif robot is not None and (why := _unreachable(obj, robot)):
                return Refusal(why, "unreachable", arg)
            bindings[obj.id] = obj
            ids.append(obj.id)
        steps.append(PlanStep(step.skill, tuple(ids), step.text))
    return GroundedPlan(Plan(plan.instruction, tuple(steps)), bindings)


def resolve_reference(ref: Reference, objects: Sequence[DetectedObject],
                      robot: RobotSpec | None = None) -> DetectedObject | Refusal:
    """The one object `ref` names, or a Refusal (unknown_object, ambiguous, unreachable)."""
    cands = [o for o in objects if _matches(ref, o)]
    if not cands:
        if not objects:
            return Refusal(f"no {ref.describe()} is on the table; I see no objects at all", "unknown_object", ref.text)
        return Refusal(f"no {ref.describe()} is on the table; I see: {_seen(objects)}", "unknown_object", ref.text)
    if len(cands) > 1:
        if ref.qualifier is None:
            where = ", ".join(f"{o.label} at x={o.position[0]:.2f} m, y={o.position[1]:.2f} m" for o in cands)
            hint = f"the left {ref.describe()}" if len(cands) == 2 else f"the nearest {ref.describe()}"
            return Refusal(f"'the {ref.text}' is ambiguous: I see {len(cands)} of them ({where}); "
                           f"say which one, e.g. '{hint}'", "ambiguous", ref.text)
        key = _qualifier_key(ref.qualifier)
        ranked = sorted(cands, key=key, reverse=True)
        if abs(key(ranked[0]) - key(ranked[1])) < QUALIFIER_MARGIN:
            return Refusal(f"'the {ref.text}' is ambiguous: two {ref.describe()}s are equally {ref.qualifier}; "
                           "point out one another way", "ambiguous", ref.text)
        cands = ranked[:1]
    obj = cands[0]
    if robot is not None and (why := _unreachable(obj, robot)):
        return Refusal(why, "unreachable", ref.text)
    return obj


def _matches(ref: Reference, obj: DetectedObject) -> bool:
    if ref.kind is not None and obj.shape != ref.kind:
        return False
    if ref.colour is not None and obj.colour != ref.colour:
        return False
    if ref.detail is not None and obj.detail != ref.detail and obj.id != f"{ref.detail}_slot":
        return False
    return True


def _qualifier_key(qualifier: str):
    """Larger key = better match for the qualifier (robot's view: +y is left)."""
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


def _seen(objects: Sequence[DetectedObject]) -> str:
    return ", ".join(o.label for o in objects)


def _prep(skill: str) -> str:
    return {"place_on": "on", "place_in": "in", "insert": "into"}.get(skill, "on")
