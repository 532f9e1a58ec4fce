"""Gymnasium environments for the five tasks (`keystone/StackBlocks-v0`, ...).

Observation (Dict): one uint8 [H, W, 3] image per camera, `state` float32 [dof + 1], `ee_pose` float32 [7].
Action (Box float32 [7]): end-effector delta (m), rotation delta (axis-angle rad), gripper 0..1, at 10 Hz.
`info` carries the instruction, the plan (JSON), the task, seed and split. The safety shield is on by default
(`shield="default"`); `shield=None` turns it off with a loud warning.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from keystone_vla.types import EpisodeSpec

from .rollout import make_world
from .tasks import get_task
from .world import MAX_ROT_RAD, MAX_STEP_M

ENV_IDS: dict[str, str] = {
    "keystone/PickPlace-v0": "pick_place",
    "keystone/StackBlocks-v0": "stack",
    "keystone/Insert-v0": "insert",
    "keystone/KitAssembly-v0": "kit_assembly",
    "keystone/BuildTower-v0": "build_tower",
}


class KeystoneEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str = "stack", arm: str = "panda", split: str = "seen", image_size: int = 128,
                 cameras: tuple[str, ...] = ("front",), shield: Any = "default", render_mode: str | None = None,
                 max_steps: int | None = None) -> None:
        self.task = get_task(task)
        self.task_name = task
        self.arm = arm
        self.split = split
        self.cameras = tuple(cameras)
        self.render_mode = render_mode
        self.world = make_world(EpisodeSpec(task, 0, split, arm), self.cameras, image_size, shield)
        self.max_steps = max_steps or self.task.max_steps
        n = self.world.spec.state_dim
        obs_spaces: dict[str, spaces.Space] = {
            c: spaces.Box(0, 255, (image_size, image_size, 3), np.uint8) for c in self.cameras
        }
        obs_spaces["state"] = spaces.Box(-2 * np.pi, 2 * np.pi, (n,), np.float32)
        obs_spaces["ee_pose"] = spaces.Box(-2.0, 2.0, (7,), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        hi = np.array([MAX_STEP_M] * 3 + [MAX_ROT_RAD] * 3 + [1.0], dtype=np.float32)
        lo = -hi.copy()
        lo[6] = 0.0
        self.action_space = spaces.Box(lo, hi, dtype=np.float32)
        self.inst = None
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        o = self.world.observation(cameras=self.cameras)
        out: dict[str, np.ndarray] = dict(o.images)
        out["state"] = np.clip(o.state, -2 * np.pi, 2 * np.pi).astype(np.float32)
        out["ee_pose"] = np.clip(o.ee_pose, -2.0, 2.0).astype(np.float32)
        return out

    def _info(self) -> dict[str, Any]:
        return {"instruction": self.inst.instruction, "plan": self.inst.plan.to_json(), "task": self.task_name,
                "seed": self.inst.seed, "split": self.split, "interventions": self.world.interventions}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31 - 1)) if seed is None else int(seed)
        instruction = (options or {}).get("instruction")
        self.inst = self.task.reset(self.world, episode_seed, self.split, instruction)
        self._t = 0
        return self._obs(), self._info()

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float32), self.action_space.low, self.action_space.high)
        events = self.world.apply_action(action)
        self._t += 1
        success = self.task.success(self.world, self.inst) and self.world.robot.gripper_opening() > 0.5
        truncated = self._t >= self.max_steps and not success
        info = self._info()
        info["success"] = bool(success)
        info["safety_events"] = events
        return self._obs(), float(success), bool(success), bool(truncated), info

    def render(self):
        return self.world.render("front").rgb

    def close(self):
        self.world.close()


def register_envs() -> None:
    for env_id, task in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="keystone_vla.sim.env:KeystoneEnv", kwargs={"task": task})
