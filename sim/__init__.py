"""PyBullet simulation: the world, arms, cameras, objects, tasks with scripted oracles, and gymnasium envs.

Importing this package registers the gymnasium ids (`keystone/StackBlocks-v0`, ...). It never imports `vla`,
`policies` or `ros_nodes`.
"""

from __future__ import annotations

from .env import ENV_IDS, KeystoneEnv, register_envs
from .rollout import EpisodeRecord, run_episode, write_video
from .tasks import TASKS, get_task, instruction_vocabulary
from .world import SimWorld

register_envs()

__all__ = ["SimWorld", "TASKS", "get_task", "instruction_vocabulary", "run_episode", "EpisodeRecord", "write_video",
           "KeystoneEnv", "ENV_IDS", "register_envs"]
