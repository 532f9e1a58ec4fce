"""The Policy protocol: what every Keystone policy looks like to an executor (sim, evaluation, ROS).

A policy is any object with ``reset()`` and ``act(observation) -> float32 [7]`` (the 7-D end-effector action of
`keystone_vla.types`). Policies that need privileged simulator state (the scripted oracle) additionally
implement ``bind(world, plan)``, which the evaluation harness calls after the world is built and before the
first ``act``. A policy never knows which task or arm it runs on beyond what the observation and plan say.

This module must never import anything heavy (torch, pybullet): it defines contracts only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from keystone_vla.errors import ModelError
from keystone_vla.types import ACTION_DIM, Observation, Plan


@runtime_checkable
class Policy(Protocol):
    """Closed-loop policy: one call per control tick."""

    def reset(self) -> None:
        """Forget everything about the previous episode (queues, plan progress, hidden state)."""

    def act(self, observation: Observation) -> np.ndarray:
        """Return the next action, float32 [7]: dxyz (m), axis-angle (rad), gripper (0 open .. 1 closed)."""


@runtime_checkable
class WorldBoundPolicy(Policy, Protocol):
    """A policy that reads privileged simulator state; the harness binds it to each episode's world."""

    def bind(self, world: Any, plan: Plan) -> None:
        """Attach to `world` (a `keystone_vla.sim.world.SimWorld`) and the episode's ground-truth `plan`."""


def hold_action(gripper_command: float) -> np.ndarray:
    """The 'do nothing' action: zero motion, gripper kept at `gripper_command` (0 open .. 1 closed)."""
    action = np.zeros(ACTION_DIM, dtype=np.float32)
    action[6] = np.float32(gripper_command)
    return action


def gripper_command_from_state(observation: Observation) -> float:
    """Gripper command that keeps the gripper as observed: state[-1] is the opening (1 open), commands are 1 closed."""
    if observation.state.size == 0:
        return 0.0
    return float(np.clip(1.0 - float(observation.state[-1]), 0.0, 1.0))


def check_action(action: Any, source: str = "policy") -> np.ndarray:
    """Validate a policy's output: float32 [7], finite; anything else raises `ModelError` naming `source`."""
    arr = np.asarray(action, dtype=np.float32)
    if arr.shape != (ACTION_DIM,):
        raise ModelError(f"{source} returned an action of shape {list(arr.shape)}; expected [{ACTION_DIM}]")
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"{source} returned a non-finite action {arr.tolist()}; check the model's normalization")
    return arr
