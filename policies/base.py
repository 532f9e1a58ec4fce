"""The Policy protocol: what every Keystone policy looks like to an executor (sim, evaluation, ROS).

A policy is any object with ``reset()`` and ``act(observation) -> float32 [7]`` (the 7-D end-effector action of
`keystone_vla.types`). A policy that needs to know the episode implements one of two hooks, which
`keystone_vla.sim.rollout.run_episode` calls after the scene is built and before ``reset()`` and the first ``act``:

- ``begin(instruction, observation, scene_source, robot)`` (the VLA agent): it gets the instruction, the first
  observation and a scene source (`keystone_vla.perception.scene_source`: perception by default, simulator truth
  only in runs labelled privileged) and nothing of the simulator. This is the only hook a policy that may drive a
  real arm can have.
- ``bind(world, instance)`` (`WorldBoundPolicy`: the scripted oracle, the baseline's task id): it gets the
  simulator's world itself, so it is privileged by construction and sim-only.

A policy that refuses the episode raises `GroundingError` from its hook with a reason a person understands; the
harness reports the episode as refused and does not run it. A policy may expose ``plan_step`` (index of the plan
step it executes) and ``plan`` (the plan it follows).

This module must never import anything heavy (torch, pybullet): it defines contracts only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from keystone_vla.errors import ModelError
from keystone_vla.types import ACTION_DIM, Observation


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

    def bind(self, world: Any, instance: Any) -> None:
        """Attach to `world` (a `keystone_vla.sim.world.SimWorld`) and its `TaskInstance` (task, instruction, plan).

        Raises `GroundingError` to refuse the episode."""


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
