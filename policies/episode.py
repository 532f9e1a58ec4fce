"""Per-episode glue between the evaluation harness and `run_episode`: scene search for user phrasings, goal
checks for grounded plans, and the adapter that hands a policy its episode.

This module must never move the arm itself: it builds scenes, grounds text and reads privileged state only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keystone_vla.errors import GroundingError
from keystone_vla.types import Observation, Plan

#: refusal kinds that depend on the scene (another scene variant may have the object); the rest are about the text
SCENE_REFUSALS = ("unknown_object", "ambiguous", "unreachable")
#: seed offset between scene variants tried for one user instruction (far from the per-episode seeds base + i)
VARIANT_STRIDE = 100_003


def find_scene(world: Any, task: Any, seed: int, split: str, instruction: str,
               variants: int = 16, exact_variants: int = 0) -> tuple[int, Plan | None] | str:
    """Pick a scene for a user instruction: returns (seed, goal plan or None) or the refusal reason (str).

    Tries the task's own scenes, seeds ``seed + k * VARIANT_STRIDE`` for k < ``variants + exact_variants``, and
    reads the instruction over each scene's objects (`keystone_vla.perception.reader`, the harness's copy of the
    reading: simulator truth, never shown to the policy). The first scene that holds what the instruction names
    wins: goal None when its reading is the task's own plan (the task's success check applies; a kit's steps in
    any order), else the reading's plan is the goal (success = every placing step's effect holds at the end).
    Text refusals (empty, not English, negation, unsafe, an action outside the skills, a contradiction) return
    at once; a scene refusal (an object the scene lacks, an ambiguous reference) moves on to the next scene, and
    when no scene tried holds the objects, the first scene's reason is returned.
    """
    from keystone_vla.perception.grounding import check_instruction
    from keystone_vla.perception.reader import Refusal, read_instruction

    refusal = check_instruction(instruction)
    if refusal is not None:
        return refusal.reason
    first_refusal: Refusal | None = None
    tries = max(1, variants) + max(0, exact_variants)
    for k in range(tries):
        s = seed + k * VARIANT_STRIDE
        inst = task.reset(world, s, split)
        reading = read_instruction(instruction, list(world.objects.values()), world.spec)
        if isinstance(reading, Refusal):
            if reading.kind not in SCENE_REFUSALS:
                return reading.reason
            first_refusal = first_refusal or reading
            continue
        if reading.control is not None:
            return f"{instruction!r} is a control command ({reading.control}), not a task to evaluate"
        own, read = inst.plan.calls(), reading.calls()
        if read == own or (reading.order_free and sorted(read) == sorted(own)):
            return s, None
        return s, reading.plan
    assert first_refusal is not None
    return f"{first_refusal.reason} (in none of {tries} {task.name} scenes of the {split} split)"


def instruction_split(instruction: str) -> str | None:
    """The split the colours and part shapes an instruction names belong to ('seen' or 'unseen'), None when it
    names none, or names both splits' colours. Words are read as the reader reads them (a typo it repairs,
    "purpel", names its colour)."""
    from keystone_vla.perception.reader import COLOUR_WORDS, NOUNS, Options, read_tokens
    from keystone_vla.vocab import SEEN_COLOURS, SEEN_SHAPES, UNSEEN_COLOURS, UNSEEN_SHAPES

    named: set[str] = set()
    # MiniLM left out: it maps no word the rules miss (scripts/eval_language.py), and would load its encoder here
    for t in read_tokens(instruction, Options(minilm=False)):
        if t in COLOUR_WORDS:
            named.add(COLOUR_WORDS[t])
        elif NOUNS.get(t) and NOUNS[t][0] in SEEN_SHAPES + UNSEEN_SHAPES:
            named.add(NOUNS[t][0])
    # an unseen kit holds both held-out shapes and one seen shape: one seen shape decides nothing on its own,
    # two or more only a seen kit holds
    seen = named & set(SEEN_COLOURS)
    if len(named & set(SEEN_SHAPES)) >= 2:
        seen |= named & set(SEEN_SHAPES)
    unseen = named & set(UNSEEN_COLOURS + UNSEEN_SHAPES)
    if unseen and not seen:
        return "unseen"
    if seen and not unseen:
        return "seen"
    return None


def plan_goal_holds(world: Any, plan: Plan) -> bool:
    """Every placing step's effect holds now and the gripper is released (a pick-only plan: the object is lifted)."""
    from keystone_vla.sim.tasks.base import step_effect_holds

    placing = [s for s in plan.steps if s.skill != "pick"]
    if not placing:
        return bool(plan.steps) and all(step_effect_holds(world, s) for s in plan.steps)
    return all(step_effect_holds(world, s) for s in placing) and world.robot.gripper_opening() > 0.5


def check_plan_agrees(plan: Plan | None, goal_plan: Plan | None) -> None:
    """Refuse (GroundingError, before any motion) when a policy's own plan asks for other steps than the
    instruction's grounded reading. Order may differ (kit_assembly fixes none); content may not. Measured: on
    unseen phrasings the shipped plan head emits grammatical but wrong plans (reports/keystone-base), and a
    plan that is not what the operator said must never be executed on a guess."""
    if plan is None or goal_plan is None:
        return
    if sorted(plan.calls()) != sorted(goal_plan.calls()):
        raise GroundingError(
            f"the policy planned {'; '.join(plan.calls())} but the instruction reads as "
            f"{'; '.join(goal_plan.calls())}; refusing rather than guessing (rephrase the instruction)")


class EpisodeAdapter:
    """Wraps a policy for one episode: substitutes the user's grounded goal into the task instance before the
    policy is bound, and remembers the ground-truth plan the episode is judged against."""

    def __init__(self, policy: Any, goal_plan: Plan | None = None) -> None:
        self.policy = policy
        self.goal_plan = goal_plan
        self.true_plan: Plan | None = None
        self.instruction: str | None = None

    def bind(self, world: Any, instance: Any) -> None:
        """Harness side (the judge's): substitute the goal, remember the plan the episode is scored against, and
        hand the world to a policy that reads it itself (the oracle). The VLA agent never gets the world: it
        gets the episode's scene source through `begin`."""
        if self.goal_plan is not None:
            instance.plan = self.goal_plan
        self.true_plan = instance.plan
        self.instruction = instance.instruction
        bind = getattr(self.policy, "bind", None)
        if bind is not None:
            bind(world, instance)
        if getattr(self.policy, "begin", None) is None:
            self.on_bound()

    @property
    def begin(self) -> Any:
        """The wrapped policy's `begin` (None when it has none, so harnesses see what the policy needs)."""
        inner = getattr(self.policy, "begin", None)
        if inner is None:
            return None

        def begin(instruction: str, observation: Observation, scene: Any, robot: Any = None) -> Plan:
            plan = inner(instruction, observation, scene, robot)
            self.on_bound()
            return plan

        return begin

    def on_bound(self) -> None:
        """Called once the policy knows its episode (after `bind` or `begin`)."""

    @property
    def halted(self) -> str | None:
        return getattr(self.policy, "halted", None)

    def reset(self) -> None:
        self.policy.reset()

    @property
    def plan_step(self) -> int:
        return int(getattr(self.policy, "plan_step", 0))

    def act(self, observation: Observation) -> np.ndarray:
        return self.policy.act(observation)
