"""`VLAAgent`: a `keystone_vla.vla.VLAPolicy` driven as a per-tick policy: plan -> ground -> steps -> chunks -> assists.

1. Before any motion (`prepare`; in simulation `bind` calls it), the model plans the instruction over the scene's
   object ids and the plan is grounded with `keystone_vla.perception.grounding.ground_plan`. A plan that does not
   ground (unknown, ambiguous or unreachable object, no step) or that the model is unsure of
   (`AgentConfig.min_plan_confidence`) raises `GroundingError` with the reason: the episode is refused and the
   arm never moves. A kit's independent put-downs may be reordered (`assists.pair_order`).
2. `PlanSequencer` decides which step runs each tick (done head + step check, patience, retries, regrasp).
3. The current step's text, and for models with an object token the step's objects located when the step begins
   (and again every `relocate_every` ticks while a part is held), condition the chunk predictor; chunks run
   through the `ChunkRuntime` (queue, `actions_per_chunk` actions per chunk, optional background inference).
4. The assists `AgentConfig.assists` names (`keystone_vla.policies.assists`) then change the commanded action,
   in that order, each within its own bounds.

Everything the agent reads at run time comes through three seams: the observation, the `locate` it is given
(step -> the step's objects now; on a robot the scene graph's) and the `step_check` it is given. `bind` is the
simulator's adapter and the only place that touches a world: it hands over the world's object poses and the
task's per-step checks, which is privileged simulator state. Nothing else in this module may read the simulator.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError, GroundingError
from keystone_vla.robots import RobotSpec
from keystone_vla.types import ActionChunk, Observation, Plan, PlanStep

from .agent_config import AgentConfig, resolve_agent_config
from .assists.base import AssistContext
from .assists.pair_order import order_independent_pairs
from .plan_sequencer import Event, PlanSequencer, StepCheck
from .runtime import ChunkRuntime, RuntimeConfig

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
        counts = {"regrasps": self.regrasps, "retries": self.retries}
        for assist in self.assists:
            counts.update(assist.counts())
        return counts

    # ------------------------------------------------------------------------------------------ episode
    def bind(self, world: Any, instance: Any) -> None:
        """Simulation: plan and ground against the world's objects; the task's per-step check ends steps."""
        from keystone_vla.sim.objects import step_object_vector
        from keystone_vla.sim.tasks import get_task

        task = get_task(instance.task)

        def step_check(step: PlanStep) -> bool:
            try:
                return bool(task.step_success(world, instance, step))
            except KeyError:  # a grammatical but meaningless step (place_in a block): its effect cannot hold
                return False

        observation = world.observation(instance.instruction, cameras=self.cameras)
        self.prepare(instance.instruction, observation, list(world.objects.values()), world.spec, step_check,
                     locate=lambda step: step_object_vector(world.objects, step))

    def prepare(self, instruction: str, observation: Observation, scene: Iterable[Any],
                robot: RobotSpec | None = None, step_check: StepCheck | None = None,
                locate: Locate | None = None) -> Plan:
        """Plan `instruction` over `scene` (scene-graph objects or sim objects) and ground it; raises GroundingError.
        `locate` gives a step's objects now (default: their poses in `scene`, as planned; the assists that need
        the objects as they are now stay off without one)."""
        from keystone_vla.perception.grounding import Refusal, ground_plan
        from keystone_vla.perception.objects import as_scene

        objects = as_scene(scene)
        if not objects:
            raise GroundingError("I see no objects on the table, so there is nothing to act on")
        plan = self.vla.plan(instruction, self._model_view(observation), objects=[o.id for o in objects],
                             min_confidence=self.config.min_plan_confidence)
        if not plan.steps:
            raise GroundingError(f"the model found no executable step for {instruction!r}; rephrase it, e.g. "
                                 "'put the red block in the green bowl'")
        grounded = ground_plan(plan, objects, robot)
        if isinstance(grounded, Refusal):
            raise GroundingError(grounded.reason)
        by_id = {o.id: o for o in objects}
        plan = order_independent_pairs(grounded.plan, by_id) if self.config.pair_order else grounded.plan
        self.sequencer.start(plan, step_check)
        self._locate = locate or (lambda step: scene_step_objects(by_id, step))
        self._locate_live = locate is not None
        self.reset()
        return plan

    def reset(self) -> None:
        """New episode for the prepared plan: first step, empty queue, fresh assists (the plan itself is kept)."""
        self.sequencer.reset()
        for assist in self.assists:
            assist.reset()
        self._step_objects = None
        self.runtime.reset()

    def close(self) -> None:
        self.runtime.close()

    # ------------------------------------------------------------------------------------------ control
    def act(self, observation: Observation) -> np.ndarray:
        if self.plan is None:
            raise ConfigError("VLAAgent has no plan: call prepare(instruction, observation, scene) (or run it "
                              "through run_episode / keystone eval, which call bind) before act()")
        event = self.sequencer.update(observation)
        if event in (Event.ADVANCED, Event.REGRASP):  # no action of the old step may run in the new one
            self.runtime.flush()
        if event is not Event.NONE:
            self._step_objects = None
        step = self.sequencer.step
        ctx = AssistContext(observation, step, self.sequencer.visit,
                            locate=self._locate if self._locate_live else None)
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


def scene_step_objects(objects: dict[str, Any], step: PlanStep) -> np.ndarray:
    """float32 [14] for `step` from scene-graph objects (id -> `DetectedObject`): first and last argument's
    position, yaw and size (zeros where the detector gave no size)."""
    out: list[float] = []
    for name in (step.args[0], step.args[-1]):
        obj = objects[name]
        size = obj.size if obj.size is not None else np.zeros(3)
        out.extend([*np.asarray(obj.position, float), float(obj.yaw), *np.asarray(size, float)])
    return np.asarray(out, np.float32)
