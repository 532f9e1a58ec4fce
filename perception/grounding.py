"""Grounding: bind the objects an instruction or plan names to objects in the scene, or refuse with a reason.

An industrial arm must never guess what an operator meant. Every reference ('the red block', 'the peg',
'the left bowl') must resolve to exactly one object in the scene graph (or the simulator's ground-truth object list,
same shape) that the arm can reach; otherwise the result is a `Refusal` whose `reason` a person understands, e.g.
``no purple block is on the table; I see: red block, blue block, green bowl``.

Entry points:
- `check_instruction(text)`: text-only refusals (empty, too long, not English or gibberish, negation, unsafe, an
  action outside the skills); words it does not know are read past, never refused on their own.
- `ground_instruction(text, scene, robot)`: the instruction's grounded reading (`keystone_vla.perception.reader`)
  as a `Plan` over scene object ids, towers and kits included.
- `ground_plan(plan, scene, robot)`: resolve the arguments of a plan (e.g. from the VLA plan head) the same way.
- `plan_checked(vla, instruction, objects, robot, ...)`: the one check every execution path runs (VLAAgent.prepare,
  so `keystone eval`, `keystone demo` and the ROS policy node): read the instruction over the scene, let the
  model plan it, and raise `AskBack` ("did you mean: ...?") when the model's plan is not the reading, when the
  model is unsure, or when the reading itself is unsure. Nothing moves on a plan the two do not agree on.

Vocabulary comes from `keystone_vla.vocab` and the reader's lexicon; this module must never import the simulator.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keystone_vla.errors import GroundingError
from keystone_vla.robots import RobotSpec
from keystone_vla.types import Plan, PlanStep

from .language import Reference, noun_table, parse_references, tokenize
from .objects import DetectedObject, as_scene
from .reader import Options, Reading, Refusal, check_text, read_instruction

EXAMPLE = "e.g. 'put the red block in the green bowl'"
#: two candidates closer than this along a qualifier's axis (m) cannot be told apart by it
QUALIFIER_MARGIN = 0.01


@dataclass
class GroundedPlan:
    """A plan whose arguments are scene object ids, with the objects they bind to (`control` for stop/cancel/resume)."""

    plan: Plan
    bindings: dict[str, DetectedObject] = field(default_factory=dict)
    control: str | None = None
    needs_planner: bool = False  # every named object was found, but the steps must come from the plan head

    def calls(self) -> list[str]:
        return self.plan.calls()


class AskBack(GroundingError):
    """The stack will not move on its own reading: it asks back with its best one (`reading`), e.g.
    ``did you mean: put the red block in the green bowl?``. `model_plan`: what the model planned, when it did."""

    def __init__(self, reason: str, reading: Reading | None = None, model_plan: Plan | None = None) -> None:
        super().__init__(reason)
        self.reading = reading
        self.model_plan = model_plan


def check_instruction(text: str, extra_words: Iterable[str] = ()) -> Refusal | None:
    """Refusals that need no scene: empty, over-long, not English or gibberish, negation, unsafe request, an
    action outside the skills. None means 'reads like a command'. Words the reader does not know are read past
    (`extra_words` is kept for callers that still pass a vocabulary; it changes nothing)."""
    return check_text(text)


def ground_instruction(text: str, scene: Iterable[Any], robot: RobotSpec | None = None,
                       extra_words: Iterable[str] = (), opts: Options | None = None) -> GroundedPlan | Refusal:
    """The grounded reading of `text` over `scene` (`keystone_vla.perception.reader.read_instruction`) as a
    `GroundedPlan` over scene object ids, or a `Refusal` naming what was wrong. Towers and kits are read too
    ('build a tower with red under blue under green', 'fill the kit'); `needs_planner` is always False."""
    reading = read_instruction(text, scene, robot, opts)
    if isinstance(reading, Refusal):
        return reading
    if reading.control is not None:
        return GroundedPlan(Plan(text, ()), {}, reading.control)
    return GroundedPlan(reading.plan, dict(reading.bindings))


def plan_agrees(model: Plan, reading: Reading) -> bool:
    """Whether the model's plan is the reading's: the same calls in the same order, or in any order where the
    reading's order is free (a kit's put-downs)."""
    a, b = model.calls(), reading.calls()
    if reading.order_free:
        return sorted(a) == sorted(b) and _pairs_intact(a)
    return a == b


def _pairs_intact(calls: list[str]) -> bool:
    """Each put-down follows the pick of its part (a reordering keeps pick/put-down pairs together)."""
    for i in range(0, len(calls) - 1, 2):
        if not calls[i].startswith("pick("):
            return False
        part = calls[i][5:-1]
        if not calls[i + 1].split("(", 1)[1].startswith(part + ","):
            return False
    return len(calls) % 2 == 0


def plan_checked(vla: Any, instruction: str, objects: Sequence[DetectedObject], robot: RobotSpec | None = None,
                 observation: Any = None, min_confidence: float = 0.0, opts: Options | None = None) -> Plan:
    """The plan that may move the arm, or an error (nothing moves): the instruction is read over `objects`; a
    `Refusal` raises `GroundingError` with its reason; the model (`vla.plan`) plans the reading's words (the
    words it was trained on) over the scene's ids, and its plan must be the reading's (`plan_agrees`), at the
    model's confidence gate, with a reading sure of every word that could change the plan. Otherwise `AskBack`
    carries the reading: "did you mean: ...?". Returns the model's plan (steps as the model wrote them)."""
    reading = read_instruction(instruction, objects, robot, opts)
    if isinstance(reading, Refusal):
        raise GroundingError(reading.reason)
    if reading.control is not None:
        raise GroundingError(f"{instruction!r} is the control command {reading.control!r}, not a task; send it "
                             "to the control channel")
    if not reading.confident:
        raise AskBack(f"I am not sure I understood {instruction!r}; {reading.did_you_mean()}", reading)
    ids = [o.id for o in objects]
    hint = {"expect": reading.plan} if "expect" in inspect.signature(vla.plan).parameters else {}
    try:
        plan = vla.plan(reading.canonical, observation, objects=ids, min_confidence=min_confidence, **hint)
    except GroundingError as exc:  # the model's own confidence gate
        raise AskBack(f"{exc}; {reading.did_you_mean()}", reading) from exc
    if not plan_agrees(plan, reading) and not (
            reading.task == "kit_assembly" and sorted(plan.calls()) == sorted(reading.calls())
            and _pairs_intact(plan.calls())):
        raise AskBack(f"my model planned {'; '.join(plan.calls()) or 'nothing'} but I read {instruction!r} as "
                      f"{'; '.join(reading.calls())}, so I will not move; {reading.did_you_mean()}", reading, plan)
    if plan.calls() != reading.calls() and not reading.order_free:
        # the same kit steps as the reading, in another order: the parts go in the order the operator named
        by_call = {s.call: s for s in plan.steps}
        return Plan(instruction, tuple(by_call[c] for c in reading.calls()))
    return Plan(instruction, plan.steps)


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
