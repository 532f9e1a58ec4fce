"""`keystone ros` CLI: node runner exit codes and the loud --unsafe-no-shield warning."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ros_domain

from keystone_vla.ros_nodes.transport import loopback_env

CLI = "import sys; from keystone_vla.cli import main; sys.exit(main(sys.argv[1:]))"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, **loopback_env(domain_id=ros_domain("cli")), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_unknown_node_is_a_usage_error():
    proc = run("ros", "node", "planner")
    assert proc.returncode == 2 and "unknown node 'planner'" in proc.stderr


def test_safety_node_runs_and_stops():
    proc = run("ros", "node", "safety", "--backend", "dds", "--duration", "0.3", "--param", "watchdog_period=0.1")
    assert proc.returncode == 0, proc.stderr
    assert "node safety up (DdsNode)" in proc.stderr


def test_unsafe_no_shield_warns_loudly():
    proc = run("ros", "node", "safety", "--backend", "dds", "--duration", "0.2", "--unsafe-no-shield")
    assert proc.returncode == 0, proc.stderr
    assert "SAFETY SHIELD IS OFF" in proc.stderr and "UNSAFE" in proc.stderr
    proc = run("ros", "node", "policy", "--unsafe-no-shield")
    assert proc.returncode == 2 and "only applies to the safety node" in proc.stderr
