"""Run one episode (oracle or any policy) and record it; write rollout videos.

`run_episode` is the single episode loop used by `keystone sim run`, data collection and evaluation, so every consumer
sees the same termination rule, `judge.SuccessJudge`'s: the episode succeeds once the task's goal has held with the
gripper released (opening > 0.5) and the hand clear of every movable part for 1 s of simulated time, the plan's parts
at rest; it is cut at the task's `max_steps`, or up to 1 s later while the goal holds at that limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from keystone_vla.errors import ConfigError, SimError
from keystone_vla.types import EpisodeSpec, Observation, Plan, PlanStep

from .judge import SuccessJudge
from .objects import step_object_vector
from .oracle import OracleExpert
from .scene_sources import PERCEPTION_CAMERAS, make_scene_source
from .tasks import get_task
from .tasks.base import TaskInstance
from .world import CONTROL_HZ, SimWorld


class EpisodePolicy(Protocol):
    def reset(self) -> None: ...

    def act(self, observation: Observation) -> np.ndarray: ...


@dataclass
class EpisodeRecord:
    """One episode; per-step arrays have length T (observation at t, action taken at t)."""

    task: str
    split: str
    seed: int
    arm: str
    instruction: str
    plan: Plan
    success: bool
    steps: int
    goal_first_met_step: int | None = None  # tick (1-based, like `steps`) the goal first held with the hand open
    goal_lost: bool = False  # the goal held with the hand open at some tick, but the episode did not succeed
    halted: str | None = None  # why the policy gave the episode up and held the arm (e.g. it lost sight of a part)
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # cam -> uint8 [T, H, W, 3]
    state: np.ndarray | None = None  # float32 [T, dof + 1]
    ee_pose: np.ndarray | None = None  # float32 [T, 7]
    action: np.ndarray | None = None  # float32 [T, 7]
    plan_step: np.ndarray | None = None  # int32 [T]
    step_objects: np.ndarray | None = None  # float32 [T, 14], see `objects.step_object_vector`
    timestamp: np.ndarray | None = None  # float64 [T]
    interventions: int = 0
    wall_s: float = 0.0
    policy_latency_ms: list[float] = field(default_factory=list)
    video_frames: list[np.ndarray] = field(default_factory=list)


def make_world(spec: EpisodeSpec, cameras: tuple[str, ...], image_size: int, shield: Any = "default") -> SimWorld:
    world = SimWorld(arm=spec.arm, image_size=image_size, cameras=tuple(dict.fromkeys((*cameras, "front"))))
    world.shield = resolve_shield(shield, world)
    return world


def resolve_shield(shield: Any, world: SimWorld):
    """'default' -> the project's SafetyShield for this arm (when installed); None -> off (warns); else as given."""
    if shield == "default":
        try:
            from keystone_vla.safety import SafetyShield
        except ImportError:
            return None
        return SafetyShield.for_robot(world.spec)
    if shield is None:
        from .world import unsafe_no_shield_warning

        unsafe_no_shield_warning()
    return shield


class Executor(Protocol):
    """What runs instead of the oracle's action while the oracle's action is recorded as the label.

    `execute` gets the oracle's action for this tick, the observation, the plan step the oracle is on, that step's
    objects as it began (float [14], `objects.step_object_vector`) and the end-effector pose then, and returns the
    action to apply. `reset(seed)` starts an episode.
    """

    def reset(self, seed: int) -> None: ...

    def execute(self, label: np.ndarray, observation: Observation, step: PlanStep, objects: np.ndarray,
                ee_at_step_start: np.ndarray) -> np.ndarray: ...


class OracleNoise:
    """DART-style noise injection (Laskey et al., 2017) for demonstration collection.

    A policy trained only on clean expert paths never sees a state a few millimetres off them, so it never learns
    to correct one: measured on the shipped model, its lateral action during a descent did not change at all when
    the target moved by 5 cm, and a pick that ended 8 mm off its approach point stayed 8 mm off. With noise, the
    *executed* motion is perturbed while the *recorded* label stays the expert's (which, being computed from the
    commanded pose every tick, already steers back): per tick N(0, s) on x, y, z, plus with probability
    `kick_p` a lateral kick of N(0, 3 s) (the slow drifts a learned policy makes), where s is drawn once per
    episode from U(0, `scale`) so the data also keeps near-clean episodes. Seeded by the episode seed.
    """

    kick_p = 0.05

    def __init__(self, scale: float, seed: int = 0) -> None:
        self.scale = float(scale)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng([int(seed), 7919])
        self.s = float(self.rng.uniform(0.0, self.scale))

    def perturb(self, action: np.ndarray) -> np.ndarray:
        out = np.array(action, dtype=np.float32, copy=True)
        out[:3] += self.rng.normal(0.0, self.s, 3)
        if self.rng.random() < self.kick_p:
            out[:2] += self.rng.normal(0.0, 3.0 * self.s, 2)
        return out

    def execute(self, label: np.ndarray, observation: Observation, step: PlanStep, objects: np.ndarray,
                ee_at_step_start: np.ndarray) -> np.ndarray:
        return self.perturb(label)


def run_episode(spec: EpisodeSpec, *, policy: EpisodePolicy | None = None, cameras: tuple[str, ...] = ("front",),
                image_size: int = 128, record: bool = True, max_steps: int | None = None, shield: Any = "default",
                video: bool = False, world: SimWorld | None = None, action_noise: float = 0.0,
                executor: Executor | None = None, scene: str = "perception") -> EpisodeRecord:
    """Run one episode of `spec` with the oracle (policy None) or `policy`; return its record.

    A policy with ``begin(instruction, observation, scene_source, robot)`` (the VLA agent) gets the episode's scene
    source and nothing of the world: `scene` "perception" (default: the calibrated cameras' RGB-D frames, see
    `scene_sources`) or "privileged" (simulator truth, an upper bound that results must label). A policy with
    ``bind(world, instance)`` reads the world itself (the scripted oracle) and is privileged by construction.

    `record` keeps per-step observations/actions (for datasets); `video` keeps front-camera frames for a rollout video.
    Pass `world` to reuse a simulator across episodes (it is reset from the seed, so results do not depend on reuse).
    `action_noise` (metres, oracle only) perturbs the executed motion while the clean oracle action is recorded, so
    the demonstrations show how the expert recovers from being off its path (see `OracleNoise`). `executor`
    generalises that (oracle only): it chooses the applied action each tick while the oracle's is recorded, e.g.
    a learned policy for DAgger (`keystone_vla.policies.dagger.LearnerMix`).

    Success is `judge.SuccessJudge`'s verdict (read from simulator truth, never shown to the policy): the episode
    keeps running after the goal first holds until the judge's settle window is met. When the goal holds (hand open)
    at the step limit, the episode gets up to `CONTROL_HZ` extra ticks (1 s) while it keeps holding, so a limit never
    cuts a settle window that has started; `steps` may then exceed the limit. `goal_first_met_step` and `goal_lost`
    record whether the goal held at some tick in an episode that did not succeed.
    """
    if action_noise < 0 or (action_noise > 0 and policy is not None):
        raise ConfigError(f"action_noise must be >= 0 and is for oracle rollouts only (got {action_noise} with "
                          f"policy={'set' if policy is not None else 'None'})")
    if executor is not None and (policy is not None or action_noise > 0):
        raise ConfigError("executor is for oracle rollouts only and replaces action_noise; pass one of them, "
                          "without a policy")
    task = get_task(spec.task)
    own_world = world is None
    if world is None:
        world = make_world(spec, cameras, image_size, shield)
    t0 = time.perf_counter()
    try:
        inst = task.reset(world, spec.seed, spec.split, spec.instruction)
        oracle = OracleExpert(world, inst)
        begin = getattr(policy, "begin", None) if policy is not None else None
        perceive = begin is not None and scene == "perception"  # the scene source needs depth frames
        obs_cameras = _with_cameras(cameras, perceive)
        if policy is not None:
            bind = getattr(policy, "bind", None)
            if bind is not None:
                bind(world, inst)
            if begin is not None:
                first = world.observation(inst.instruction, cameras=obs_cameras, depth=perceive)
                begin(inst.instruction, first, make_scene_source(scene, world), world.spec)
            policy.reset()
        limit = max_steps or task.max_steps
        rec = EpisodeRecord(spec.task, spec.split, spec.seed, spec.arm, inst.instruction, inst.plan, False, 0)
        buf: dict[str, list] = {"state": [], "ee_pose": [], "action": [], "plan_step": [], "timestamp": [],
                                "step_objects": []}
        snapshot, snapshot_ee, snapshot_step = None, None, -1  # the current step's objects as that step began
        if action_noise > 0:
            executor = OracleNoise(action_noise)
        if executor is not None:
            executor.reset(spec.seed)
        frames: dict[str, list] = {c: [] for c in cameras}
        need_obs = record or policy is not None or executor is not None
        judge = SuccessJudge()
        for t in range(limit + judge.settle_ticks):
            obs = world.observation(inst.instruction, cameras=obs_cameras, depth=perceive) if need_obs else None
            if video:
                rec.video_frames.append(obs.images["front"] if obs is not None and "front" in obs.images
                                        else world.render("front").rgb)
            if policy is None:
                action = oracle.act()
                step_idx = min(oracle.plan_step, len(inst.plan.steps) - 1)
            else:
                a0 = time.perf_counter()
                action = np.asarray(policy.act(obs), dtype=np.float32)
                rec.policy_latency_ms.append((time.perf_counter() - a0) * 1e3)
                if getattr(policy, "halted", None):
                    rec.halted = str(policy.halted)
                step_idx = int(getattr(policy, "plan_step", 0))
            step = inst.plan.steps[max(0, min(step_idx, len(inst.plan.steps) - 1))] if inst.plan.steps else None
            if step is not None and step_idx != snapshot_step and (record or executor is not None):
                snapshot = step_object_vector(world.objects, step)
                snapshot_ee, snapshot_step = obs.ee_pose, step_idx
            if record:
                for c in cameras:
                    frames[c].append(obs.images[c])
                buf["state"].append(obs.state)
                buf["ee_pose"].append(obs.ee_pose)
                buf["action"].append(action)
                buf["plan_step"].append(step_idx)
                buf["step_objects"].append(snapshot)
                buf["timestamp"].append(t / CONTROL_HZ)
            if executor is not None and step is not None:
                applied = executor.execute(action, obs, step, snapshot, snapshot_ee)
            else:
                applied = action
            world.apply_action(applied)
            rec.steps = t + 1
            verdict = judge.update(world, inst, task)
            if verdict.success:
                rec.success = True
                break
            if rec.halted:
                break  # the policy gave up and holds the arm: nothing more can happen
            if t + 1 >= limit and not verdict.goal_held:
                break  # past the step limit only while the goal holds, so its settle window can finish
        rec.goal_first_met_step, rec.goal_lost = judge.goal_first_met_step, judge.goal_lost
        rec.interventions = world.interventions
        if record:
            rec.frames = {c: np.stack(v) for c, v in frames.items() if v}
            rec.state = np.asarray(buf["state"], dtype=np.float32)
            rec.ee_pose = np.asarray(buf["ee_pose"], dtype=np.float32)
            rec.action = np.asarray(buf["action"], dtype=np.float32)
            rec.plan_step = np.asarray(buf["plan_step"], dtype=np.int32)
            if inst.plan.steps:
                rec.step_objects = np.asarray(buf["step_objects"], dtype=np.float32)
            rec.timestamp = np.asarray(buf["timestamp"], dtype=np.float64)
        rec.wall_s = time.perf_counter() - t0
        return rec
    finally:
        if own_world:
            world.close()


def _with_cameras(cameras: tuple[str, ...], perceive: bool) -> tuple[str, ...]:
    """The policy's cameras, plus perception's when the scene source needs their frames."""
    return tuple(dict.fromkeys((*cameras, *PERCEPTION_CAMERAS))) if perceive else cameras


def task_instance(world: SimWorld, spec: EpisodeSpec) -> TaskInstance:
    """Reset `world` to `spec`'s scene and return the instance (for callers that drive the loop themselves)."""
    return get_task(spec.task).reset(world, spec.seed, spec.split, spec.instruction)


def write_video(frames: list[np.ndarray] | np.ndarray, path: str, fps: int = CONTROL_HZ) -> str:
    """Write frames (uint8 [H, W, 3]) as MP4 (or GIF when `path` ends in .gif); returns the path."""
    import imageio.v2 as imageio

    if len(frames) == 0:
        raise SimError(f"no frames to write to {path}")
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    if str(path).endswith(".gif"):
        imageio.mimsave(path, frames, duration=1.0 / fps, loop=0)
    else:
        h, w = frames[0].shape[:2]
        scale = max(1, 256 // max(h, w))
        if scale > 1:
            frames = [np.kron(f, np.ones((scale, scale, 1), dtype=np.uint8)) for f in frames]
        with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=16,
                                ffmpeg_log_level="error") as writer:
            for f in frames:
                writer.append_data(f)
    return str(path)
