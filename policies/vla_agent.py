"""`VLAAgent`: a `keystone_vla.vla.VLAPolicy` driven as a per-tick policy: plan -> ground -> steps -> chunks -> assists.

1. Before any motion (`begin`, which the harness calls with the episode's scene source), the model plans the
   instruction over the ids of the objects the scene shows and the plan is grounded with `keystone_vla.perception.grounding.ground_plan`. A plan that does not
   ground (unknown, ambiguous or unreachable object, no step) or that the model is unsure of
   (`AgentConfig.min_plan_confidence`) raises `GroundingError` with the reason: the episode is refused and the
   arm never moves. A kit's independent put-downs may be reordered (`assists.pair_order`).
2. `PlanSequencer` decides which step runs each tick (done head + step check, patience, retries, regrasp).
3. The current step's text, and for models with an object token the step's objects located when the step begins
   (and again every `relocate_every` ticks while a part is held), condition the chunk predictor; chunks run
   through the `ChunkRuntime` (queue, `actions_per_chunk` actions per chunk, optional background inference).
4. The assists `AgentConfig.assists` names (`keystone_vla.policies.assists`) then change the commanded action,
   in that order, each within its own bounds.

Everything the agent reads at run time comes through two seams: the observation and the scene source it is given
for the episode (`begin`). The source (`keystone_vla.perception.scene_source`) turns each tick's observation
into a `SceneView`: the robot's own perception by default (the cameras' RGB-D frames -> scene graph -> tracks,
the part in the hand following the gripper's forward kinematics), or simulator truth only when a run asks for
it explicitly and labels itself privileged. The object token, the assists, the step checks that advance the plan
(`keystone_vla.perception.relations`), regrasps and the kit's pair order all read that one view, looked up once
per tick. When the view cannot be trusted (no depth frame, an empty scene, an object the step needs lost), the
agent holds the arm and says why (`hold_reason`); after `HALT_AFTER` such ticks in a row it stops for good
(`halted`). This module never imports the simulator: it cannot reach a world, only what a source hands it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError, GroundingError
from keystone_vla.perception.objects import DetectedObject, as_scene
from keystone_vla.perception.relations import effect_holds
from keystone_vla.perception.tracker import SceneView
from keystone_vla.robots import RobotSpec
from keystone_vla.types import ActionChunk, Observation, Plan, PlanStep

from .agent_config import AgentConfig, resolve_agent_config
from .assists.base import EMPTY_OPEN, AssistContext, gripper_opening
from .assists.pair_order import order_independent_pairs
from .base import gripper_command_from_state, hold_action
from .plan_sequencer import Event, PlanSequencer, StepCheck
from .runtime import ChunkRuntime, RuntimeConfig

#: ticks in a row the scene may be untrustworthy (the arm holding) before the agent gives the episode up
HALT_AFTER = 30
#: ticks in a row the last step's effect must hold, with the hand open, before the plan counts as done
DONE_AFTER = 3
LOOK_SPEED = 0.015  # m per tick: how fast the open hand rises to uncover a released part it hides

Locate = Callable[[PlanStep], np.ndarray]  # a step -> float [14]: its first and last object (x y z yaw size_xyz)
# (the agent appends the end-effector pose at that moment: the model's 21-number step_objects)


class VLAAgent:
    """Per-tick policy around a VLAPolicy (see module docstring). `plan`, `plan_step` and `runtime_stats` are
    public so harnesses can report plan exactness, progress and stalls; `assist_counts()` says what the assists
    and the sequencer did this episode."""

    name = "vla"
    needs_images = True

    def __init__(self, vla: Any, config: AgentConfig | None = None, runtime: RuntimeConfig | None = None) -> None:
        self.vla = vla
        self.config = config or AgentConfig()
        self.runtime_config = runtime or RuntimeConfig(n_action_steps=actions_per_chunk(vla, self.config))
        self.sequencer = PlanSequencer(self.config.sequencer, self.config.regrasp)
        self.runtime = ChunkRuntime(self._predict, self.runtime_config, on_chunk=self.sequencer.on_chunk)
        self.assists = self.config.build_assists()
        self._locate: Locate | None = None
        self._locate_live = False  # `locate` reads the objects' poses now (not the scene as planned)
        self._step_objects: np.ndarray | None = None  # the current step's objects, as the model is shown them
        self._located_at = 0  # tick at which they were located
        self.scene: Any = None  # the episode's scene source
        self.view: SceneView | None = None  # this tick's scene
        self._step_check: StepCheck | None = None
        self._last_grip = 0.0
        self._hold_ticks = 0
        self.hold_reason: str | None = None  # why the arm last held for the scene (None: never this episode)
        self.holds = 0  # ticks held for the scene this episode
        self.halted: str | None = None  # why the agent gave the episode up, or None
        self.finished = False  # the plan is done: the last step's effect holds with the hand open
        self._done_ticks = 0
        self.look_ticks = 0  # ticks this episode the hand rose to see a released part it hid
        self._look_from: float | None = None  # hand height when the current look began (None: not looking)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], config: AgentConfig | None = None, *,
                        bf16: bool = False, **runtime: Any) -> VLAAgent:
        """Load a VLA checkpoint folder with `config` (None: the folder's agent.json, else the `shipped` preset);
        `runtime` overrides `RuntimeConfig` fields (n_action_steps, ...)."""
        from keystone_vla.vla.policy import VLAPolicy

        vla = VLAPolicy.from_pretrained(folder, bf16=bf16)
        config = config or resolve_agent_config(folder)
        if runtime:
            return cls(vla, config, RuntimeConfig(**{"n_action_steps": actions_per_chunk(vla, config), **runtime}))
        return cls(vla, config)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.vla.config.cameras)

    @property
    def image_size(self) -> int:
        return int(self.vla.config.image_size)

    @property
    def runtime_stats(self) -> Any:
        return self.runtime.stats

    @property
    def plan(self) -> Plan | None:
        """The grounded plan being executed (the sequencer's)."""
        return self.sequencer.plan

    @plan.setter
    def plan(self, plan: Plan) -> None:
        self.sequencer.plan = plan

    @property
    def plan_step(self) -> int:
        return self.sequencer.index

    @property
    def regrasps(self) -> int:
        return self.sequencer.regrasps

    @property
    def retries(self) -> int:
        return self.sequencer.retries

    def assist_counts(self) -> dict[str, int]:
        """What the rules around the model did this episode: regrasps, retries and each assist's counters."""
        counts = {"regrasps": self.regrasps, "retries": self.retries, "look_ticks": self.look_ticks}
        for assist in self.assists:
            counts.update(assist.counts())
        return counts

    # ------------------------------------------------------------------------------------------ episode
    @property
    def scene_name(self) -> str | None:
        """'perception' or 'privileged' (the episode's scene source), or None before `begin`."""
        return getattr(self.scene, "name", None)

    def begin(self, instruction: str, observation: Observation, scene: Any, robot: RobotSpec | None = None) -> Plan:
        """Start an episode: plan `instruction` over what `scene` (a scene source) shows in `observation`, ground
        it and get ready to act. Raises GroundingError (nothing moves) when the scene cannot be seen or the plan
        does not ground."""
        return self.prepare(instruction, observation, scene, robot)

    def prepare(self, instruction: str, observation: Observation, scene: Any,
                robot: RobotSpec | None = None, step_check: StepCheck | None = None,
                locate: Locate | None = None) -> Plan:
        """Plan `instruction` over `scene` and ground it; raises GroundingError.

        `scene` is a scene source (`observe(observation) -> SceneView`, read every tick) or a fixed list of
        objects (scene-graph objects or dicts in that shape: a static scene; the assists that need the objects as
        they are now stay off). `step_check` / `locate` replace the view-based step check and lookup (tests)."""
        from keystone_vla.perception.grounding import Refusal, ground_plan, plan_checked

        if not hasattr(scene, "observe"):
            scene = StaticScene(as_scene(scene))
        scene.reset()
        view = scene.observe(observation)
        if view.failure:
            raise GroundingError(f"cannot ground the instruction: {view.failure}")
        objects = list(view.objects.values())
        if not objects:
            raise GroundingError("I see no objects on the table, so there is nothing to act on")
        # the model plans the instruction's grounded reading; a plan that is not that reading, an unsure model or
        # an unsure reading raises AskBack ("did you mean ...?"): never a guess (perception.grounding.plan_checked)
        plan = plan_checked(self.vla, instruction, objects, robot, self._model_view(observation),
                            self.config.min_plan_confidence)
        if not plan.steps:
            raise GroundingError(f"the model found no executable step for {instruction!r}; rephrase it, e.g. "
                                 "'put the red block in the green bowl'")
        grounded = ground_plan(plan, objects, robot)
        if isinstance(grounded, Refusal):
            raise GroundingError(grounded.reason)
        by_id = {o.id: o for o in objects}
        plan = order_independent_pairs(grounded.plan, by_id) if self.config.pair_order else grounded.plan
        self.scene, self.view = scene, view
        self.sequencer.start(plan, step_check or self._view_step_check)
        self._locate = locate or self._view_locate
        self._locate_live = locate is not None or not isinstance(scene, StaticScene)
        self.reset()
        self._last_grip = gripper_command_from_state(observation)
        return plan

    def _view_step_check(self, step: PlanStep) -> bool:
        assert self.view is not None
        if any(a in self.view.unconfirmed for a in step.args):
            return False  # let go where the hand still hides it: where it rests is not known yet
        return effect_holds(step, self.view.objects)

    def _view_locate(self, step: PlanStep) -> np.ndarray:
        assert self.view is not None
        return scene_step_objects(self.view.objects, step)

    def reset(self) -> None:
        """New episode for the prepared plan: first step, empty queue, fresh assists (the plan itself is kept)."""
        self.sequencer.reset()
        for assist in self.assists:
            assist.reset()
        self._step_objects = None
        self._hold_ticks, self.holds, self.hold_reason, self.halted = 0, 0, None, None
        self.finished, self._done_ticks = False, 0
        self.look_ticks, self._look_from = 0, None
        self.runtime.reset()

    def close(self) -> None:
        self.runtime.close()

    # ------------------------------------------------------------------------------------------ control
    def act(self, observation: Observation) -> np.ndarray:
        if self.plan is None:
            raise ConfigError("VLAAgent has no plan: call begin(instruction, observation, scene_source) (or run "
                              "it through run_episode / keystone eval, which do) before act()")
        if self.halted:
            return hold_action(self._last_grip)
        self.view = self.scene.observe(observation)
        problem = self.view.problem(self.sequencer.step.args)
        if problem is not None:  # the scene cannot be trusted: hold, never act on a guess
            self.holds += 1
            self._hold_ticks += 1
            self.hold_reason = problem
            if self._hold_ticks >= HALT_AFTER:
                self.halted = f"{problem} (gave up after {HALT_AFTER} ticks)"
            self.runtime.flush()
            return hold_action(self._last_grip)
        self._hold_ticks = 0
        if self.finished:
            return self._after_plan(observation)
        looking = self._look_from is not None  # the last tick was a look
        look = self._look(observation)
        if look is not None:
            return look
        event = Event.NONE
        if looking:  # the camera has just seen the part the hand hid: judge its put-down now
            assert self.plan is not None
            check = self.sequencer.step_check
            if self.plan_step == len(self.plan.steps) - 1 and check is not None and check(self.sequencer.step):
                self.finished = True  # the last part rests where it belongs: done, without the model acting again
                return self._after_plan(observation)
            event = self.sequencer.judge_now(observation)
        if event is Event.NONE:
            event = self.sequencer.update(observation)
        if event in (Event.ADVANCED, Event.REGRASP):  # no action of the old step may run in the new one
            self.runtime.flush()
        if event is not Event.NONE:
            self._step_objects = None
        step = self.sequencer.step
        ctx = AssistContext(observation, step, self.sequencer.visit,
                            locate=self._locate if self._locate_live else None,
                            kinds={n: o.shape for n, o in self.view.objects.items()})
        if self._should_relocate(ctx):
            self._step_objects = None
        if self._step_objects is None and self._locate is not None and getattr(self.vla.config, "object_token", False):
            from keystone_vla.vla.object_token import with_step_start

            # a live scene is read once per tick: the token and the assists share this tick's lookup
            located = ctx.located if ctx.locate is not None else self._locate(step)
            self._step_objects = with_step_start(located, observation.ee_pose)
            self._located_at = self.sequencer.tick
        action = self.runtime.act(observation)
        ctx.chunk = self.runtime.last_chunk
        for assist in self.assists:
            action = assist.apply(ctx, action)
        self.sequencer.end_tick()
        self._last_grip = float(action[6])
        self._check_finished(observation)
        return action

    def _look(self, observation: Observation) -> np.ndarray | None:
        """While the current put-down's part lies released where the open hand hides it from the camera
        (`SceneView.unconfirmed`), nothing about the step can be judged: the sequencer waits and the open hand
        moves out of the camera's line of sight, at `LOOK_SPEED` per tick: straight up by `look_lift` (off the
        part, so the fingers drag nothing), then horizontally away from the camera by up to `look_lift` (a hand
        over a part still hides it from a camera that looks down at an angle: measured, 30 hidden pixels of a
        kit part with the hand 8 cm above it), until the camera sees the part or the tracker gives up waiting
        and takes it as it lies. None: no look now."""
        assert self.view is not None
        step = self.sequencer.step
        lift = self.config.look_lift
        if not lift or step.args[0] not in self.view.unconfirmed or step.skill == "pick" \
                or gripper_opening(observation) <= EMPTY_OPEN:
            self._look_from = None
            return None
        z = float(observation.ee_pose[2])
        if self._look_from is None:
            self._look_from = z
            self.runtime.flush()
        action = hold_action(0.0)
        part = self.view.objects.get(step.args[0])
        if z < self._look_from + lift:
            action[2] = LOOK_SPEED
        elif self.view.camera_xy is not None and part is not None:
            away = np.asarray(part.position[:2], np.float64) - self.view.camera_xy
            away /= max(float(np.linalg.norm(away)), 1e-9)
            if float(np.dot(np.asarray(observation.ee_pose[:2], np.float64) - part.position[:2], away)) < lift:
                action[:2] = away * LOOK_SPEED
        self.look_ticks += 1
        self.sequencer.end_tick()
        self._last_grip = float(action[6])
        return action

    def _check_finished(self, observation: Observation) -> None:
        """The plan is done once its last step's effect has held, with the hand open, `DONE_AFTER` ticks in a row."""
        assert self.plan is not None
        check = self.sequencer.step_check
        holds = (check is not None and self.plan_step == len(self.plan.steps) - 1
                 and gripper_opening(observation) > EMPTY_OPEN and bool(check(self.sequencer.step)))
        self._done_ticks = self._done_ticks + 1 if holds else 0
        self.finished = self._done_ticks >= DONE_AFTER

    def _after_plan(self, observation: Observation) -> np.ndarray:
        """Once the plan is done the model is not asked again: the hand stays open and still, after the set-down
        assist's straight lift when it runs (the demonstrations end at the goal, so the model never learned what
        to do after it)."""
        action = hold_action(0.0)
        ctx = AssistContext(observation, self.sequencer.step, self.sequencer.visit)
        for assist in self.assists:
            if hasattr(assist, "after_plan"):
                action = assist.after_plan(ctx)
        self._last_grip = float(action[6])
        return action

    def _should_relocate(self, ctx: AssistContext) -> bool:
        """Whether to locate the current put-down's objects again: only while the hand holds the part, every
        `relocate_every` ticks. A part that slips or turns in the grip is then placed where it is: on insert the
        peg's offset in the gripper moved by 9-26 mm between the step's start and the release in half the failures
        without it."""
        every = self.config.relocate_every
        if not every or self._step_objects is None:
            return False
        return ctx.held_put_down() and self.sequencer.tick - self._located_at >= every

    def _predict(self, observation: Observation) -> ActionChunk:
        step = self.sequencer.step
        observation = self._model_view(observation)
        if self._step_objects is None:
            return self.vla.predict_chunk(observation, step.text)
        return self.vla.predict_chunk(observation, step.text, self._step_objects)

    def _model_view(self, observation: Observation) -> Observation:
        """The observation the model is shown: as observed, or (`images="blank"`, a control) with every camera frame
        replaced by one constant mid-grey frame of the same size; state, pose and depth unchanged."""
        if self.config.images == "camera":
            return observation
        return dataclasses.replace(observation, images={k: np.full_like(v, 128) for k, v in observation.images.items()})


def actions_per_chunk(vla: Any, config: AgentConfig) -> int:
    """Actions run per predicted chunk: the agent config's, else the checkpoint's (config.json n_action_steps), at
    most the chunk size."""
    return min(int(vla.config.chunk_size), config.actions_per_chunk or int(vla.config.n_action_steps))


class StaticScene:
    """A fixed list of objects as a scene source (tests, a scene graph computed once): every view is the same."""

    name = "static"
    privileged = False

    def __init__(self, objects: Iterable[DetectedObject]) -> None:
        self.objects = {o.id: o for o in objects}

    def reset(self) -> None:
        """Nothing to forget."""

    def observe(self, observation: Observation) -> SceneView:
        return SceneView(dict(self.objects), source=self.name)


def scene_step_objects(objects: dict[str, Any], step: PlanStep) -> np.ndarray:
    """float32 [14] for `step` from scene-graph objects (id -> `DetectedObject`): first and last argument's
    position, yaw and size (zeros where the detector gave no size)."""
    out: list[float] = []
    for name in (step.args[0], step.args[-1]):
        obj = objects[name]
        size = obj.size if obj.size is not None else np.zeros(3)
        out.extend([*np.asarray(obj.position, float), float(obj.yaw), *np.asarray(size, float)])
    return np.asarray(out, np.float32)
