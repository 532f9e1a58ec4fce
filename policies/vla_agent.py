"""`VLAAgent`: drives a `keystone_vla.vla.VLAPolicy` as a per-tick policy: plan -> ground -> steps -> chunks.

1. Before any motion (`prepare`, called by `bind` in simulation), the model plans the instruction over the
   scene's object ids and the plan is grounded with `keystone_vla.perception.grounding.ground_plan`; a plan
   that does not ground (unknown, ambiguous or unreachable object, empty plan) raises `GroundingError` with
   the refusal's reason, so the episode is refused and the arm never moves.
2. Each plan step's imperative text (and, for models with an object token, the step's objects located when the
   step begins: `locate(step)`, in simulation the world's object poses, on a robot the scene graph's) conditions
   the chunk predictor; chunks are executed through the
   `ChunkRuntime` (queue, refill threshold, optional temporal ensembling, optional background inference).
3. A step ends when the model's step-done probability fires for a chunk that has run out *and* the step's
   success check holds (in simulation: the task's per-step check; on a robot: whatever check the caller passes;
   no check: the model alone decides). The model, not the check, times the hand-over because the next step was
   trained to start where the demonstrations started it (e.g. after the lift, not the moment the part leaves
   the table: measured on pick_place seed 0, advancing on the check alone left the arm frozen 5 cm above the
   table). If the model says done but the check fails (a missed grasp), the step's objects are located again
   and the step is retried; if the check holds for `check_patience` ticks while the model never says done,
   the step ends anyway (for a put-down, only ticks with the hand open count, `require_release`: a put-down
   that ended with the part still gripped started the next pick with a closed hand, and that pick never
   recovered; measured on kit_assembly seed 1, stop 14). The queue is flushed on every step change so no action
   of the old step runs in the new one.
4. Regrasp: during a step that puts down the part the previous step picked, if the part is no longer lifted (the
   pick step's check fails), the put-down's check fails too and the hand is empty (gripper fully open: released
   beside the target; or fully closed: the part slipped out) for `regrasp_patience` consecutive ticks, the agent
   goes back to the pick step, at most `max_regrasps` times per put-down. Measured before this rule (stop 13,
   kit_assembly seeds 0-5): 4 of 6 failures were parts released 11-23 mm outside their slot's 10 mm tolerance,
   after which the arm hovered until the tick limit, because a put-down step has nothing left to put down.
5. Order of independent put-downs (`order_pairs`, on by default): a plan made only of (pick X, place_in X, T)
   pairs that do not depend on each other (no target is another pair's part: a kit, not a tower) runs its pairs
   in the order the demonstrations used, the part with the largest y in the robot base frame first ("left to
   right" for the operator facing the arm). The plan head is shown object ids, not positions, so its order is
   arbitrary; the chunk head was trained on the demonstrations' order. Measured on keystone-base's kit_assembly
   episodes (stop 15, seen split, 100 episodes over two runs): plans in the demonstrations' order succeeded in 7
   of 13, in another order in 19 of 87. The steps are the model's; only their order changes.

6. Held part located again (`relocate_every`, default 1 tick; `keystone eval --relocate-every N`, 0 = once per
   step): the object token measures a put-down's target from the part in the hand as it sat when the step began. A
   part that slips or turns in the grip on the way is then placed where it no longer is: measured on insert (seen
   seeds 0-11, stop 16), the peg's offset in the gripper frame moved by 9-26 mm between the step's start and the
   hand's first open command in 3 of the 6 failures. With N > 0 the put-down's objects are located again every N
   ticks while the hand still holds something (opening strictly between empty-closed and empty-open); never during
   a pick, never after the release.
7. Release interlock (`release_radius`, metres, off by default): during a put-down with the part in the hand, an
   open command is held back (gripper kept closed) while the part, located now, lies farther than the radius (x/y)
   from its target. Measured on the same 12 insert episodes it did not help on its own: held back, the policy did
   not go on to align (one peg hovered 24 mm off for 37 ticks), so the failure is the approach, not the release.
   Item 8 brings its own interlock, with the alignment there to finish the approach.
8. Final alignment (`align_radius`, metres, default `DEFAULT_ALIGN_RADIUS`; `keystone eval --align-radius M`, 0 =
   off): a bounded visual servo on top of the model for the last centimetres of a pick or a put-down. The model
   decides where to go, when to descend, when to grasp and when to let go; the servo only closes the residual it
   leaves. Each tick within `align_radius` (x/y) of the goal, the agent adds `ALIGN_GAIN` x the located residual
   to the model's x/y command (at most `ALIGN_MAX_STEP` per tick) and to its yaw command (at most `ALIGN_MAX_YAW`),
   yaw taken modulo the part's symmetry (`keystone_vla.vocab.YAW_SYMMETRY` of the kind its id names; none for
   round or unknown kinds):
   - put-down, part in the hand: the part onto its target; an open command is held back while the part is
     farther than `ALIGN_RELEASE_TOL` (or `release_radius`, when given) from it. Measured (stop 17, insert seen
     seeds 0-11): the model settled the peg 20-28 mm off the hole and opened on time in 6 of 12 episodes; with the
     servo 12 of 12 went in;
   - pick, hand open: the gripper onto the part's grasp point and grasp yaw (modulo half turns at least: the
     two-finger hand looks the same after one). Measured (stop 17, unseen kit_assembly seeds 0-5): the model came
     down on the never-demonstrated tee shape turned 72 degrees from its grasp yaw, lost it on the lift and
     hovered to the tick limit; with the pick servo 6 of 6 kits were completed (1 of 6 without it).
   Every correction is bounded and counted (`aligned_ticks`; held opens in `held_releases`). Items 7 and 8 need a
   `locate` that looks again (simulation: the world's poses; a robot: a live scene graph); with the default one,
   the scene as planned, they stay off.
9. Binary gripper (`binary_gripper`, default on; `keystone eval --no-binary-gripper`): the model's gripper output
   is a regression onto demonstrations that only ever command 0 (open) or 1 (closed); when it is unsure it
   answers in between, and the fingers then half-close on the part. Measured on kit_assembly seed 1 (stop 17): the
   bar sat in its slot 0.1 mm off for 350 ticks while the command swung between 0.46 and 0.69, never letting go.
   The command is thresholded at 0.5 before it leaves the agent.
10. Plan confidence (`min_plan_confidence`, default `DEFAULT_MIN_PLAN_CONFIDENCE` 0.9; `keystone eval
   --min-plan-confidence P`, 0 = off): a plan whose decoder gave any chosen target token (where a part goes)
   less probability than this is refused before motion (`VLAPolicy.plan(min_confidence=...)`), naming its best
   guess: a wrong tower is a hallucinated motion. The threshold sits below the least confident of 410 right plans
   (0.93, the stop-18 keystone-base, reports/dev-stop18), where it refused 39 of 70 wrong ones; the stop-25
   keystone-base's least confident right plan of 455 scored 0.91 (reports/dev-stop25).
11. Still-hand release (`still_release`, metres per tick, default `DEFAULT_STILL_RELEASE`; `keystone eval
   --still-release M`, 0 = off): during a held put-down inside the alignment's capture radius (item 8; off with it),
   once the end effector moved less than `still_release` since the previous observation, an open command that the
   latest chunk predicts anywhere in its horizon runs now, provided the part, located now, is within the release
   tolerance of its target in x/y (the servo's interlock) and no higher than `STILL_RELEASE_GAP` above it (part
   bottom vs target top: set down, not hovering). Why: the oracle lets go once the hand has arrived or stalled
   against contact, but one observation (joints plus finger opening, no velocity) does not show that the hand has
   stopped, so a model trained on it keeps predicting the release a couple of actions ahead; executing 2 actions
   per chunk, the release never comes within reach. Measured (stop 24, reports/dev-stop24 §4-5, a fast-recipe
   checkpoint without DAgger at 2 actions per chunk): insert 0 of 5 without the rule, 10 of 10 with it (as a
   prototype without the height and once-per-step guards; it also fired on picks and flapped on kit_assembly and
   build_tower, hence the guards). It fires at most once each time a plan step begins (`still_releases` counts it), and
   the hand then stays open until the step ends: a one-tick open followed by the model's own closed commands
   re-grasped the block (measured: build_tower seed 0, stop 25). The stop-25 keystone-base, seeds 0-9, seen and
   unseen, 2 actions per chunk: insert, kit_assembly and build_tower 2 of 60 without the rule, 60 of 60 with it
   (kit_assembly 0 and build_tower 1 of 20 with a one-tick release; reports/dev-stop25).

Closed loop, keystone-base, 500 episodes (stop 17, reports/dev-stop17): 61.6 % with none of items 6, 8 and 9;
78.0 % with 6 and 8 (put-down servo only); 81.2 % with 6, 8 and 9; the pick servo's full run is in the report.

Default runtime: 2 of the H = 8 actions per chunk (`VLAConfig.n_action_steps`'s default): executing whole chunks open-loop
overshot the pick position by ~2 cm on pick_place seed 0; replanning every 2 ticks landed within 1 mm (one
25 ms forward pass per 200 ms of control). A checkpoint may record another count (`VLAConfig.n_action_steps`,
set by `keystone train --actions-per-chunk`): the agent uses it, and an explicit ``n_action_steps`` overrides it.

This module must never read privileged simulator state except through the `step_check` it is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError, GroundingError
from keystone_vla.robots import RobotSpec
from keystone_vla.types import ActionChunk, Observation, Plan, PlanStep
from keystone_vla.vla.object_token import gripper_yaw
from keystone_vla.vocab import yaw_symmetry

from .runtime import ChunkRuntime, RuntimeConfig

StepCheck = Callable[[PlanStep], bool]
Locate = Callable[[PlanStep], np.ndarray]  # a step -> float [14]: its first and last object (x y z yaw size_xyz)
# (the agent appends the end-effector pose at that moment: the model's 21-number step_objects)
EMPTY_OPEN, EMPTY_CLOSED = 0.9, 0.05  # gripper opening (state[-1], 1 = open) that means nothing is held
DEFAULT_RELOCATE_EVERY = 1  # ticks between locating a held part again (docstring, 6.)
DEFAULT_ALIGN_RADIUS = 0.05  # metres: the final alignment's capture radius (docstring, 8.)
ALIGN_GAIN = 0.5  # fraction of the located x/y and yaw residual corrected per tick (docstring, 8.)
ALIGN_MAX_STEP = 0.005  # metres of x/y correction per tick, at most
ALIGN_MAX_YAW = 0.1  # radians of yaw correction per tick, at most
ALIGN_RELEASE_TOL = 0.003  # metres: an open command waits until the part is this close to its target (x/y)
DEFAULT_MIN_PLAN_CONFIDENCE = 0.9  # plans less sure than this of where a part goes are refused (docstring, 10.)
DEFAULT_STILL_RELEASE = 0.002  # metres per tick: a hand moving less has stopped (docstring, 11.; 0 = off)
STILL_RELEASE_GAP = 0.01  # metres: a still-hand release needs the part's bottom at most this far above the target's top


class VLAAgent:
    """Per-tick policy around a VLAPolicy (see module docstring). `plan`, `plan_step` and `runtime_stats` are
    public so harnesses can report plan exactness, progress and stalls."""

    name = "vla"
    needs_images = True

    def __init__(self, vla: Any, runtime: RuntimeConfig | None = None, done_threshold: float = 0.5,
                 check_patience: int = 15, regrasp_patience: int = 10, max_regrasps: int = 2,
                 require_release: bool = True, order_pairs: bool = True,
                 relocate_every: int = DEFAULT_RELOCATE_EVERY, release_radius: float = 0.0,
                 align_radius: float = DEFAULT_ALIGN_RADIUS, binary_gripper: bool = True,
                 min_plan_confidence: float = DEFAULT_MIN_PLAN_CONFIDENCE,
                 still_release: float = DEFAULT_STILL_RELEASE) -> None:
        if not 0.0 < done_threshold < 1.0:
            raise ConfigError(f"done_threshold must be in (0, 1), got {done_threshold}")
        if check_patience < 1:
            raise ConfigError(f"check_patience must be >= 1 tick, got {check_patience}")
        if regrasp_patience < 1:
            raise ConfigError(f"regrasp_patience must be >= 1 tick, got {regrasp_patience}")
        if max_regrasps < 0:
            raise ConfigError(f"max_regrasps must be >= 0 (0 turns regrasping off), got {max_regrasps}")
        if relocate_every < 0:
            raise ConfigError(f"relocate_every must be >= 0 ticks (0: locate once per step), got {relocate_every}")
        if release_radius < 0:
            raise ConfigError(f"release_radius must be >= 0 metres (0: no release interlock), got {release_radius}")
        if align_radius < 0:
            raise ConfigError(f"align_radius must be >= 0 metres (0: no final alignment), got {align_radius}")
        if not 0.0 <= min_plan_confidence < 1.0:
            raise ConfigError(f"min_plan_confidence must be in [0, 1) (0: never refuse on confidence), got "
                              f"{min_plan_confidence}")
        if still_release < 0:
            raise ConfigError(f"still_release must be >= 0 metres per tick (0: no still-hand release), got "
                              f"{still_release}")
        self.vla = vla
        self.still_release = still_release
        self.still_releases = 0  # opens the still-hand rule ran this episode (docstring, 11.)
        self._still_fired_at: int | None = None  # plan step at which it last fired (once per step)
        self._prev_ee: np.ndarray | None = None  # end-effector position at the previous act()
        self.min_plan_confidence = min_plan_confidence
        self.done_threshold = done_threshold
        self.check_patience = check_patience
        self.regrasp_patience = regrasp_patience
        self.max_regrasps = max_regrasps
        self.require_release = require_release
        self.order_pairs = order_pairs
        self.relocate_every = relocate_every
        self.release_radius = release_radius
        self.align_radius = align_radius
        self.binary_gripper = binary_gripper
        self.held_releases = 0  # open commands held back this episode (the part was not over its target)
        self.aligned_ticks = 0  # ticks whose command the final alignment corrected this episode
        chunk = int(vla.config.chunk_size)
        self.runtime_config = runtime or RuntimeConfig(n_action_steps=min(chunk, int(vla.config.n_action_steps)))
        self.runtime = ChunkRuntime(self._predict, self.runtime_config, on_chunk=self._on_chunk)
        self.plan: Plan | None = None
        self.plan_step = 0
        self._step_check: StepCheck | None = None
        self._locate: Locate | None = None
        self._locate_live = False  # `locate` reads the objects' poses now (not the scene as planned)
        self._step_objects: np.ndarray | None = None  # the current step's objects, located when it began
        self._tick = 0  # act() calls this episode
        self._done_at: int | None = None  # tick at which the first chunk that called the step done runs out
        self._checked_ticks = 0  # consecutive ticks the current step's check has held
        self.retries = 0  # steps the model called done while their check failed (objects located again)
        self.regrasps = 0  # put-down steps sent back to their pick (see module docstring, 4.)
        self._regrasps_at: dict[int, int] = {}  # put-down step index -> regrasps it caused
        self._empty_ticks = 0  # consecutive ticks the current put-down's part lay released and unplaced
        self._located_at = 0  # tick at which the current step's objects were last located

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *, bf16: bool = False, done_threshold: float = 0.5,
                        check_patience: int = 15, regrasp_patience: int = 10, max_regrasps: int = 2,
                        require_release: bool = True, order_pairs: bool = True,
                        relocate_every: int = DEFAULT_RELOCATE_EVERY, release_radius: float = 0.0,
                        align_radius: float = DEFAULT_ALIGN_RADIUS, binary_gripper: bool = True,
                        min_plan_confidence: float = DEFAULT_MIN_PLAN_CONFIDENCE,
                        still_release: float = DEFAULT_STILL_RELEASE, **runtime: Any) -> VLAAgent:
        """Load a VLA checkpoint folder; `runtime` overrides `RuntimeConfig` fields (n_action_steps, ...)."""
        from keystone_vla.vla.policy import VLAPolicy

        vla = VLAPolicy.from_pretrained(folder, bf16=bf16)
        n = min(int(vla.config.chunk_size), int(vla.config.n_action_steps))  # the checkpoint's (default 2)
        config = RuntimeConfig(**{"n_action_steps": n, **runtime}) if runtime else None
        return cls(vla, config, done_threshold, check_patience, regrasp_patience, max_regrasps, require_release,
                   order_pairs, relocate_every, release_radius, align_radius, binary_gripper, min_plan_confidence,
                   still_release)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.vla.config.cameras)

    @property
    def image_size(self) -> int:
        return int(self.vla.config.image_size)

    @property
    def runtime_stats(self) -> Any:
        return self.runtime.stats

    # ------------------------------------------------------------------------------------------ episode
    def bind(self, world: Any, instance: Any) -> None:
        """Simulation: plan and ground against the world's objects; the task's per-step check ends steps."""
        from keystone_vla.sim.tasks import get_task

        task = get_task(instance.task)

        def step_check(step: PlanStep) -> bool:
            try:
                return bool(task.step_success(world, instance, step))
            except KeyError:  # a grammatical but meaningless step (place_in a block): its effect cannot hold
                return False

        from keystone_vla.sim.objects import step_object_vector

        observation = world.observation(instance.instruction, cameras=self.cameras)
        self.prepare(instance.instruction, observation, list(world.objects.values()), world.spec, step_check,
                     locate=lambda step: step_object_vector(world.objects, step))

    def prepare(self, instruction: str, observation: Observation, scene: Iterable[Any],
                robot: RobotSpec | None = None, step_check: StepCheck | None = None,
                locate: Locate | None = None) -> Plan:
        """Plan `instruction` over `scene` (scene-graph objects or sim objects) and ground it; raises GroundingError.
        `locate` gives a step's objects when it begins (default: their poses in `scene`, as planned)."""
        from keystone_vla.perception.grounding import Refusal, ground_plan
        from keystone_vla.perception.objects import as_scene

        objects = as_scene(scene)
        if not objects:
            raise GroundingError("I see no objects on the table, so there is nothing to act on")
        plan = self.vla.plan(instruction, observation, objects=[o.id for o in objects],
                             min_confidence=self.min_plan_confidence)
        if not plan.steps:
            raise GroundingError(f"the model found no executable step for {instruction!r}; rephrase it, e.g. "
                                 "'put the red block in the green bowl'")
        grounded = ground_plan(plan, objects, robot)
        if isinstance(grounded, Refusal):
            raise GroundingError(grounded.reason)
        by_id = {o.id: o for o in objects}
        self.plan = order_independent_pairs(grounded.plan, by_id) if self.order_pairs else grounded.plan
        self._step_check = step_check
        self._locate = locate or (lambda step: scene_step_objects(by_id, step))
        # the scene as planned says where a part lay, not where it is in the hand: the release interlock and the
        # final alignment need a `locate` that looks again, so they stay off without one
        self._locate_live = locate is not None
        self.reset()
        return self.plan

    def reset(self) -> None:
        """New episode for the prepared plan: first step, empty queue (the plan itself is kept)."""
        self.plan_step = 0
        self._tick = 0
        self._done_at = None
        self._checked_ticks = 0
        self.retries = 0
        self.regrasps = 0
        self._regrasps_at = {}
        self._empty_ticks = 0
        self._step_objects = None
        self.held_releases = 0
        self.aligned_ticks = 0
        self.still_releases = 0
        self._still_fired_at = None
        self._prev_ee = None
        self.runtime.reset()

    def close(self) -> None:
        self.runtime.close()

    # ------------------------------------------------------------------------------------------ control
    def act(self, observation: Observation) -> np.ndarray:
        if self.plan is None:
            raise ConfigError("VLAAgent has no plan: call prepare(instruction, observation, scene) (or run it "
                              "through run_episode / keystone eval, which call bind) before act()")
        last = len(self.plan.steps) - 1
        step = self.plan.steps[self.plan_step]
        checked = self._step_check is None or bool(self._step_check(step))
        if self._should_regrasp(step, checked, observation):  # also on the last step: its part may lie short too
            self._regrasps_at[self.plan_step] = self._regrasps_at.get(self.plan_step, 0) + 1
            self.regrasps += 1
            self._go_to(self.plan_step - 1)
        elif self.plan_step < last:
            # a put-down is over by patience only once the hand has let go: advancing while the part is still
            # held starts the next pick with a closed hand (measured: kit_assembly seed 1 then never picked again)
            released = step.skill == "pick" or _opening(observation) > EMPTY_OPEN
            counted = checked and self._step_check is not None and (released or not self.require_release)
            self._checked_ticks = self._checked_ticks + 1 if counted else 0
            # the done head says "this step ends within the chunk": the step is over when that whole chunk
            # would have run, however many of its actions were executed before replanning
            ran_out = self._done_at is not None and self._tick >= self._done_at
            if (ran_out and checked) or self._checked_ticks >= self.check_patience:
                self._go_to(self.plan_step + 1)
            elif ran_out:  # the model thinks the step is over but its effect does not hold: locate and retry
                self.retries += 1
                self._done_at = None
                self._step_objects = None
        if self._should_relocate(observation):
            self._step_objects = None
        if self._step_objects is None and self._locate is not None and getattr(self.vla.config, "object_token", False):
            from keystone_vla.vla.object_token import with_step_start

            located = self._locate(self.plan.steps[self.plan_step])
            self._step_objects = with_step_start(located, observation.ee_pose)
            self._located_at = self._tick
        action = self.runtime.act(observation)
        ee = np.asarray(observation.ee_pose, np.float64)[:3]
        still = (self._prev_ee is not None and self.still_release > 0
                 and float(np.linalg.norm(ee - self._prev_ee)) < self.still_release)
        self._prev_ee = ee
        if self.align_radius:
            action = self._align(action, observation, still=still)
        elif self._release_too_early(action, observation):
            action = action.copy()
            action[-1] = 1.0
            self.held_releases += 1
        if self._still_fired_at == self.plan_step:  # a still-hand release holds for the rest of the step (11.)
            action = action.copy()
            action[-1] = 0.0
        if self.binary_gripper:
            action = action.copy()
            action[-1] = 1.0 if float(action[-1]) >= 0.5 else 0.0
        self._tick += 1
        return action

    def _go_to(self, index: int) -> None:
        """Make plan step `index` current: fresh done/check counters, objects located again, queue flushed."""
        self.plan_step = index
        self._done_at = None
        self._still_fired_at = None
        self._checked_ticks = 0
        self._empty_ticks = 0
        self._step_objects = None
        self.runtime.flush()

    def _should_regrasp(self, step: PlanStep, checked: bool, observation: Observation) -> bool:
        """Whether the current put-down step's part lies released and unplaced long enough to pick it again."""
        assert self.plan is not None
        i = self.plan_step
        pick = self.plan.steps[i - 1] if i > 0 else None
        opening = _opening(observation)
        released = (not checked and self._step_check is not None and step.skill != "pick"
                    and pick is not None and pick.skill == "pick" and pick.args[0] == step.args[0]
                    and self._regrasps_at.get(i, 0) < self.max_regrasps
                    and (opening > EMPTY_OPEN or opening < EMPTY_CLOSED) and not self._step_check(pick))
        self._empty_ticks = self._empty_ticks + 1 if released else 0
        return self._empty_ticks >= self.regrasp_patience

    def _held_put_down(self, observation: Observation) -> PlanStep | None:
        """The current step when it puts a part down onto another object and the hand still holds something
        (opening strictly between empty-closed and empty-open); else None. Serves items 6 and 7 of the docstring."""
        if self.plan is None:
            return None
        step = self.plan.steps[self.plan_step]
        if step.skill == "pick" or len(step.args) < 2 or step.args[0] == step.args[-1]:
            return None
        return step if EMPTY_CLOSED < _opening(observation) < EMPTY_OPEN else None

    def _release_too_early(self, action: np.ndarray, observation: Observation) -> bool:
        """Release interlock (`release_radius`): during a put-down whose part is in the hand, an open command is
        held back while the part, located now, lies farther than `release_radius` (x/y) from its target."""
        if not self.release_radius or not self._locate_live or float(action[-1]) >= 0.5:
            return False
        step = self._held_put_down(observation)
        if step is None:
            return False
        located = np.asarray(self._locate(step), np.float64)
        return float(np.linalg.norm(located[0:2] - located[7:9])) > self.release_radius

    def _align(self, action: np.ndarray, observation: Observation, still: bool = False) -> np.ndarray:
        """Final alignment (`align_radius`, module docstring 8.): `action` with a bounded x/y/yaw correction, for a
        put-down of the held part toward its target (an early open held back), for a pick of the open hand toward the
        part's grasp pose; unchanged otherwise or outside the capture radius. `still` (the hand has stopped): a
        put-down's open command predicted later in the latest chunk runs now (module docstring 11.)."""
        if not self._locate_live or self.plan is None:
            return action
        step = self._held_put_down(observation)
        current = self.plan.steps[self.plan_step]
        if step is not None:
            located = np.asarray(self._locate(step), np.float64)
            residual, turn = located[7:9] - located[0:2], located[10] - located[3]
            symmetry = yaw_symmetry(step.args[0])  # unknown kinds and round parts: no yaw correction
        elif current.skill == "pick" and _opening(observation) > EMPTY_OPEN:
            located = np.asarray(self._locate(current), np.float64)
            ee = np.asarray(observation.ee_pose, np.float64)
            residual, turn = located[0:2] - ee[0:2], located[3] - float(gripper_yaw(ee[3:7]))
            # the two-finger gripper looks the same after a half turn: it grasps any part modulo half turns
            symmetry = yaw_symmetry(current.args[0])
            symmetry = symmetry and max(int(symmetry), 2)
        else:
            return action
        distance = float(np.linalg.norm(residual))
        if distance > self.align_radius:
            return action
        out = np.array(action, np.float32, copy=True)
        correction = ALIGN_GAIN * residual
        norm = float(np.linalg.norm(correction))
        if norm > ALIGN_MAX_STEP:
            correction *= ALIGN_MAX_STEP / norm
        out[0:2] += correction
        if symmetry:
            period = 2 * np.pi / symmetry
            turn = float(np.mod(turn + period / 2, period) - period / 2)
            out[5] += float(np.clip(ALIGN_GAIN * turn, -ALIGN_MAX_YAW, ALIGN_MAX_YAW))
        tolerance = self.release_radius or ALIGN_RELEASE_TOL
        if step is not None and float(out[-1]) < 0.5 and distance > tolerance:
            out[-1] = 1.0
            self.held_releases += 1
        elif (step is not None and still and float(out[-1]) >= 0.5 and distance <= tolerance
              and self._still_fired_at != self.plan_step and _set_down(located) and self._release_predicted()):
            out[-1] = 0.0
            self.still_releases += 1
            self._still_fired_at = self.plan_step
        self.aligned_ticks += 1
        return out

    def _release_predicted(self) -> bool:
        """Whether the latest chunk commands an open (gripper < 0.5) anywhere in its horizon."""
        chunk = self.runtime.last_chunk
        return chunk is not None and bool(np.any(np.asarray(chunk.actions)[:, -1] < 0.5))

    def _should_relocate(self, observation: Observation) -> bool:
        """Whether to locate the current put-down's objects again (`relocate_every`, module docstring 6.): only while
        the hand holds something, every `relocate_every` ticks."""
        if not self.relocate_every or self._step_objects is None:
            return False
        return (self._held_put_down(observation) is not None
                and self._tick - self._located_at >= self.relocate_every)

    def _predict(self, observation: Observation) -> ActionChunk:
        assert self.plan is not None
        step = self.plan.steps[self.plan_step]
        if self._step_objects is None:
            return self.vla.predict_chunk(observation, step.text)
        return self.vla.predict_chunk(observation, step.text, self._step_objects)

    def _on_chunk(self, chunk: ActionChunk) -> None:
        if chunk.step_done > self.done_threshold and self._done_at is None:
            self._done_at = self._tick + len(chunk.actions)


def order_independent_pairs(plan: Plan, objects: dict[str, Any]) -> Plan:
    """`plan` with its (pick X, place_in X, T) pairs sorted by X's y in the base frame, largest first, when the plan
    is made only of such pairs and none depends on another (every part and target distinct, no target is a part);
    any other plan, or one naming an object `objects` (id -> object with .position) lacks, comes back unchanged."""
    steps = plan.steps
    if len(steps) < 4 or len(steps) % 2:
        return plan
    pairs = [(steps[i], steps[i + 1]) for i in range(0, len(steps), 2)]
    if not all(p.skill == "pick" and q.skill == "place_in" and len(q.args) == 2 and q.args[0] == p.args[0]
               for p, q in pairs):
        return plan
    parts = [p.args[0] for p, _ in pairs]
    targets = [q.args[1] for _, q in pairs]
    if len(set(parts)) != len(parts) or len(set(targets)) != len(targets) or set(parts) & set(targets):
        return plan
    if any(x not in objects for x in parts):
        return plan
    ordered = sorted(pairs, key=lambda pq: -float(objects[pq[0].args[0]].position[1]))
    return Plan(plan.instruction, tuple(s for pq in ordered for s in pq))


def _set_down(located: np.ndarray) -> bool:
    """Whether a step's located part (`Locate` layout) rests on or in its target: the part's bottom at most
    `STILL_RELEASE_GAP` above the target's top (centre z plus half its height; sizes may be zero on a robot)."""
    bottom = float(located[2]) - float(located[6]) / 2
    top = float(located[9]) + float(located[13]) / 2
    return bottom <= top + STILL_RELEASE_GAP


def _opening(observation: Observation) -> float:
    """Gripper opening from the proprio state's last entry (1 = open; 0.5, 'unknown', when there is no state)."""
    return float(observation.state[-1]) if observation.state.size else 0.5


def scene_step_objects(objects: dict[str, Any], step: PlanStep) -> np.ndarray:
    """float32 [14] for `step` from scene-graph objects (id -> `DetectedObject`): first and last argument's
    position, yaw and size (zeros where the detector gave no size)."""
    out: list[float] = []
    for name in (step.args[0], step.args[-1]):
        obj = objects[name]
        size = obj.size if obj.size is not None else np.zeros(3)
        out.extend([*np.asarray(obj.position, float), float(obj.yaw), *np.asarray(size, float)])
    return np.asarray(out, np.float32)
