"""The safety node as a FollowJointTrajectory client over real Cyclone DDS: a scripted controller (a DDS action
server in this process) accepts, rejects, aborts, preempts or falls silent, and the safety node must hold, report
and latch. Nodes are spun alternately from the test thread; times are measured on this side of the wire."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import dds_domain_fixture

from keystone_vla.robots import PANDA
from keystone_vla.ros_nodes import interfaces as itf
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import make_trajectory
from keystone_vla.ros_nodes.dds_backend import DdsNode
from keystone_vla.ros_nodes.runner import build_node
from keystone_vla.ros_nodes.transport import LATCHED_QOS, SENSOR_QOS

_dds_domain = dds_domain_fixture("safety_action")
HOME = np.array(PANDA.home)
NAMES = list(PANDA.joint_names)
FINGERS = list(PANDA.gripper.joint_names)
WATCHDOG = 0.2


class Cell:
    """The safety node, a scripted trajectory controller and the rest of the cell (joint states, proposals)."""

    def __init__(self, **params):
        self.safety = build_node("safety", {"check_rate": 100.0, "controller_interface": "action",
                                            "watchdog_period": WATCHDOG, "path_tolerance": 0.1, **params}, "dds")
        self.controller = DdsNode("controller")
        self.accept = True
        self.goals: list[tuple[float, bytes, itf.FollowJointTrajectory_Goal]] = []
        self.cancels: list[tuple[float, bytes]] = []
        self.server = self.controller.create_action_server(
            itf.FOLLOW_JOINT_TRAJECTORY, topics.CONTROLLER_ACTION, self.on_goal, self.on_cancel)
        self.controller_alive = True
        self.node = DdsNode("cell")
        self.js = self.node.create_publisher(m.JointState, topics.JOINT_STATES, SENSOR_QOS)
        self.prop = self.node.create_publisher(m.JointTrajectory, topics.PROPOSED_TRAJECTORY)
        self.topic_cmds: list[tuple[float, m.JointTrajectory]] = []
        self.gripper: list[tuple[float, m.JointTrajectory]] = []
        self.events: list[dict] = []
        self.state = ""
        self.node.create_subscription(m.JointTrajectory, topics.CONTROLLER_TRAJECTORY,
                                      lambda msg: self.topic_cmds.append((time.monotonic(), msg)))
        self.node.create_subscription(m.JointTrajectory, topics.GRIPPER_TRAJECTORY,
                                      lambda msg: self.gripper.append((time.monotonic(), msg)))
        self.node.create_subscription(m.String, topics.SAFETY_EVENTS,
                                      lambda s: self.events.append({**json.loads(s.data), "t": time.monotonic()}))
        self.node.create_subscription(m.String, topics.SAFETY_STATE, lambda s: setattr(self, "state", s.data),
                                      LATCHED_QOS)
        self.reset = self.node.create_client(itf.TRIGGER, topics.SAFETY_RESET)
        self.pump(0.3)
        assert self.safety.action.server_is_ready() and self.reset.service_is_ready()

    # the scripted controller
    def on_goal(self, goal_id, goal):
        self.goals.append((time.monotonic(), goal_id, goal))
        if self.accept:
            for _, old, _ in self.goals[:-1]:  # joint_trajectory_controller: a new goal preempts the active one
                self.server.finish(old, itf.STATUS_CANCELED, itf.FollowJointTrajectory_Result(0, "preempted"))
        return self.accept

    def on_cancel(self, goal_id):
        self.cancels.append((time.monotonic(), goal_id))
        self.server.finish(goal_id, itf.STATUS_CANCELED, itf.FollowJointTrajectory_Result(0, "canceled"))
        return True

    def feedback(self):
        for _, gid, _goal in self.goals[-1:]:
            if self.server.is_active(gid):
                self.server.publish_feedback(gid, itf.FollowJointTrajectory_Feedback(joint_names=NAMES))

    def pump(self, seconds: float):
        end = time.monotonic() + seconds
        next_fb = 0.0
        while True:
            self.js.publish(m.JointState(m.Header.now(), NAMES + FINGERS, list(HOME) + [0.04, 0.04], [0.0] * 9, []))
            self.safety.node.spin_once(0.003)
            if self.controller_alive:
                self.controller.spin_once(0.003)
                if time.monotonic() >= next_fb:  # 20 Hz feedback, as joint_trajectory_controller's monitor rate
                    self.feedback()
                    next_fb = time.monotonic() + 0.05
            self.node.spin_once(0.003)
            if time.monotonic() >= end:
                break

    def propose(self, q, t=0.3, fingers=0.02):
        self.prop.publish(make_trajectory(NAMES + FINGERS, np.atleast_2d(np.append(q, [fingers, fingers])),
                                          np.atleast_1d(t)))
        self.pump(0.08)

    def codes(self):
        return [e["event"] for e in self.events]

    def close(self):
        self.safety.node.destroy()
        self.safety.shield.close()
        self.controller.destroy()
        self.node.destroy()


@pytest.fixture()
def cell():
    c = Cell()
    yield c
    c.close()


def test_goals_carry_the_checked_trajectory_and_tolerances_and_self_preemption_is_no_fault(cell):
    for k in range(1, 4):
        cell.propose(HOME + 0.01 * k)
    assert len(cell.goals) == 3 and not cell.topic_cmds  # the action, not the topic
    goal = cell.goals[-1][2]
    np.testing.assert_allclose(goal.trajectory.points[0].positions, HOME + 0.03)
    assert [t.name for t in goal.path_tolerance] == NAMES and goal.path_tolerance[0].position == pytest.approx(0.1)
    assert len(cell.gripper) == 3  # each goal's finger command, once it was accepted
    assert cell.state == "ok" and not any(c.startswith("controller") for c in cell.codes())


def test_an_aborted_goal_holds_within_two_watchdog_periods_and_latches_until_reset(cell):
    cell.propose(HOME + 0.02, t=1.0)
    n = len(cell.goals)
    gid = cell.goals[-1][1]
    t_abort = time.monotonic()
    cell.server.finish(gid, itf.STATUS_ABORTED, itf.FollowJointTrajectory_Result(
        itf.PATH_TOLERANCE_VIOLATED, "panda_joint2 is 0.2 rad from its setpoint"))
    cell.pump(2 * WATCHDOG)
    hold = next(e for e in cell.events if e["event"] == "controller_aborted")
    assert hold["hold"] is True and "PATH_TOLERANCE_VIOLATED" in hold["detail"] and "panda_joint2" in hold["detail"]
    t_hold, _, hold_goal = cell.goals[n]  # the hold: one point at the measured position
    np.testing.assert_allclose(hold_goal.trajectory.points[0].positions, HOME)
    assert t_hold - t_abort <= 2 * WATCHDOG
    print(f"\nabort -> hold goal at the controller: {1e3 * (t_hold - t_abort):.1f} ms "
          f"({(t_hold - t_abort) / WATCHDOG:.2f} watchdog periods)")
    assert cell.state.startswith("fault: the controller aborted the trajectory: PATH_TOLERANCE_VIOLATED")
    grips = len(cell.gripper)
    cell.propose(HOME + 0.03)
    assert cell.codes()[-1] == "controller_fault_latched" and len(cell.gripper) == grips
    assert all(np.allclose(g.trajectory.points[0].positions, HOME) for _, _, g in cell.goals[n:])  # holds only
    answers = []
    cell.reset.call(itf.Trigger_Request(), answers.append)
    cell.pump(0.1)
    assert answers[0].success and "controller fault" in answers[0].message and cell.state == "ok"
    cell.propose(HOME + 0.03)
    np.testing.assert_allclose(cell.goals[-1][2].trajectory.points[0].positions, HOME + 0.03)


def test_a_silent_controller_is_held_on_the_topic_within_two_watchdog_periods(cell):
    cell.propose(HOME + 0.02, t=1.0)
    cell.controller_alive = False  # killed: no feedback, no answers
    t_gone = time.monotonic()
    cell.pump(3 * WATCHDOG)
    event = next(e for e in cell.events if e["event"] == "controller_silent")
    t_hold, hold = next((t, c) for t, c in cell.topic_cmds if t > t_gone)
    np.testing.assert_allclose(hold.points[0].positions, HOME)
    assert t_hold - t_gone <= 2 * WATCHDOG and event["hold"] is True
    print(f"\ncontroller gone -> hold on the topic: {1e3 * (t_hold - t_gone):.1f} ms "
          f"({(t_hold - t_gone) / WATCHDOG:.2f} watchdog periods)")
    assert cell.state.startswith("fault: no feedback from the controller")


def test_a_rejected_goal_moves_nothing(cell):
    cell.propose(HOME + 0.01, t=1.0)
    running = cell.goals[-1][1]
    grips = len(cell.gripper)
    cell.accept = False
    cell.propose(HOME + 0.02, fingers=0.0)
    cell.pump(0.1)
    assert "controller_rejected" in cell.codes() and cell.state.startswith("fault: the controller rejected")
    assert len(cell.gripper) == grips  # the rejected goal's finger command never went out
    # the goal that was still running is stopped: cancelled, or replaced by a hold (here rejected too: on the topic)
    assert any(gid == running for _, gid in cell.cancels)
    assert cell.topic_cmds and np.allclose(cell.topic_cmds[-1][1].points[0].positions, HOME)


def test_a_goal_preempted_by_another_client_is_a_fault(cell):
    cell.propose(HOME + 0.01, t=1.0)
    cell.server.finish(cell.goals[-1][1], itf.STATUS_CANCELED, itf.FollowJointTrajectory_Result(0, "new goal"))
    cell.pump(0.1)
    assert "controller_preempted" in cell.codes() and cell.state.startswith("fault: the trajectory was cancelled")


@pytest.mark.slow
def test_a_blocked_arm_makes_sim_bridge_abort_and_the_safety_node_hold(tmp_path):
    """The whole action path with the simulated controller: a policy streams a 2 s move, sim_bridge serves
    FollowJointTrajectory the way joint_trajectory_controller does, the arm is clamped to the world mid-move (as if
    it hit a fixture), its joints fall behind the setpoint by more than the path tolerance, the bridge aborts with
    PATH_TOLERANCE_VIOLATED and holds, and the safety node holds within two watchdog periods, latches the fault
    and forwards nothing more (the policy still streaming) until reset."""
    import pybullet as p

    bridge = build_node("sim_bridge", {"task": "pick_place", "seed": 0, "publish_truth": False, "camera_rate": 0.0},
                        "dds")
    safety = build_node("safety", {"check_rate": 100.0, "controller_interface": "action",
                                   "watchdog_period": WATCHDOG, "path_tolerance": 0.05}, "dds")
    node = DdsNode("blocked_cell")
    prop = node.create_publisher(m.JointTrajectory, topics.PROPOSED_TRAJECTORY)
    events: list[dict] = []
    node.create_subscription(m.String, topics.SAFETY_EVENTS,
                             lambda s: events.append({**json.loads(s.data), "t": time.monotonic()}))
    state = {"text": ""}
    node.create_subscription(m.String, topics.SAFETY_STATE, lambda s: state.update(text=s.data), LATCHED_QOS)
    bridge_diag: list = []
    node.create_subscription(m.DiagnosticArray, topics.DIAGNOSTICS, lambda a: bridge_diag.extend(
        {kv.key: kv.value for kv in s.values} for s in a.status if s.name == "keystone/sim_bridge"))
    robot, client = bridge.world.robot, bridge.world.client
    q0 = robot.joint_positions().astype(np.float64)
    target = q0 + np.array([0.3, 0.3, 0.0, -0.3, 0.0, 0.3, 0.0])
    duration, aborted_at, goal_at = 2.0, [], []
    start = time.monotonic()

    def stream() -> None:
        """What the policy node does at 10 Hz: the rest of the move, re-timed from now."""
        left = max(duration - (time.monotonic() - start), 0.1)
        times = np.linspace(left / 4, left, 4)
        path = np.array([target - (target - q0) * (left - t) / duration for t in times])
        prop.publish(make_trajectory(NAMES + FINGERS, np.hstack([path, np.full((4, 2), 0.04)]), times))

    def pump(seconds: float, until=lambda: False) -> None:
        end, next_proposal = time.monotonic() + seconds, 0.0
        while time.monotonic() < end and not until():
            if time.monotonic() >= next_proposal:
                stream()
                next_proposal = time.monotonic() + 0.1
            aborted, accepted = bridge.goals["aborted"], bridge.goals["accepted"]
            bridge.node.spin_once(0.002)
            if bridge.goals["aborted"] > aborted:
                aborted_at.append(time.monotonic())
            if bridge.goals["accepted"] > accepted:
                goal_at.append(time.monotonic())
            safety.node.spin_once(0.002)
            node.spin_once(0.002)

    try:
        pump(0.5)
        assert safety.action.server_is_ready() and goal_at, f"no goal reached the bridge: {events}"
        assert np.abs(robot.joint_positions() - q0).max() > 0.02, "the arm started moving"
        hand = p.getLinkState(robot.body, robot.ee_link, physicsClientId=client)
        clamp = p.createConstraint(robot.body, robot.ee_link, -1, -1, p.JOINT_FIXED, [0, 0, 0], [0, 0, 0],
                                   hand[4], childFrameOrientation=hand[5], physicsClientId=client)
        p.changeConstraint(clamp, maxForce=1e5, physicsClientId=client)
        pump(1.5, until=lambda: any(e["event"] == "controller_aborted" for e in events) and goal_at[-1] > aborted_at[0])
        assert aborted_at, f"the bridge never aborted: {bridge.goals}, {events}"
        hold = next(e for e in events if e["event"] == "controller_aborted")
        assert "PATH_TOLERANCE_VIOLATED" in hold["detail"] and hold["hold"] is True
        t_hold = next(t for t in goal_at if t > aborted_at[0])  # the safety node's hold goal at the bridge
        print(f"\nbridge abort -> hold goal at the bridge: {1e3 * (t_hold - aborted_at[0]):.1f} ms "
              f"({(t_hold - aborted_at[0]) / WATCHDOG:.2f} watchdog periods)")
        assert t_hold - aborted_at[0] <= 2 * WATCHDOG
        pump(0.2)
        assert state["text"].startswith("fault: the controller aborted the trajectory: PATH_TOLERANCE_VIOLATED")
        # unclamped, with the policy still streaming, the arm stays where it was held: the fault is latched
        held = robot.joint_positions().astype(np.float64)
        p.removeConstraint(clamp, physicsClientId=client)
        pump(1.0)
        assert np.abs(robot.joint_positions() - held).max() < 0.02
        # what the controller is commanded to reach is the hold, never the streamed move's end
        assert np.abs(bridge.interp.sample(time.monotonic() + 10.0) - held).max() < 0.02
        assert events[-1]["event"] == "controller_fault_latched"
        # the bridge's own diagnostics name the abort, as a driver's would
        pump(1.1, until=lambda: bridge_diag and "path tolerance" in bridge_diag[-1]["last_error"])
        assert "aborted a goal: path tolerance violated" in bridge_diag[-1]["last_error"]
        assert int(bridge_diag[-1]["goals_aborted"]) >= 1 and float(bridge_diag[-1]["joint_states_hz"]) > 10
    finally:
        safety.node.destroy()
        safety.shield.close()
        bridge.node.destroy()
        bridge.close()
        node.destroy()
