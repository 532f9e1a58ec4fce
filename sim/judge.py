"""The success judge: decides from simulator truth, tick by tick, whether an episode has succeeded.

A goal that holds for one tick is not yet a success: a part caught mid-fall can pass through the goal region, and a
hand that still touches the part may be what keeps it there. So an episode succeeds only when, for `settle_ticks`
consecutive control ticks (1 s of simulated time by default), after the last release:

- the task's goal holds (`Task.success`),
- the gripper is open (opening > 0.5),
- the hand is clear: no robot link is within `clearance` of any movable object (contact included),

and, at the end of that window, every movable object the plan names is at rest (base linear speed below
`rest_speed`). Only the plan's objects must rest: a distractor knocked off the table falls (there is no floor) and
would otherwise never settle. A goal that held with the hand open at some tick, in an episode that never met the full
criterion, is recorded as `goal_lost` ("met the goal, then lost it").

The judge reads privileged state (poses, velocities, contacts) and exists for scoring only: it must never be handed
to a policy or decide an action.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

from .objects import SceneObject
from .tasks.base import Task, TaskInstance
from .world import CONTROL_HZ, SimWorld

OPEN_MIN = 0.5  # gripper opening above which the hand counts as released
REST_SPEED = 0.01  # m/s; a part slower than this has settled
CLEARANCE = 0.003  # m; a robot link closer than this to a movable object touches it


@dataclass(frozen=True)
class Verdict:
    """The judge's reading after one control tick."""

    success: bool  # the full criterion is met: the episode may end as a success
    goal_held: bool  # the task's goal holds with the gripper open this tick
    clear: bool  # no robot link touches a movable object this tick
    at_rest: bool  # every movable object the plan names is at rest this tick
    held_ticks: int  # consecutive ticks (up to now) with the goal held and the hand clear


class SuccessJudge:
    """Call `update` once per control tick, after the action ran; one judge per episode.

    `goal_first_met_step` counts ticks like `EpisodeRecord.steps` (the tick on which the goal first held with the
    hand open, 1-based); `goal_lost` is true once that happened while `succeeded` is still false.
    """

    def __init__(self, settle_ticks: int = CONTROL_HZ, rest_speed: float = REST_SPEED,
                 clearance: float = CLEARANCE) -> None:
        self.settle_ticks = int(settle_ticks)
        self.rest_speed = float(rest_speed)
        self.clearance = float(clearance)
        self.ticks = 0
        self.held_ticks = 0
        self.goal_first_met_step: int | None = None
        self.succeeded = False

    @property
    def goal_lost(self) -> bool:
        return self.goal_first_met_step is not None and not self.succeeded

    def update(self, world: SimWorld, inst: TaskInstance, task: Task) -> Verdict:
        self.ticks += 1
        goal_held = bool(task.success(world, inst)) and world.robot.gripper_opening() > OPEN_MIN
        if goal_held and self.goal_first_met_step is None:
            self.goal_first_met_step = self.ticks
        clear = hand_clear(world, self.clearance)
        self.held_ticks = self.held_ticks + 1 if goal_held and clear else 0
        at_rest = parts_at_rest(world, inst, self.rest_speed)
        success = self.held_ticks >= self.settle_ticks and at_rest
        self.succeeded = self.succeeded or success
        return Verdict(success, goal_held, clear, at_rest, self.held_ticks)


def movable_objects(world: SimWorld) -> list[SceneObject]:
    return [o for o in world.objects.values() if o.movable]


def hand_clear(world: SimWorld, clearance: float = CLEARANCE) -> bool:
    """No link of the robot (arm, hand or fingers) is within `clearance` of any movable object."""
    robot, cid = world.robot.body, world.client
    return not any(p.getClosestPoints(bodyA=robot, bodyB=o.body, distance=clearance, physicsClientId=cid)
                   for o in movable_objects(world))


def parts_at_rest(world: SimWorld, inst: TaskInstance, rest_speed: float = REST_SPEED) -> bool:
    """Every movable object named in the plan moves slower than `rest_speed` (base linear velocity)."""
    names = {a for step in inst.plan.steps for a in step.args}
    for name in names:
        obj = world.objects.get(name)
        if obj is None or not obj.movable:
            continue
        lin, _ = p.getBaseVelocity(obj.body, physicsClientId=world.client)
        if float(np.linalg.norm(lin)) >= rest_speed:
            return False
    return True


__all__ = ["SuccessJudge", "Verdict", "hand_clear", "parts_at_rest", "OPEN_MIN", "REST_SPEED", "CLEARANCE"]
