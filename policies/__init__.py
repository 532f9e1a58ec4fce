"""Policies: the Policy protocol, the action-chunk runtime, oracle / baseline / VLA agents, sim evaluation.

Import the submodules you need (`keystone_vla.policies.runtime`, `.oracle`, `.evaluate`, ...); this package
file stays import-light so ROS nodes can use the protocol without loading torch or pybullet.
"""

from keystone_vla.policies.base import Policy, WorldBoundPolicy
from keystone_vla.policies.runtime import ChunkRuntime, RuntimeConfig

__all__ = ["ChunkRuntime", "Policy", "RuntimeConfig", "WorldBoundPolicy"]
