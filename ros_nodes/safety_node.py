"""The safety node: the only publisher on the trajectory controller's topic.

- Forwards `/keystone/proposed_trajectory` to `/joint_trajectory_controller/joint_trajectory` only when it
  passes `SafetyShield.check_trajectory` (possibly clamped / time-stretched); a rejected proposal makes it hold.
  Finger joints in a proposal are split off, clamped to the gripper's travel and sent to
  `/gripper_controller/joint_trajectory` with the arm part (never on their own, never while e-stopped).
- Watchdog (checked at `check_rate` Hz) while executing: no fresh proposal for `watchdog_period` s (default
  0.2) -> hold at the measured position; joint states older than `joint_state_timeout` -> empty trajectory
  (the controller stops and holds where it is, since our measurement is stale).
- `/keystone/estop` (Bool true) latches a stop until `/keystone/estop_reset` (Bool true); nothing is forwarded
  while latched.
- Every intervention is published as one JSON String on `/keystone/safety_events`.

`unsafe_no_shield` forwards proposals unchecked (watchdog and e-stop stay on); it exists for tests only and
logs a loud warning at start and on every forward. This node must never publish anything it did not check.
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

import numpy as np

from keystone_vla.robots import get_robot
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import (
    event_json,
    hold_trajectory,
    joint_vector,
    make_trajectory,
    trajectory_points,
)
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, LATCHED_QOS, SENSOR_QOS, Node
from keystone_vla.safety import SafetyShield, ShieldLimits

UNSAFE_BANNER = "UNSAFE: the safety shield is OFF (--unsafe-no-shield); proposals reach the controller unchecked"


class SafetyNode:
    """Parameters: arm, watchdog_period, joint_state_timeout, check_rate, hold_time, unsafe_no_shield, and every
    `ShieldLimits` scalar as ``shield.<name>``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.spec = get_robot(node.declare_parameter("arm", "panda"))
        self.watchdog_period = float(node.declare_parameter("watchdog_period", 0.2))
        self.joint_state_timeout = float(node.declare_parameter("joint_state_timeout", 0.2))
        self.hold_time = float(node.declare_parameter("hold_time", 0.05))
        rate = float(node.declare_parameter("check_rate", 50.0))
        self.unsafe = bool(node.declare_parameter("unsafe_no_shield", False))
        limits = {}
        for f in fields(ShieldLimits):
            default = getattr(ShieldLimits(), f.name)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                limits[f.name] = node.declare_parameter(f"shield.{f.name}", default)
        self.shield = SafetyShield.for_robot(self.spec, ShieldLimits.from_mapping(limits))
        self.names = list(self.spec.joint_names)

        self.q: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.last_state_t = -np.inf
        self.last_proposal_t = -np.inf
        self.executing = False
        self.estopped = False
        self.counts = {"forwarded": 0, "rejected": 0, "holds": 0, "events": 0}

        self.cmd_pub = node.create_publisher(m.JointTrajectory, topics.CONTROLLER_TRAJECTORY, DEFAULT_QOS)
        self.gripper_pub = node.create_publisher(m.JointTrajectory, topics.GRIPPER_TRAJECTORY, DEFAULT_QOS)
        self.event_pub = node.create_publisher(m.String, topics.SAFETY_EVENTS, DEFAULT_QOS)
        self.state_pub = node.create_publisher(m.String, topics.SAFETY_STATE, LATCHED_QOS)
        node.create_subscription(m.JointState, topics.JOINT_STATES, self.on_joint_state, SENSOR_QOS)
        node.create_subscription(m.JointTrajectory, topics.PROPOSED_TRAJECTORY, self.on_proposal, DEFAULT_QOS)
        node.create_subscription(m.Bool, topics.ESTOP, self.on_estop, DEFAULT_QOS)
        node.create_subscription(m.Bool, topics.ESTOP_RESET, self.on_estop_reset, DEFAULT_QOS)
        node.create_timer(1.0 / rate, self.check_watchdog)
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
        if self.estopped:
            self.reject("estop_latched", "e-stop is latched; publish true on /keystone/estop_reset to release")
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
        self.forward(out, now)
        if gripper is not None:
            self.gripper_pub.publish(gripper)

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
        if msg.data and self.estopped:
            self.estopped = False
            self.emit("estop_reset", "e-stop released; waiting for a new proposal")
            self.publish_state()

    # ---- watchdog -----------------------------------------------------------------------------------------
    def check_watchdog(self) -> None:
        if not self.executing:
            return
        now = time.monotonic()
        if now - self.last_state_t > self.joint_state_timeout:
            self.hold("watchdog_stale_joint_states",
                      f"joint states are {1e3 * (now - self.last_state_t):.0f} ms old", measured=False)
        elif now - self.last_proposal_t > self.watchdog_period:
            self.hold("watchdog_no_proposal", f"no fresh proposal for {1e3 * (now - self.last_proposal_t):.0f} ms")

    # ---- outputs ------------------------------------------------------------------------------------------
    def forward(self, msg: m.JointTrajectory, now: float) -> None:
        self.cmd_pub.publish(msg)
        self.counts["forwarded"] += 1
        self.last_proposal_t = now
        self.executing = bool(msg.points)

    def reject(self, code: str, detail: str) -> None:
        self.counts["rejected"] += 1
        self.hold(code, detail)

    def hold(self, code: str, detail: str, measured: bool = True) -> None:
        """Publish a hold and the event explaining it; stops the watchdog until the next forwarded proposal."""
        q = self.q if measured and time.monotonic() - self.last_state_t <= self.joint_state_timeout else None
        self.cmd_pub.publish(hold_trajectory(self.names, q, self.hold_time))
        self.counts["holds"] += 1
        self.executing = False
        self.emit(code, detail, hold=True)

    def emit(self, code: str, detail: str, **extra: Any) -> None:
        self.counts["events"] += 1
        self.event_pub.publish(event_json("safety", code, detail, **extra))
        self.node.log.info(f"{code}: {detail}")

    def publish_state(self) -> None:
        self.state_pub.publish(m.String("estop" if self.estopped else "ok"))
