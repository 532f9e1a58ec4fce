"""The simulated ROS graph as real processes over Cyclone DDS on loopback: sim_bridge + policy (oracle) + safety.

One graph, three checks, in order: an e-stop mid-motion stops the arm and nothing moves until reset; after the
reset the task succeeds in sim; then kill -9 of the policy mid-motion makes the safety node hold the arm within
two watchdog periods, measured from the joint states.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes.graph import SimGraph

WATCHDOG = 0.2


def first_still_time(graph: SimGraph, after: float, speed: float = 0.02, hold_for: float = 0.5) -> float:
    """Earliest joint-state time after `after` from which every joint speed stays below `speed` for `hold_for` s."""
    states = [(t, v) for t, _, v in graph.joint_states if t >= after]
    for i, (t, _) in enumerate(states):
        window = [v for tt, v in states[i:] if tt <= t + hold_for]
        if states[-1][0] >= t + hold_for and all(np.abs(v).max() < speed for v in window):
            return t
    raise AssertionError("the arm never came to rest")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_graph_estop_success_and_policy_kill(tmp_path):
    graph = SimGraph(overrides={"sim_bridge": {"camera_rate": 5.0, "task": "pick_place", "seed": 3},
                                "safety": {"watchdog_period": WATCHDOG}},
                     domain_id=150 + os.getpid() % 50, log_dir=tmp_path)
    with graph:
        graph.wait_ready(timeout=120)
        instruction = graph.scene["instruction"]
        graph.instruct(instruction)

        # 1. e-stop mid-motion: the arm stops, and stays still until reset
        graph.wait_for(lambda: graph.speed() > 0.1, 60, "the arm to move")
        t_estop = __import__("time").monotonic()
        graph.estop_pub.publish(m.Bool(True))
        graph.wait_for(lambda: any(e["event"] == "estop" for e in graph.events), 5, "the e-stop event")
        graph.spin(1.0)
        assert first_still_time(graph, t_estop, hold_for=0.4) - t_estop <= 2 * WATCHDOG
        q_ref = graph.joint_states[-1][1]
        n = len(graph.joint_states)
        graph.spin(1.5)
        drift = max(np.abs(q - q_ref).max() for _, q, _ in graph.joint_states[n:])
        assert drift < 2e-3, f"arm moved {drift:.4f} rad while e-stopped"
        assert graph.status["state"] == "executing"  # the policy is paused, not finished

        # 2. reset: motion resumes and the task succeeds
        graph.reset_pub.publish(m.Bool(True))
        graph.wait_for(lambda: graph.status.get("state") in ("succeeded", "failed"), 120, "the task outcome")
        assert graph.status["state"] == "succeeded" and graph.scene["success"] is True

        # 3. kill -9 the policy mid-motion: safety holds within 2 watchdog periods
        graph.spin(1.0)
        graph.instruct(instruction)  # the oracle picks the object up again
        graph.wait_for(lambda: graph.status.get("state") == "executing", 10, "the policy to start again")
        graph.wait_for(lambda: graph.speed() > 0.1, 60, "the arm to move again")
        t_kill = graph.kill("policy")
        graph.wait_for(lambda: any(e["event"] == "watchdog_no_proposal" and e["received"] > t_kill
                                   for e in graph.events), 2, "the watchdog hold")
        hold = next(e for e in graph.events if e["event"] == "watchdog_no_proposal" and e["received"] > t_kill)
        assert hold["hold"] is True and hold["received"] - t_kill <= 2 * WATCHDOG
        graph.spin(1.0)
        assert first_still_time(graph, t_kill) - t_kill <= 2 * WATCHDOG
