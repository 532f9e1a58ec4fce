"""The safety node over real Cyclone DDS on loopback, driven in-process by a harness node.

Both nodes are spun alternately from the test thread (no threads, no sleeps-and-hope): what the controller
topic receives is exactly what the safety node decided.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import dds_domain_fixture

from keystone_vla.robots import PANDA
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import make_trajectory
from keystone_vla.ros_nodes.dds_backend import DdsNode
from keystone_vla.ros_nodes.runner import build_node
from keystone_vla.ros_nodes.transport import SENSOR_QOS

_dds_domain = dds_domain_fixture("safety_node")
HOME = np.array(PANDA.home)
NAMES = list(PANDA.joint_names)


class Harness:
    def __init__(self, **params):
        self.safety = build_node("safety", {"check_rate": 100.0, **params}, backend="dds")
        self.node = DdsNode("harness")
        self.js = self.node.create_publisher(m.JointState, topics.JOINT_STATES, SENSOR_QOS)
        self.prop = self.node.create_publisher(m.JointTrajectory, topics.PROPOSED_TRAJECTORY)
        self.estop = self.node.create_publisher(m.Bool, topics.ESTOP)
        self.reset = self.node.create_publisher(m.Bool, topics.ESTOP_RESET)
        self.cmds: list[tuple[float, m.JointTrajectory]] = []
        self.events: list[dict] = []
        self.node.create_subscription(m.JointTrajectory, topics.CONTROLLER_TRAJECTORY,
                                      lambda msg: self.cmds.append((time.monotonic(), msg)))
        self.node.create_subscription(m.String, topics.SAFETY_EVENTS, lambda s: self.events.append(json.loads(s.data)))
        self.q = HOME.copy()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (self.js.matched_subscriptions() and self.prop.matched_subscriptions()
                                                   and self.estop.matched_subscriptions()):
            self.pump(0.02)
        self.pump(0.1)

    def pump(self, seconds: float, publish_state: bool = True):
        end = time.monotonic() + seconds
        while True:
            if publish_state:
                self.js.publish(m.JointState(m.Header.now(), NAMES, list(self.q), [0.0] * 7, []))
            self.safety.node.spin_once(0.005)
            self.node.spin_once(0.005)
            if time.monotonic() >= end:
                break

    def propose(self, positions, times, names=NAMES):
        self.t_proposed = time.monotonic()
        self.prop.publish(make_trajectory(names, np.atleast_2d(positions), np.atleast_1d(times)))
        self.pump(0.05)

    def close(self):
        self.safety.node.destroy()
        self.safety.shield.close()
        self.node.destroy()


@pytest.fixture()
def h():
    harness = Harness()
    yield harness
    harness.close()


def codes(h):
    return [e["event"] for e in h.events]


def test_forwards_a_safe_proposal_unchanged(h):
    target = HOME + 0.01
    h.propose(target, 0.2)
    assert len(h.cmds) == 1
    out = h.cmds[0][1]
    assert list(out.joint_names) == NAMES
    np.testing.assert_allclose(out.points[0].positions, target)
    assert out.points[0].time_from_start.to_seconds() == pytest.approx(0.2)
    assert h.safety.counts["forwarded"] == 1 and not h.events


def test_reorders_joint_names_to_the_arm_order(h):
    order = NAMES[::-1]
    h.propose((HOME + 0.01)[::-1], 0.2, names=order)
    assert list(h.cmds[0][1].joint_names) == NAMES
    np.testing.assert_allclose(h.cmds[0][1].points[0].positions, HOME + 0.01)


@pytest.mark.parametrize("positions,names,code", [
    (HOME + np.nan, NAMES, "rejected_nonfinite"),
    (HOME, NAMES[:6] + ["elbow"], "rejected_joint_names"),
    (HOME + 1.0, NAMES, "rejected_step"),
])
def test_bad_proposals_are_rejected_with_a_hold(h, positions, names, code):
    h.propose(positions, 0.5, names=names)
    assert codes(h)[0] == code
    hold = h.cmds[-1][1]
    np.testing.assert_allclose(hold.points[0].positions, HOME)  # hold at the measured position
    assert h.safety.counts["forwarded"] == 0


def test_trajectory_through_the_table_is_rejected(h):
    # lean the shoulder forward in small steps until the hand would go below the table
    target = HOME.copy()
    target[1], target[3] = 1.5, -0.5
    steps = np.linspace(HOME, target, 40)[1:]
    h.propose(steps, np.arange(1, 40) * 0.5)
    assert codes(h)[0] in ("rejected_collision", "rejected_workspace")
    assert h.safety.counts["forwarded"] == 0


def test_too_fast_proposal_is_time_stretched(h):
    h.propose(HOME + 0.2, 0.01)
    assert "velocity_limited" in codes(h)
    t = h.cmds[0][1].points[0].time_from_start.to_seconds()
    assert t >= 0.2 / min(PANDA.velocity_limits)


def test_watchdog_holds_when_proposals_stop(h):
    h.propose(HOME + 0.01, 0.2)
    # measured from the publish: the safety node can only receive the proposal after it, while the
    # harness receives the forwarded command a little later (loopback latency), so the hold can come
    # a hair under 200 ms after the forward arrives here (CI saw 199.8 ms)
    t_last = h.t_proposed
    h.pump(0.5)
    assert codes(h) == ["watchdog_no_proposal"]
    t_hold = h.cmds[-1][0]
    assert 0.2 <= t_hold - t_last <= 0.4  # within 2 watchdog periods
    assert len(h.cmds) == 2  # one hold, then quiet until the next proposal


def test_watchdog_holds_on_stale_joint_states():
    h = Harness(joint_state_timeout=0.08)
    try:
        h.propose(HOME + 0.01, 0.2)
        h.pump(0.15, publish_state=False)
        assert codes(h) == ["watchdog_stale_joint_states"]
        assert h.cmds[-1][1].points == []  # empty trajectory: the controller holds where it is
    finally:
        h.close()


def test_estop_latches_until_reset(h):
    h.propose(HOME + 0.01, 0.2)
    h.estop.publish(m.Bool(True))
    h.pump(0.05)
    assert codes(h)[-1] == "estop"
    n = len(h.cmds)
    h.propose(HOME + 0.02, 0.2)
    assert codes(h)[-1] == "estop_latched"
    assert all(len(c.points) <= 1 and np.allclose(c.points[0].positions, HOME) for _, c in h.cmds[n:])
    h.estop.publish(m.Bool(False))  # false does not release
    h.propose(HOME + 0.02, 0.2)
    assert codes(h)[-1] == "estop_latched"
    h.reset.publish(m.Bool(True))
    h.pump(0.05)
    h.propose(HOME + 0.02, 0.2)
    np.testing.assert_allclose(h.cmds[-1][1].points[0].positions, HOME + 0.02)
    assert h.safety.counts["forwarded"] == 2


def test_unknown_parameter_is_an_error():
    from keystone_vla.errors import ConfigError

    with pytest.raises(ConfigError, match="watchdog_perod"):
        build_node("safety", {"watchdog_perod": 0.1}, backend="dds")


def test_unsafe_no_shield_forwards_unchecked_and_says_so():
    h = Harness(unsafe_no_shield=True)
    try:
        h.propose(HOME + 0.6, 0.01)  # would be rejected (step) and stretched (velocity) with the shield on
        assert codes(h) == ["unsafe_no_shield"]  # every unchecked forward is reported
        np.testing.assert_allclose(h.cmds[-1][1].points[0].positions, HOME + 0.6)
        assert h.safety.counts["forwarded"] == 1
    finally:
        h.close()


def test_gripper_joints_are_split_off_and_clamped(h):
    got = []
    h.node.create_subscription(m.JointTrajectory, topics.GRIPPER_TRAJECTORY, got.append)
    h.pump(0.2)
    names = NAMES + list(PANDA.gripper.joint_names)
    h.propose(np.append(HOME + 0.01, [0.5, 0.5]), 0.2, names=names)  # 0.5 m opening: clamped to 0.04
    h.pump(0.05)
    assert list(h.cmds[-1][1].joint_names) == NAMES
    assert got and got[-1].points[0].positions == [0.04, 0.04]
