"""Synthetic inputs for the assist tests: observations, plan steps, located objects (no simulator, no model)."""

from __future__ import annotations

import numpy as np

from keystone_vla.policies.assists.base import AssistContext
from keystone_vla.types import ActionChunk, Observation, PlanStep

PICK = PlanStep.parse("pick(red_block)", "pick up the red block")
PUT = PlanStep.parse("place_in(red_block, blue_bowl)", "put it in the bowl")
HELD, OPEN, CLOSED_EMPTY = 0.5, 1.0, 0.0  # gripper openings: part in the hand, open hand, closed on nothing


def observation(opening: float = HELD, ee: tuple[float, float, float] = (0.5, 0.2, 0.1),
                quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)) -> Observation:
    state = np.zeros(8, np.float32)
    state[-1] = opening
    return Observation(images={}, state=state, ee_pose=np.array([*ee, *quat], np.float32))


def located(part_xy=(0.5, 0.2), part_z=0.05, part_yaw=0.0, part_size=(0.04, 0.04, 0.04),
            target_xy=(0.5, 0.2), target_z=0.02, target_yaw=0.0, target_size=(0.12, 0.12, 0.04)) -> np.ndarray:
    """float32 [14]: part x y z yaw size_xyz, target x y z yaw size_xyz."""
    return np.array([*part_xy, part_z, part_yaw, *part_size, *target_xy, target_z, target_yaw, *target_size],
                    np.float32)


def context(step: PlanStep = PUT, obs: Observation | None = None, objects: np.ndarray | None = None,
            visit: int = 0, chunk: ActionChunk | None = None, live: bool = True) -> AssistContext:
    objs = located() if objects is None else objects
    return AssistContext(obs if obs is not None else observation(), step, visit, chunk,
                         locate=(lambda s: objs) if live else None)


def action(dx: float = 0.0, dy: float = 0.0, yaw: float = 0.0, gripper: float = 1.0) -> np.ndarray:
    a = np.zeros(7, np.float32)
    a[0], a[1], a[5], a[6] = dx, dy, yaw, gripper
    return a


def chunk(open_at: int | None) -> ActionChunk:
    """An 8-action chunk, no motion, the hand closed until `open_at` (None: never opens)."""
    actions = np.zeros((8, 7), np.float32)
    actions[:, -1] = 1.0
    if open_at is not None:
        actions[open_at:, -1] = 0.0
    return ActionChunk(actions, step_done=0.0)
