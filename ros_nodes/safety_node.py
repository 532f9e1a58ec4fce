"""The safety node: the only client of the arm's trajectory controller (its action and its topic).

- Forwards `/keystone/proposed_trajectory` to the controller (`controller` parameter, default
  joint_trajectory_controller) only when it passes `SafetyShield.check_trajectory` (possibly clamped /
  time-stretched); a rejected proposal makes it hold. `controller_interface` picks how: ``action`` sends each
  checked trajectory as a `control_msgs/action/FollowJointTrajectory` goal on `/<controller>/follow_joint_trajectory`
  (with the `path_tolerance` / `goal_tolerance` / `goal_time_tolerance` parameters), ``topic`` publishes it on
  `/<controller>/joint_trajectory`, ``auto`` (default) uses the action whenever its server is up, else the topic.
  Finger joints in a proposal are split off, clamped to the gripper's travel and sent to
  `/gripper_controller/joint_trajectory` with the arm part (never on their own, never while e-stopped, and with the
  action only once the controller has accepted the arm's goal: a rejected goal moves nothing).
- The controller's answers (action): a rejected goal, an aborted goal (tolerance violation, the controller
  stopping) or a goal preempted by anyone but this node, no answer to a goal or no feedback for `watchdog_period`
  s while a goal runs (the controller is gone) -> hold (cancel the goal, hold at the measured position, on the
  topic if the action server is silent) and latch a controller fault: the safety state reads
  ``fault: <why>`` (the policy node ends its run on it) and proposals are refused until a reset.
- Watchdog (checked at `check_rate` Hz) while executing: no fresh proposal for `watchdog_period` s (default
  0.2) -> hold at the measured position; joint states older than `joint_state_timeout` -> empty trajectory
  (the controller stops and holds where it is, since our measurement is stale).
- `/keystone/estop` (Bool true) latches a stop until a reset: the `/keystone/safety/reset` std_srvs/Trigger service
  (answers what it released) or `/keystone/estop_reset` (Bool true); nothing is forwarded while latched. The reset
  also releases a controller fault.
- Every intervention is published as one JSON String on `/keystone/safety_events`; the safety state
  (``ok`` | ``estop`` | ``fault: <why>``, latched) on `/keystone/safety_state`; `/diagnostics` at 1 Hz.

`unsafe_no_shield` forwards proposals unchecked (watchdog and e-stop stay on); it exists for tests only and
logs a loud warning at start and on every forward. This node must never publish anything it did not check.
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

import numpy as np

from keystone_vla.robots import ROBOTS, get_robot
from keystone_vla.ros_nodes import interfaces as itf
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import (
    event_json,
    hold_trajectory,
    joint_vector,
    make_trajectory,
    trajectory_points,
)
from keystone_vla.ros_nodes.diagnostics import Diagnostics
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, LATCHED_QOS, SENSOR_QOS, Node
from keystone_vla.safety import SafetyShield, ShieldLimits

UNSAFE_BANNER = "UNSAFE: the safety shield is OFF (--unsafe-no-shield); proposals reach the controller unchecked"
INTERFACES = ("auto", "action", "topic")


class SafetyNode:
    """Parameters: arm, controller, controller_interface, path_tolerance, goal_tolerance, goal_time_tolerance,
    watchdog_period, joint_state_timeout, check_rate, hold_time, unsafe_no_shield, and every `ShieldLimits` scalar
    as ``shield.<name>``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.spec = get_robot(node.declare_parameter("arm", "panda", "the arm (robot spec)", choices=tuple(ROBOTS)))
        controller = node.declare_parameter("controller", topics.CONTROLLER, "the joint trajectory controller's name")
        self.interface = node.declare_parameter(
            "controller_interface", "auto", "action: FollowJointTrajectory goals; topic: JointTrajectory messages; "
            "auto: the action when its server is up", choices=INTERFACES)
        self.path_tolerance = float(node.declare_parameter(
            "path_tolerance", 0.0, "per-joint path tolerance of each goal (rad); 0: the controller's default",
            range=(0.0, 3.2)))
        self.goal_tolerance = float(node.declare_parameter(
            "goal_tolerance", 0.0, "per-joint goal tolerance of each goal (rad); 0: the controller's default",
            range=(0.0, 3.2)))
        self.goal_time_tolerance = float(node.declare_parameter(
            "goal_time_tolerance", 0.0, "time after a goal's end to reach the goal tolerance (s)", range=(0.0, 60.0)))
        self.watchdog_period = float(node.declare_parameter(
            "watchdog_period", 0.2, "hold when no proposal (or no controller feedback) came for this long (s)",
            range=(0.01, 5.0)))
        self.joint_state_timeout = float(node.declare_parameter(
            "joint_state_timeout", 0.2, "joint states older than this are stale (s)", range=(0.005, 5.0)))
        self.hold_time = float(node.declare_parameter("hold_time", 0.05, "time_from_start of a hold point (s)",
                                                      range=(0.0, 2.0)))
        rate = float(node.declare_parameter("check_rate", 50.0, "watchdog check rate (Hz)", range=(1.0, 1000.0)))
        self.unsafe = bool(node.declare_parameter("unsafe_no_shield", False, "forward proposals unchecked (tests)"))
        limits = {}
        for f in fields(ShieldLimits):
            default = getattr(ShieldLimits(), f.name)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                limits[f.name] = node.declare_parameter(f"shield.{f.name}", default, f"safety shield: {f.name}",
                                                        range=(0.0, 1e4))
        self.shield = SafetyShield.for_robot(self.spec, ShieldLimits.from_mapping(limits))
        self.names = list(self.spec.joint_names)

        self.q: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.last_state_t = -np.inf
        self.last_proposal_t = -np.inf
        self.executing = False
        self.estopped = False
        self.fault: str | None = None  # a latched controller fault (why), released by a reset
        self.counts = {"forwarded": 0, "rejected": 0, "holds": 0, "events": 0, "goals": 0}
        # FollowJointTrajectory bookkeeping: our latest goal, the goals we preempted ourselves, the pending gripper
        # command of each goal not yet accepted, and when the controller last spoke
        self.goal_id: bytes | None = None
        self.goal_sent_t = -np.inf
        self.goal_accepted = False
        self.goal_active = False
        self.superseded: set[bytes] = set()
        self.hold_goals: set[bytes] = set()
        self.pending_gripper: dict[bytes, m.JointTrajectory | None] = {}
        self.last_heard_t = -np.inf  # the controller's last answer, feedback or result
        self.running: set[bytes] = set()  # our accepted goals that have not ended

        traj_topic, action_name = topics.controller_topics(controller)
        self.cmd_pub = node.create_publisher(m.JointTrajectory, traj_topic, DEFAULT_QOS)
        self.action = None if self.interface == "topic" else \
            node.create_action_client(itf.FOLLOW_JOINT_TRAJECTORY, action_name)
        self.gripper_pub = node.create_publisher(m.JointTrajectory, topics.GRIPPER_TRAJECTORY, DEFAULT_QOS)
        self.event_pub = node.create_publisher(m.String, topics.SAFETY_EVENTS, DEFAULT_QOS)
        self.state_pub = node.create_publisher(m.String, topics.SAFETY_STATE, LATCHED_QOS)
        node.create_subscription(m.JointState, topics.JOINT_STATES, self.on_joint_state, SENSOR_QOS)
        node.create_subscription(m.JointTrajectory, topics.PROPOSED_TRAJECTORY, self.on_proposal, DEFAULT_QOS)
        node.create_subscription(m.Bool, topics.ESTOP, self.on_estop, DEFAULT_QOS)
        node.create_subscription(m.Bool, topics.ESTOP_RESET, self.on_estop_reset, DEFAULT_QOS)
        node.create_service(itf.TRIGGER, topics.SAFETY_RESET, self.on_reset_service)
        node.create_timer(1.0 / rate, self.check_watchdog)
        self.diag = Diagnostics(node, "safety", lambda: self.state_text())
        self.diag.values = lambda: {"interface": self.using(), **self.counts}
        if self.unsafe:
            node.log.warning(UNSAFE_BANNER)
            self.emit("unsafe_no_shield", UNSAFE_BANNER)
        self.publish_state()

    # ---- inputs -------------------------------------------------------------------------------------------
    def on_joint_state(self, msg: m.JointState) -> None:
        q = joint_vector(msg, self.names)
        if q is None or not np.isfinite(q).all():
            return  # a state we cannot use counts as no state: the watchdog sees it as stale
        self.q, self.last_state_t = q, time.monotonic()
        v = joint_vector(msg, self.names, "velocity")
        self.v = v if v is not None and np.isfinite(v).all() else None

    def on_proposal(self, msg: m.JointTrajectory) -> None:
        now = time.monotonic()
        self.diag.tick("proposals")
        if self.estopped:
            self.reject("estop_latched", f"e-stop is latched; call {topics.SAFETY_RESET} (std_srvs/Trigger) to release")
            return
        if self.fault:
            self.reject("controller_fault_latched", f"{self.fault}; call {topics.SAFETY_RESET} once the cause is fixed")
            return
        if self.q is None or now - self.last_state_t > self.joint_state_timeout:
            self.reject("no_joint_state", "no fresh joint state; cannot check the proposal")
            return
        names = list(msg.joint_names)
        fingers = [i for i, n in enumerate(names) if n in self.spec.gripper.joint_names]
        arm = [i for i in range(len(names)) if i not in fingers]
        try:
            points = [([p[i] for i in arm], t) if len(p) == len(names) else (p, t) for p, t in trajectory_points(msg)]
            gripper = self.gripper_command(msg, fingers)
            if self.unsafe:
                self.emit("unsafe_no_shield", UNSAFE_BANNER)
                out = make_trajectory([names[i] for i in arm], np.array([q for q, _ in points]).reshape(len(points), -1),
                                      np.array([t for _, t in points]))
            else:
                result = self.shield.check_trajectory([names[i] for i in arm], points, self.q, self.v)
                if not result.accepted:
                    code, _, detail = result.events[0].partition(": ")
                    self.reject(code, detail)
                    return
                for event in result.events:
                    code, _, detail = event.partition(": ")
                    self.emit(code, detail)
                out = make_trajectory(result.joint_names, result.positions, result.times_from_start)
        except Exception as exc:  # a malformed message must never crash the gate; it is a rejection
            self.reject("rejected_malformed", f"{type(exc).__name__}: {exc}")
            return
        self.forward(out, now, gripper)

    def gripper_command(self, msg: m.JointTrajectory, fingers: list[int]) -> m.JointTrajectory | None:
        """The finger part of a proposal, clamped to the gripper's travel (the last point's opening, metres)."""
        if not fingers or not msg.points:
            return None
        g = self.spec.gripper
        lo, hi = sorted((g.closed_position, g.open_position))
        opening = float(np.clip(msg.points[-1].positions[fingers[0]], lo, hi))
        if not np.isfinite(opening):
            raise ValueError("gripper opening is not finite")
        return make_trajectory(list(g.joint_names), np.full((1, len(g.joint_names)), opening),
                               np.array([msg.points[-1].time_from_start.to_seconds()]))

    def on_estop(self, msg: m.Bool) -> None:
        if msg.data and not self.estopped:
            self.estopped = True
            self.hold("estop", "e-stop pressed; motion stopped and latched")
            self.publish_state()

    def on_estop_reset(self, msg: m.Bool) -> None:
        if msg.data:
            self.reset()

    def on_reset_service(self, _request: itf.Trigger_Request) -> itf.Trigger_Response:
        released = self.reset()
        return itf.Trigger_Response(True, f"released: {', '.join(released)}" if released else "nothing was latched")

    def reset(self) -> list[str]:
        """Release a latched e-stop and a controller fault; returns what was released."""
        released = []
        if self.estopped:
            self.estopped = False
            released.append("e-stop")
            self.emit("estop_reset", "e-stop released; waiting for a new proposal")
        if self.fault:
            released.append(f"controller fault ({self.fault})")
            self.emit("fault_reset", f"controller fault released: {self.fault}")
            self.fault = None
        if released:
            self.publish_state()
        return released

    # ---- watchdog -----------------------------------------------------------------------------------------
    def check_watchdog(self) -> None:
        now = time.monotonic()
        if self.goal_id is not None and not self.fault and now - self.last_heard_t > self.watchdog_period:
            # a goal of ours is pending or running and the controller has said nothing (answer, feedback, result)
            silence = f"{1e3 * (now - self.last_heard_t):.0f} ms"
            if not self.running:
                self.controller_fault("controller_no_response", f"the controller did not answer a goal within "
                                      f"{silence}", server_gone=True)
            else:
                self.controller_fault("controller_silent", f"no feedback from the controller for {silence} while a "
                                      "goal runs", server_gone=True)
            return
        if not self.executing:
            return
        if now - self.last_state_t > self.joint_state_timeout:
            self.hold("watchdog_stale_joint_states",
                      f"joint states are {1e3 * (now - self.last_state_t):.0f} ms old", measured=False)
        elif now - self.last_proposal_t > self.watchdog_period:
            self.hold("watchdog_no_proposal", f"no fresh proposal for {1e3 * (now - self.last_proposal_t):.0f} ms")

    # ---- outputs ------------------------------------------------------------------------------------------
    def using(self) -> str:
        """The interface the next command goes through: 'action' or 'topic'."""
        if self.action is None:
            return "topic"
        if self.interface == "action" or self.action.server_is_ready():
            return "action"
        return "topic"

    def forward(self, msg: m.JointTrajectory, now: float, gripper: m.JointTrajectory | None = None) -> None:
        self.counts["forwarded"] += 1
        self.last_proposal_t = now
        self.executing = bool(msg.points)
        if self.using() == "topic":
            self.cmd_pub.publish(msg)
            if gripper is not None:
                self.gripper_pub.publish(gripper)
            return
        if not msg.points:  # a stop: an empty goal is INVALID_GOAL to the controller; cancelling holds it instead
            self.cancel_goal()
            return
        self.send_goal(msg, gripper)

    def goal(self, msg: m.JointTrajectory) -> itf.FollowJointTrajectory_Goal:
        names = list(msg.joint_names)
        tol = [itf.JointTolerance(n, self.path_tolerance) for n in names] if self.path_tolerance > 0 else []
        goal_tol = [itf.JointTolerance(n, self.goal_tolerance) for n in names] if self.goal_tolerance > 0 else []
        return itf.FollowJointTrajectory_Goal(trajectory=msg, path_tolerance=tol, goal_tolerance=goal_tol,
                                              goal_time_tolerance=m.Duration.from_seconds(self.goal_time_tolerance))

    def send_goal(self, msg: m.JointTrajectory, gripper: m.JointTrajectory | None = None, hold: bool = False) -> None:
        if self.goal_id is not None:
            self.superseded.add(self.goal_id)  # its CANCELED result is our own preemption
        if self.goal_id is None:  # nothing outstanding: the controller's silence counts from now
            self.last_heard_t = time.monotonic()
        goal_id = self.action.send_goal(self.goal(msg), self.on_goal_response, self.on_feedback, self.on_result)
        self.pending_gripper[goal_id] = gripper
        self.goal_id, self.goal_sent_t = goal_id, time.monotonic()
        self.goal_accepted = self.goal_active = False
        self.counts["goals"] += 1
        if hold:
            self.hold_goals.add(goal_id)

    def on_goal_response(self, goal_id: bytes, accepted: bool) -> None:
        self.last_heard_t = time.monotonic()
        gripper = self.pending_gripper.pop(goal_id, None)
        if goal_id != self.goal_id:
            if accepted:  # an older goal accepted after a newer one was sent: the newer one preempts it
                self.superseded.add(goal_id)
            return
        self.goal_accepted = True
        if not accepted:
            self.goal_id = None
            if goal_id in self.hold_goals:  # the controller refuses even a hold: hold on its topic
                self.hold_goals.discard(goal_id)
                self.hold("controller_rejected_hold", "the controller rejected the hold goal", via_topic=True)
                return
            self.controller_fault("controller_rejected", "the controller rejected the trajectory goal; nothing of it "
                                  "ran")
            return
        self.goal_active = True
        self.running.add(goal_id)
        if gripper is not None and not self.estopped:
            self.gripper_pub.publish(gripper)

    def on_feedback(self, goal_id: bytes, _feedback: itf.FollowJointTrajectory_Feedback) -> None:
        self.last_heard_t = time.monotonic()
        if goal_id == self.goal_id:
            self.diag.tick("feedback")

    def on_result(self, goal_id: bytes, status: int, result: itf.FollowJointTrajectory_Result) -> None:
        self.last_heard_t = time.monotonic()
        self.running.discard(goal_id)
        ours = goal_id in self.superseded
        self.superseded.discard(goal_id)
        self.hold_goals.discard(goal_id)
        if goal_id == self.goal_id:
            self.goal_active = False
            self.goal_id = None
        if status == itf.STATUS_SUCCEEDED or (status == itf.STATUS_CANCELED and ours):
            return
        code = itf.ERROR_NAMES.get(int(result.error_code), str(result.error_code))
        if status == itf.STATUS_ABORTED:
            self.controller_fault("controller_aborted", f"the controller aborted the trajectory: {code}"
                                  + (f" ({result.error_string})" if result.error_string else ""))
        elif status == itf.STATUS_CANCELED:
            self.controller_fault("controller_preempted", "the trajectory was cancelled or preempted by another "
                                  "client of the controller" + (f" ({result.error_string})" if result.error_string
                                                                else ""))

    def cancel_goal(self) -> None:
        """Cancel our running goal (joint_trajectory_controller holds where it is); its CANCELED end is ours."""
        for goal_id in {self.goal_id, *self.running} - {None}:  # also an accepted one a rejected goal left running
            self.superseded.add(goal_id)
            self.action.cancel(goal_id)
        self.running.clear()
        self.goal_id, self.goal_accepted, self.goal_active = None, False, False

    def controller_fault(self, code: str, detail: str, server_gone: bool = False) -> None:
        """Hold, report and latch: nothing is forwarded until a reset."""
        self.fault = detail
        self.diag.error(f"{code}: {detail}")
        if server_gone:
            self.goal_id, self.goal_accepted, self.goal_active = None, False, False
        else:
            self.cancel_goal()
        self.hold(code, detail, via_topic=server_gone)
        self.publish_state()

    def reject(self, code: str, detail: str) -> None:
        self.counts["rejected"] += 1
        self.hold(code, detail)

    def hold(self, code: str, detail: str, measured: bool = True, via_topic: bool = False) -> None:
        """Command a hold and publish the event explaining it; stops the watchdog until the next forwarded proposal.

        The hold goes where commands go (a hold goal through the action, which preempts the running one; a
        stale measurement cancels the running goal instead), and on the topic when the action server is silent."""
        q = self.q if measured and time.monotonic() - self.last_state_t <= self.joint_state_timeout else None
        if via_topic or self.using() == "topic":
            self.cmd_pub.publish(hold_trajectory(self.names, q, self.hold_time))
        elif q is not None:
            self.send_goal(hold_trajectory(self.names, q, self.hold_time), hold=True)
        else:
            self.cancel_goal()
        self.counts["holds"] += 1
        self.executing = False
        self.emit(code, detail, hold=True)

    def emit(self, code: str, detail: str, **extra: Any) -> None:
        self.counts["events"] += 1
        self.event_pub.publish(event_json("safety", code, detail, **extra))
        self.node.log.info(f"{code}: {detail}")

    def state_text(self) -> str:
        return "estop" if self.estopped else f"fault: {self.fault}" if self.fault else "ok"

    def publish_state(self) -> None:
        self.state_pub.publish(m.String(self.state_text()))
