"""`ScriptedModel`: a no-learning controller with the learned model's inputs, driven by the same `VLAAgent`.

It answers "what does learning buy?": it stands where `keystone_vla.vla.VLAPolicy` stands in the agent (the
sequencer, the chunk runtime and the assists around it are unchanged) and sees what the learned model sees:

- `plan(instruction, observation, objects)`: the scene's object ids. The plan comes from the project's rule-based
  parser and grounding (`keystone_vla.perception.grounding.ground_instruction`), over objects made from the ids
  alone (an id names kind and colour; it has no pose). Task-level instructions that grounding leaves to a plan
  head get two small rules here: a tower's colour order (`tower_order`) and a kit's part-to-slot matching by shape
  (`kit_pairs`).
- `predict_chunk(observation, step_text, step_objects)`: the step's text (its skill and nouns are read back with
  the same parser), the 21 located numbers of `keystone_vla.vla.object_token` (first and last object, then the
  end-effector pose when they were located) and the observation's end-effector pose and gripper opening.

The controller is the simulator's oracle waypoint logic (transit height, approach speeds, grasp yaw among the part's
symmetric equivalents, placement rotation, release height per target kind) recomputed every chunk from those
inputs: the phase (approach, descend, close, lift; carry, turn, descend, open, retreat) follows from where the hand
is, how open the gripper is and a few flags kept per step. A chunk is the path a commanded point takes along the
remaining waypoints; `step_done` is 1 when that path ends the step within the chunk.

This module must never import the simulator: the few facts it needs are copied below, each naming its source.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keystone_vla.errors import GroundingError, ModelError
from keystone_vla.types import ActionChunk, Observation, Plan, PlanStep
from keystone_vla.vocab import COLOURS, YAW_SYMMETRY, object_kind

from .assists.base import EMPTY_CLOSED, EMPTY_OPEN

# -- facts from keystone_vla.sim (copied: this module must not import the simulator) --------------------------------
CONTROL_HZ = 10  # sim/world.py CONTROL_HZ: actions per second
TRANSIT_Z = 0.22  # sim/oracle.py TRANSIT_Z: carry height (m)
MAX_YAW_STEP = 0.2  # sim/oracle.py MAX_YAW_STEP: rad per tick
ARRIVE_TOL = 0.006  # sim/oracle.py ARRIVE_TOL: the hand this close (m) has arrived
STALL_TOL = 0.0005  # sim/oracle.py STALL_TOL: m per tick; a hand moving less is stopped against contact
SPEED_TRANSIT, SPEED_GRASP, SPEED_LIFT = 0.24, 0.12, 0.15  # sim/oracle.py _plan_pick waypoint speeds (m/s)
SPEED_PLACE, SPEED_INSERT, SPEED_RETREAT = 0.08, 0.04, 0.15  # sim/oracle.py _plan_place speeds (m/s)
RETREAT = 0.08  # sim/oracle.py _plan_place: rise after a release (m)
GRASP_BELOW_TOP = 0.02  # sim/objects.py make_peg grasp_height: a tall part is held 2 cm below its top
TALL_PART = 0.06  # m: parts taller than this (the 8 cm peg) are grasped below the top, others at their origin
STACK_GAP = 0.002  # sim/oracle.py: a part is let go this far above a surface it is put on
#: sim/oracle.py releases 2 mm above a pocket's floor once its commanded pose arrives, the hand lagging ~2 mm behind;
#: fingertips that reach the floor beside a part do not open
POCKET_GAP = 0.004
CONTAINER_FLOOR, CONTAINER_GAP = 0.004, 0.012  # sim/objects.py make_container base_h; sim/oracle.py release gap
INSERT_GAP = 0.004  # sim/oracle.py: a peg is let go with its bottom this far above the hole's base
INSERT_CLEARANCE = 0.03  # sim/oracle.py: a peg is carried this far above the fixture's top plus its own height
#: target kinds a held part is not turned for (sim/oracle.py placement_rotation) and kinds placed into a container
UNORIENTED_TARGETS, CONTAINERS = ("bowl", "plate", "kit"), ("bowl", "plate")

XY_GATE = 0.01  # m: the hand descends only this close (x/y) above its goal
YAW_GATE = 0.05  # rad: ... and turned this close to its goal yaw
RELIEF = 0.002  # m: the hand rises this much above where it arrived while it opens
BACK_OFF = 0.006  # m: ... and this much above where contact stopped it (the oracle opens ~3.5 mm above the floor)
SETTLED = 0.01  # gripper opening change between two chunks below which the fingers have stopped


@dataclass(frozen=True)
class ScriptedConfig:
    """The part of `VLAConfig` that `VLAAgent` reads (chunk sizes as keystone-base's config.json)."""

    chunk_size: int = 8
    n_action_steps: int = 2
    cameras: tuple[str, ...] = ("front",)
    image_size: int = 128
    object_token: bool = True


@dataclass(frozen=True)
class StepSpec:
    """What a step text says: skill, the part's kind and the target's kind (None where the text names none)."""

    skill: str
    part: str | None
    target: str | None


@dataclass
class _StepMemory:
    """The little a step remembers between chunks (forgotten when the step text changes or the plan is new)."""

    closing: bool = False  # pick: the close was commanded
    released: bool = False  # put-down: the open was commanded
    hold: np.ndarray | None = None  # put-down: where the hand holds while it opens
    retreat_z: float = 0.0  # put-down: height to rise to after the release
    opening: float | None = None  # gripper opening at the previous chunk
    ee: np.ndarray | None = None  # end-effector position at the previous chunk


@dataclass(frozen=True)
class _Segment:
    pos: np.ndarray
    speed: float  # m/s


@dataclass
class ScriptedModel:
    """Duck-types the part of `VLAPolicy` that `VLAAgent` uses: `config`, `plan`, `predict_chunk`."""

    config: ScriptedConfig = field(default_factory=ScriptedConfig)
    last_plan_confidence: float = 1.0
    _home_yaw: float | None = field(default=None, repr=False)
    _key: str | None = field(default=None, repr=False)
    _memory: _StepMemory = field(default_factory=_StepMemory, repr=False)
    _specs: dict[str, StepSpec] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------------------ planning
    def plan(self, instruction: str, observation: Observation | None = None,
             objects: Sequence[Any] | None = None, min_confidence: float = 0.0) -> Plan:
        """Rule-based plan for `instruction` over the scene's object ids (or its scene-graph objects, whose poses
        and colours then resolve 'the left bowl' too); raises GroundingError with the reason when the rules cannot
        build one. Starts a new episode (the hand's yaw now is its home yaw). `min_confidence` is accepted for
        `VLAPolicy`'s signature: a rule is never unsure."""
        from keystone_vla.perception.grounding import Refusal, ground_instruction
        from keystone_vla.perception.objects import as_scene

        self.reset()
        self._home_yaw = None if observation is None else float(gripper_yaw(observation.ee_pose[3:7]))
        objects = list(objects or ())
        named = all(isinstance(o, str) for o in objects)
        scene = scene_from_ids(instruction, objects) if named else as_scene(objects)
        ids = [o.id for o in scene]
        calls = task_plan(instruction, ids)  # the rules' own tower order and kit pairs first
        if calls is None:
            grounded = ground_instruction(instruction, scene)
            if isinstance(grounded, Refusal):
                raise GroundingError(grounded.reason)
            calls = [(s.skill, s.args) for s in grounded.plan.steps]
        return Plan(instruction, tuple(PlanStep(skill, tuple(args), step_text(skill, args)) for skill, args in calls))

    def reset(self) -> None:
        """Forget the steps of the previous episode."""
        self._key, self._memory = None, _StepMemory()

    # ------------------------------------------------------------------------------------------ control
    def predict_chunk(self, observation: Observation, step_instruction: str | None = None,
                      step_objects: np.ndarray | None = None) -> ActionChunk:
        """Actions float32 [chunk_size, 7] for the step `step_instruction` from its located objects float [21]."""
        if step_instruction is None or step_objects is None:
            raise ModelError("ScriptedModel needs the step text and its located objects (step_objects [21]); "
                             "run it through VLAAgent, which locates them")
        so = np.asarray(step_objects, np.float64).reshape(-1)
        if so.shape != (21,) or not np.all(np.isfinite(so)):
            raise ModelError(f"step_objects must be 21 finite numbers, got shape {list(so.shape)}")
        spec = self._spec(step_instruction)
        if self._key != step_instruction:  # a new step (or a regrasp's new visit of one)
            self._key, self._memory = step_instruction, _StepMemory()
        mem = self._memory
        ee = np.asarray(observation.ee_pose, np.float64)
        opening = float(observation.state[-1]) if observation.state.size else 1.0
        moved = math.inf if mem.ee is None else float(np.linalg.norm(ee[:3] - mem.ee))
        if spec.skill == "pick":
            chunk = self._pick(spec, so, ee, opening, moved)
        else:
            chunk = self._put_down(spec, so, ee, opening, moved)
        mem.opening, mem.ee = opening, ee[:3].copy()
        return chunk

    def _pick(self, spec: StepSpec, so: np.ndarray, ee: np.ndarray, opening: float, moved: float) -> ActionChunk:
        mem = self._memory
        part = so[0:7]
        grasp = np.array([part[0], part[1], grasp_z(part)])
        above = np.array([part[0], part[1], max(TRANSIT_Z, grasp[2])])
        yaw = grasp_yaw(part[3], YAW_SYMMETRY.get(spec.part or "", 0), self._home_yaw, gripper_yaw(ee[3:7]))
        if mem.closing and opening <= EMPTY_CLOSED:  # closed on nothing: open, rise, and let the step retry
            mem.closing = False
            return self._follow(ee, [_Segment(above, SPEED_LIFT)], yaw, 0.0, done=True)
        if mem.closing:  # lift once the fingers have stopped on the part
            stopped = mem.opening is not None and abs(opening - mem.opening) < SETTLED and opening < EMPTY_OPEN
            if not stopped:
                return self._follow(ee, [], yaw, 1.0)
            return self._follow(ee, [_Segment(above, SPEED_LIFT)], yaw, 1.0, done=True)
        arrived = float(np.linalg.norm(ee[:3] - grasp)) < ARRIVE_TOL
        blocked = moved < 2 * STALL_TOL and float(np.linalg.norm(ee[:2] - grasp[:2])) < ARRIVE_TOL \
            and ee[2] < grasp[2] + 0.02
        if (arrived or blocked) and yaw_error(yaw, gripper_yaw(ee[3:7])) < YAW_GATE:
            mem.closing = True
            return self._follow(ee, [], yaw, 1.0)
        return self._follow(ee, approach(ee[:3], grasp, SPEED_GRASP), yaw, 0.0)

    def _put_down(self, spec: StepSpec, so: np.ndarray, ee: np.ndarray, opening: float,
                  moved: float) -> ActionChunk:
        mem = self._memory
        part, target, start = so[0:7], so[7:14], so[14:21]
        if mem.released and opening >= EMPTY_OPEN:  # let go: rise and end the step
            goal = np.array([ee[0], ee[1], max(mem.retreat_z, ee[2])])
            return self._follow(ee, [_Segment(goal, SPEED_RETREAT)], gripper_yaw(ee[3:7]), 0.0, done=True)
        if not mem.released and not EMPTY_CLOSED < opening < EMPTY_OPEN:
            # nothing in the hand: hover open above here (the sequencer's regrasp goes back to the pick)
            goal = np.array([ee[0], ee[1], max(ee[2], TRANSIT_Z)])
            return self._follow(ee, [_Segment(goal, SPEED_LIFT)], gripper_yaw(ee[3:7]), 0.0)
        kind = target_kind(spec, target)
        symmetry = YAW_SYMMETRY.get(spec.part or "", 0)
        turn = 0.0
        if symmetry and kind not in UNORIENTED_TARGETS:
            turn = wrap(target[3] - part[3], 2 * math.pi / symmetry)
        yaw = float(gripper_yaw(start[3:7])) + turn
        offset = part[:3] - start[:3]  # the part's origin relative to the hand when it was located
        c, s = math.cos(turn), math.sin(turn)
        offset = np.array([c * offset[0] - s * offset[1], s * offset[0] + c * offset[1], offset[2]])
        goal = np.array([target[0], target[1], release_z(kind, part, target)]) - offset
        if mem.released:  # the open is commanded but the hand still holds: stay where it let go, pressing on
            # nothing (fingers pushed down onto a surface do not open; deltas from the hand's pose lift a pressed
            # command), whatever the part is located at once it touches down
            return self._follow(ee, [_Segment(mem.hold, SPEED_PLACE)], yaw, 0.0)
        down = SPEED_INSERT if kind == "hole" else SPEED_PLACE
        arrived = float(np.linalg.norm(ee[:3] - goal)) < ARRIVE_TOL
        blocked = moved < 2 * STALL_TOL and float(np.linalg.norm(ee[:2] - goal[:2])) < ARRIVE_TOL \
            and ee[2] < goal[2] + 0.02
        if (arrived or blocked) and yaw_error(yaw, gripper_yaw(ee[3:7])) < YAW_GATE:
            # let go here; stopped by contact short of the goal, the part rests on something and the fingertips may
            # be down beside it (in a kit pocket they jam): back off first
            mem.released = True
            lift = RELIEF if arrived else BACK_OFF
            mem.hold = np.array([goal[0], goal[1], max(float(goal[2]), float(ee[2])) + lift])
            mem.retreat_z = float(mem.hold[2]) + RETREAT
            return self._follow(ee, [_Segment(mem.hold, SPEED_PLACE)], yaw, 0.0)
        carry = max(TRANSIT_Z, goal[2] + RETREAT)
        if kind == "hole":
            carry = max(carry, target[2] + target[6] + part[6] + INSERT_CLEARANCE - offset[2])
        return self._follow(ee, approach(ee[:3], goal, down, carry, turned=yaw_error(yaw, gripper_yaw(ee[3:7]))
                                         < YAW_GATE), yaw, 1.0)

    def _follow(self, ee: np.ndarray, segments: list[_Segment], yaw: float, grip: float,
                done: bool = False) -> ActionChunk:
        """The chunk that moves a commanded point from the hand along `segments` (then holds) while turning to
        `yaw`; `step_done` is 1 when `done` and the last segment is reached within the chunk."""
        pos, now_yaw = ee[:3].copy(), float(gripper_yaw(ee[3:7]))
        actions = np.zeros((self.config.chunk_size, 7), np.float32)
        actions[:, 6] = grip
        index = 0
        for k in range(self.config.chunk_size):
            dyaw = float(np.clip(wrap(yaw - now_yaw), -MAX_YAW_STEP, MAX_YAW_STEP))
            now_yaw += dyaw
            actions[k, 5] = dyaw
            if index < len(segments):
                seg = segments[index]
                delta = seg.pos - pos
                dist = float(np.linalg.norm(delta))
                max_d = seg.speed / CONTROL_HZ
                step = delta if dist <= max_d else delta * (max_d / dist)
                pos = pos + step
                actions[k, 0:3] = step
                if dist <= max_d:
                    index += 1
        reached = index >= len(segments)
        return ActionChunk(actions, step_done=1.0 if done and reached else 0.0)

    def _spec(self, text: str) -> StepSpec:
        if text not in self._specs:
            self._specs[text] = read_step(text)
        return self._specs[text]


# ---------------------------------------------------------------------------------------------- waypoints
def approach(pos: np.ndarray, goal: np.ndarray, down_speed: float, carry: float = TRANSIT_Z,
             turned: bool = True) -> list[_Segment]:
    """Segments from `pos` to `goal` the oracle's way: up to `carry` height unless already above the goal,
    across at it, then down at `down_speed` (only once turned)."""
    above = np.array([goal[0], goal[1], max(carry, goal[2])])
    if float(np.linalg.norm(pos[:2] - goal[:2])) <= XY_GATE and pos[2] <= above[2] + ARRIVE_TOL:
        return [_Segment(goal, down_speed)] if turned else [_Segment(np.array([goal[0], goal[1], pos[2]]),
                                                                     down_speed)]
    segments = []
    if pos[2] < carry - ARRIVE_TOL:
        segments.append(_Segment(np.array([pos[0], pos[1], carry]), SPEED_TRANSIT))
    segments.append(_Segment(above, SPEED_TRANSIT))
    if turned:
        segments.append(_Segment(goal, down_speed))
    return segments


def grasp_z(part: np.ndarray) -> float:
    """Height the hand grasps a located part at: its origin, or below the top of a tall part (the peg)."""
    z, height = float(part[2]), float(part[6])
    return z + height / 2 - GRASP_BELOW_TOP if height > TALL_PART else z


def release_z(kind: str, part: np.ndarray, target: np.ndarray) -> float:
    """Height of the part's origin at release on a target of `kind` (located origin z, height)."""
    half, tz, th = float(part[6]) / 2, float(target[2]), float(target[6])
    if kind == "hole":
        return tz + half + INSERT_GAP
    if kind in CONTAINERS:
        return tz + CONTAINER_FLOOR + half + CONTAINER_GAP
    if kind == "slot":  # a kit pocket, located as its box: the floor is its bottom
        return tz - th / 2 + half + POCKET_GAP
    return tz + th / 2 + half + STACK_GAP  # on a block or the kit's top


def target_kind(spec: StepSpec, target: np.ndarray) -> str:
    """The target's kind from the step text, else from the skill and its located size: inserted into is the hole;
    put in something over 12 cm wide a bowl (15 x 3 cm) or plate (16 x 1.2 cm), in anything smaller a kit slot (a
    pocket: its part's outline plus 4 mm, 8 mm deep); put on, a block."""
    if spec.skill == "insert":
        return "hole"
    if spec.target is not None:
        return spec.target
    if spec.skill == "place_in":
        if float(max(target[4], target[5])) > 0.12:
            return "bowl" if float(target[6]) > 0.02 else "plate"
        return "slot"
    return "block"


def grasp_yaw(part_yaw: float, symmetry: int, home: float | None, now: float) -> float:
    """The gripper yaw that grasps a part: among its symmetric equivalents (the two-finger hand is the same after
    a half turn) the one nearest the home yaw, so the later placement turn stays small; round parts: as now."""
    if not symmetry:
        return now
    step = math.pi / 2 if symmetry == 4 else math.pi
    ref = now if home is None else home
    options = [part_yaw + k * step for k in range(int(round(2 * math.pi / step)))]
    return min((wrap(o) for o in options), key=lambda o: abs(wrap(o - ref)))


def gripper_yaw(quat: np.ndarray) -> float:
    """Yaw of a top-down gripper orientation (xyzw): the direction of its x axis."""
    from keystone_vla.vla.object_token import gripper_yaw as yaw_of

    return float(yaw_of(np.asarray(quat, np.float64)))


def wrap(angle: float, period: float = 2 * math.pi) -> float:
    """`angle` wrapped into [-period/2, period/2)."""
    return (float(angle) + period / 2) % period - period / 2


def yaw_error(a: float, b: float) -> float:
    return abs(wrap(a - b))


# ---------------------------------------------------------------------------------------------- language
def step_text(skill: str, args: Sequence[str]) -> str:
    """The step's imperative text, as the learned model's plans render it (e.g. 'pick up the red block')."""
    from keystone_vla.vla.plan_grammar import render_step_text

    return render_step_text(skill, args, {})


def read_step(text: str) -> StepSpec:
    """Skill and object kinds of a step text ('place the red bar in the bar slot' -> place_in, bar, slot)."""
    from keystone_vla.perception.language import parse_instruction

    parsed = parse_instruction(text)
    if not parsed.steps:
        raise ModelError(f"ScriptedModel cannot read the step {text!r}; steps must name their objects, e.g. "
                         "'pick up the red block' or 'place the red block on the blue block'")
    step = parsed.steps[-1]
    return StepSpec(step.skill, step.args[0].kind, step.args[-1].kind)


def scene_from_ids(instruction: str, ids: Iterable[str]) -> list[Any]:
    """Scene objects for grounding made from ids alone (`red_block`, `bar_slot`, `peg`): kind, colour and a slot's
    shape, no pose. An id without a colour (peg, hole) takes the colour the instruction gives its noun, which the
    ids cannot contradict ('push the cyan pin into the hole')."""
    from keystone_vla.perception.language import noun_table, parse_references, tokenize
    from keystone_vla.perception.objects import DetectedObject

    said = {ref.kind: ref.colour for _, _, ref in parse_references(tokenize(instruction), noun_table())
            if ref.kind and ref.colour}
    out = []
    for i in ids:
        head, _, rest = i.partition("_")
        kind = object_kind(i) or i
        if kind == "slot":
            out.append(DetectedObject(i, None, "slot", np.zeros(3), detail=head))
        elif head in COLOURS and rest:
            out.append(DetectedObject(i, head, kind, np.zeros(3)))
        else:
            out.append(DetectedObject(i, said.get(kind), kind, np.zeros(3)))
    return out


def task_plan(instruction: str, ids: Sequence[str]) -> list[tuple[str, tuple[str, ...]]] | None:
    """Steps for a task-level instruction grounding leaves to a plan head (a tower, a kit), or None."""
    order = tower_order(instruction, ids)
    if order is not None:
        return [step for below, above in zip(order, order[1:])
                for step in (("pick", (above,)), ("place_on", (above, below)))]
    pairs = kit_pairs(instruction, ids)
    if pairs is not None:
        return [step for part, slot in pairs for step in (("pick", (part,)), ("place_in", (part, slot)))]
    return None


_ROLES = {("at", "the", "bottom"): 0, ("on", "the", "bottom"): 0, ("as", "the", "base"): 0, ("at", "the", "base"): 0,
          ("in", "the", "middle"): 1, ("in", "the", "center"): 1, ("at", "the", "top"): 2, ("as", "the", "top"): 2}
_ABOVE = ("on", "onto", "above", "over")  # '<upper> on top of <lower>': the colours are said top first
_BELOW = ("under", "below", "beneath", "underneath", "supporting")


def tower_order(instruction: str, ids: Sequence[str]) -> list[str] | None:
    """Block ids bottom first for a tower instruction ('build a tower: red at the bottom, then blue, then
    green'), or None when it is no tower. The colours are read in text order, bottom first, unless each has a
    role (bottom, middle, top), a relation says them top first ('green on top of blue on top of red') or the
    text says 'from the top down'."""
    from keystone_vla.perception.language import tokenize

    tokens = tokenize(instruction)
    if "tower" not in tokens and "blocks" not in tokens:
        return None
    at = [k for k, t in enumerate(tokens) if t in COLOURS]
    colours = [tokens[k] for k in at]
    if len(colours) < 2 or len(set(colours)) != len(colours):
        return None
    roles = {}
    for k in at:
        after = tuple(tokens[k + 1:k + 4])
        role = _ROLES.get(after)
        if after[:2] == ("on", "top") and after[2:3] != ("of",):
            role = 2
        if role is not None:
            roles[tokens[k]] = role if role < 2 else len(colours)
    between = [w for a, b in zip(at, at[1:]) for w in tokens[a + 1:b]]
    if len(roles) == len(colours) and len(set(roles.values())) == len(colours):
        colours.sort(key=roles.__getitem__)
    elif any(w in _ABOVE for w in between) and not any(w in _BELOW for w in between):
        colours.reverse()
    elif "top" in tokens and "down" in tokens[tokens.index("top"):]:
        colours.reverse()
    blocks = [f"{c}_block" for c in colours]
    missing = [b for b in blocks if b not in ids]
    if missing:
        raise GroundingError(f"the tower names {', '.join(b.replace('_', ' ') for b in missing)}, which I do not see")
    return blocks


def kit_pairs(instruction: str, ids: Sequence[str]) -> list[tuple[str, str]] | None:
    """(part, slot) ids for 'put each part into its matching slot' / 'assemble the kit': every slot with the one
    part of its shape; None when the instruction is not about the kit or the scene has no slot."""
    from keystone_vla.perception.language import tokenize

    tokens = set(tokenize(instruction))
    slots = [i for i in ids if object_kind(i) == "slot"]
    if not slots or not tokens & {"kit", "slot", "slots"}:
        return None
    pairs = []
    for slot in slots:
        shape = slot.rsplit("_", 1)[0]
        parts = [i for i in ids if object_kind(i) == shape]
        if len(parts) != 1:
            raise GroundingError(f"the {shape} slot has {len(parts) or 'no'} matching {shape} part(s) on the table; "
                                 "I need exactly one to fill it")
        pairs.append((parts[0], slot))
    return pairs
