"""Shared test settings: one torch/BLAS thread per process (2-core machine), repository paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

#: the ROS test modules, each on its own DDS domain (see `ros_domain`)
ROS_DOMAIN_SLOTS = ("cli", "integration", "nodes_misc", "perception_node", "robot_graph", "robot_graph_launch",
                    "safety_action", "safety_node")


def _speech_tools() -> bool:
    from keystone_vla.errors import ConfigError
    from keystone_vla.perception.speech_synth import require_tools

    try:
        require_tools()
    except ConfigError:
        return False
    return True


#: espeak-ng and sox (system packages scripts/setup.sh installs) are there to synthesise test speech
SPEECH_TOOLS = _speech_tools()
needs_speech_tools = pytest.mark.skipif(not SPEECH_TOOLS,
                                        reason="espeak-ng and sox are not installed (scripts/setup.sh)")


def ros_domain(module: str) -> int:
    """The DDS domain id (0..232) for one ROS test module in this pytest process: modules never share one (a
    node left over from one module cannot answer another's), and two pytest runs on one machine share one only
    when their process ids agree modulo 25."""
    slot = ROS_DOMAIN_SLOTS.index(module)
    return (os.getpid() % 25) * len(ROS_DOMAIN_SLOTS) + slot


def dds_domain_fixture(module: str):
    """A module-scoped autouse fixture that puts this module's in-process DDS nodes on loopback and on its own
    domain while its tests run, and restores the environment after."""

    @pytest.fixture(autouse=True, scope="module")
    def _dds_domain() -> Iterator[int]:
        from keystone_vla.ros_nodes.transport import loopback_env

        with pytest.MonkeyPatch.context() as mp:
            domain = ros_domain(module)
            for key, value in loopback_env(domain_id=domain).items():
                mp.setenv(key, value)
            yield domain

    return _dds_domain


import broken_policy  # noqa: E402,F401  (registers --policy broken for the harness tests)
