"""The scripted oracle expert: executes any task's plan from privileged state through the public action interface.

It emits the same 7-D end-effector delta actions a learned policy emits (so its demonstrations are learnable), planning
each plan step as a few Cartesian waypoints (transit, approach, grasp/release, retreat) when the step starts, and
following them at bounded speed. Grasp yaw is chosen among the object's symmetric equivalents so the later placement
rotation stays small. It never touches the simulator directly: it reads poses and returns actions.

It closes and opens the gripper on conditions a policy can see (the hand has arrived, or has stopped against
contact), never after a count of still ticks: a learned policy sees the same state on each of those ticks and can only
learn an average delay, so its predicted grasp or release stays a few ticks ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keystone_vla.types import PlanStep

from .geometry import gripper_yaw, wrap_angle
from .objects import FIXTURE_HEIGHT, KIT_THICKNESS, PEG_HEIGHT, SceneObject
from .tasks.base import TaskInstance
from .world import CONTROL_HZ, SimWorld

TRANSIT_Z = 0.22
MAX_YAW_STEP = 0.2
ARRIVE_TOL = 0.006  # the real end effector must be this close before the next waypoint
STALL_TOL = 0.0005  # m per tick: an end effector moving less than this has stopped (against contact)


@dataclass
class Waypoint:
    pos: np.ndarray
    yaw: float
    grip: float  # gripper command held during and after this waypoint
    speed: float  # m/s
    settle: int = 0  # extra ticks to wait after arriving (only where the wait shows in the state: see below)


def _yaw_options(obj: SceneObject, current: float) -> list[float]:
    """Gripper yaws that grasp `obj` well; the gripper itself is symmetric under a half turn."""
    if obj.symmetry == 0:
        return [current]
    step = math.pi / 2 if obj.symmetry == 4 else math.pi
    return [wrap_angle(obj.yaw() + k * step) for k in range(int(round(2 * math.pi / step)))]


def placement_rotation(obj: SceneObject, target: SceneObject) -> float:
    """Yaw the held object must turn by to match `target` (0 when the target has no orientation)."""
    if obj.symmetry == 0 or target.kind in ("bowl", "plate"):
        return 0.0
    period = 2 * math.pi / obj.symmetry
    return wrap_angle(target.yaw() - obj.yaw(), period)


class OracleExpert:
    """Call `act()` once per control tick; `plan_step` is the index of the step being executed."""

    def __init__(self, world: SimWorld, inst: TaskInstance) -> None:
        self.world = world
        self.inst = inst
        self.steps: tuple[PlanStep, ...] = inst.plan.steps
        self.plan_step = 0
        self._waypoints: list[Waypoint] = []
        self._wp = 0
        self._settled = 0
        self._grip = 0.0
        self._home_yaw = gripper_yaw(world.target_pose[1])
        self._planned_for = -1
        self._last_ee: np.ndarray | None = None

    @property
    def done(self) -> bool:
        return self.plan_step >= len(self.steps)

    def act(self) -> np.ndarray:
        if self.done:
            return np.array([0, 0, 0, 0, 0, 0, self._grip], dtype=np.float32)
        if self._planned_for != self.plan_step:
            self._waypoints = self._plan(self.steps[self.plan_step])
            self._wp, self._settled, self._planned_for = 0, 0, self.plan_step
        wp = self._waypoints[self._wp]
        pos, orn = self.world.target_pose
        dp = wp.pos - pos
        dist = float(np.linalg.norm(dp))
        max_d = wp.speed / CONTROL_HZ
        step = dp if dist <= max_d else dp * (max_d / dist)
        dyaw = wrap_angle(wp.yaw - gripper_yaw(orn))
        dyaw_c = float(np.clip(dyaw, -MAX_YAW_STEP, MAX_YAW_STEP))
        self._grip = wp.grip
        ee = self.world.robot.ee_pose()[:3]
        moved = math.inf if self._last_ee is None else float(np.linalg.norm(ee - self._last_ee))
        self._last_ee = ee
        if dist <= max_d and abs(dyaw) <= MAX_YAW_STEP:  # the commanded pose arrives this tick
            self._settled += 1
            lag = float(np.linalg.norm(ee - wp.pos))
            # contact may block exact arrival: a stalled hand counts as arrived (so a blocked peg is let go at once,
            # as the state shows it, not after a count of still ticks no policy could see); the count is a backstop
            converged = lag < ARRIVE_TOL or moved < STALL_TOL or self._settled > wp.settle + 15
            if converged and self._settled > wp.settle:
                self._wp, self._settled = self._wp + 1, 0
                if self._wp >= len(self._waypoints):
                    self.plan_step += 1
        return np.array([*step, 0.0, 0.0, dyaw_c, wp.grip], dtype=np.float32)

    # -- planning ---------------------------------------------------------------------------------------------------
    def _plan(self, step: PlanStep) -> list[Waypoint]:
        objs = self.world.objects
        obj = objs[step.args[0]]
        if step.skill == "pick":
            return self._plan_pick(obj)
        return self._plan_place(step, obj, objs[step.args[1]])

    def _next_target(self, obj: SceneObject) -> SceneObject | None:
        for s in self.steps[self.plan_step + 1:]:
            if s.skill != "pick" and s.args[0] == obj.name:
                return self.world.objects[s.args[1]]
        return None

    def _plan_pick(self, obj: SceneObject) -> list[Waypoint]:
        pos, orn = self.world.target_pose
        cur_yaw = gripper_yaw(orn)
        target = self._next_target(obj)
        d = placement_rotation(obj, target) if target is not None else 0.0
        yaw = min(_yaw_options(obj, cur_yaw),
                  key=lambda g: max(abs(wrap_angle(g - self._home_yaw)), abs(wrap_angle(g + d - self._home_yaw))))
        p = obj.position()
        grasp = np.array([p[0], p[1], p[2] + obj.grasp_height])
        above = np.array([p[0], p[1], TRANSIT_Z])
        return [
            Waypoint(np.array([pos[0], pos[1], max(pos[2], TRANSIT_Z)]), cur_yaw, 0.0, 0.24),
            Waypoint(above, yaw, 0.0, 0.24),
            Waypoint(grasp, yaw, 0.0, 0.12),
            Waypoint(grasp, yaw, 1.0, 0.12, settle=5),  # the fingers close over these ticks: the state shows it
            Waypoint(above, yaw, 1.0, 0.15),
        ]

    def _plan_place(self, step: PlanStep, obj: SceneObject, target: SceneObject) -> list[Waypoint]:
        pos, orn = self.world.target_pose
        cur_yaw = gripper_yaw(orn)
        d = placement_rotation(obj, target)
        op = obj.position()
        offset = op - self.world.robot.ee_pose()[:3]  # held object's origin relative to the actual grasp point
        c, s = math.cos(d), math.sin(d)
        offset_rot = np.array([c * offset[0] - s * offset[1], s * offset[0] + c * offset[1], offset[2]])
        tp = target.position()
        half = obj.size[2] / 2
        speed_down = 0.08
        if step.skill == "place_on":
            goal_z = tp[2] + target.size[2] / 2 + half + 0.002
        elif step.skill == "insert":
            goal_z = PEG_HEIGHT / 2 + 0.004
            speed_down = 0.04
        elif target.kind == "slot":
            goal_z = KIT_THICKNESS + half + 0.002
        else:  # container: release a little above its floor
            goal_z = target.extra.get("floor", 0.0) + half + 0.012
        goal_obj = np.array([tp[0], tp[1], goal_z])
        goal_ee = goal_obj - offset_rot
        pre_z = max(TRANSIT_Z, goal_ee[2] + 0.08)
        if step.skill == "insert":
            pre_z = max(pre_z, FIXTURE_HEIGHT + PEG_HEIGHT + 0.03 - offset_rot[2])
        yaw = cur_yaw + d
        above = np.array([goal_ee[0], goal_ee[1], pre_z])
        retreat = np.array([goal_ee[0], goal_ee[1], goal_ee[2] + 0.08])
        return [
            Waypoint(above, yaw, 1.0, 0.24, settle=1),
            Waypoint(goal_ee, yaw, 1.0, speed_down),
            Waypoint(goal_ee, yaw, 0.0, 0.1, settle=3),  # the fingers open over these ticks
            Waypoint(retreat, yaw, 0.0, 0.15),
        ]
