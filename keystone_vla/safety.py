"""The safety shield: the one gate between any policy and any motor (sim executor and ROS safety node alike).

`SafetyShield` checks joint commands against the arm's `RobotSpec` and a `ShieldLimits` cell config:
joint position limits (with a margin), joint velocity and acceleration limits, maximum step per command, a
workspace box (cell frame, see `keystone_vla.robots`) and a speed limit (default 0.25 m/s, the ISO 10218
reduced-speed value) for the tool centre point, and table (plane z = 0) / self collision on the arm's kinematic model (a private PyBullet DIRECT client).
Malformed commands (NaN/inf, wrong length, wrong joint names) are rejected.

Policy: it *clamps where safe* (clip to position limits, shorten a step along its own direction, stretch a
trajectory's timing) and *rejects otherwise* (hold the current position / refuse the trajectory), and it
records why in `events`. Invariant, asserted by the fuzz tests: an emitted command never makes any limit
violation worse than the current state; from a state within limits, every emitted command is within limits.
Stopping (holding the current position) is always allowed: braking is never acceleration-limited.

This module must never import ROS or the simulator, and must never let a command through unchecked.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError, SafetyError
from keystone_vla.robots import RobotSpec, resolve_urdf

# Bit flags returned by `filter_batch`, one per reason; `FLAG_NAMES` maps them to event codes.
NONFINITE, POSITION_CLAMPED, STEP_LIMITED, VELOCITY_LIMITED = 1, 2, 4, 8
ACCEL_LIMITED, TCP_SPEED_LIMITED, WORKSPACE, COLLISION, HOLD = 16, 32, 64, 128, 256
FLAG_NAMES = {NONFINITE: "rejected_nonfinite", POSITION_CLAMPED: "position_clamped", STEP_LIMITED: "step_limited",
              VELOCITY_LIMITED: "velocity_limited", ACCEL_LIMITED: "acceleration_limited",
              TCP_SPEED_LIMITED: "tcp_speed_limited", WORKSPACE: "workspace_limited",
              COLLISION: "collision_avoided", HOLD: "hold"}
_EPS = 1e-9


@dataclass(frozen=True)
class ShieldLimits:
    """Per-cell limits (the arm's own limits come from its RobotSpec). Units: rad, rad/s, rad/s^2, m, m/s."""

    position_margin: float = 0.03  # kept free inside each URDF joint limit
    velocity_scale: float = 1.0  # fraction of the spec's joint velocity limits
    acceleration_limit: float = 10.0  # on speeding up; braking is always allowed
    max_step: float = 0.25  # largest joint change per command / per trajectory segment
    tcp_speed_limit: float = 0.25  # ISO 10218 reduced speed
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # None: spec's box
    table_tolerance: float = 0.005  # links may touch the table (flat parts) but not sink deeper than this
    self_collision_tolerance: float = 0.002
    max_points: int = 1000  # per trajectory
    max_duration: float = 60.0  # s, per trajectory
    sample_resolution: float = 0.05  # rad between collision/workspace samples along a trajectory segment

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ShieldLimits:
        """Build from a dict (YAML/ROS parameters); an unknown key is an error naming it."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"unknown shield limit {key!r}; valid keys: {', '.join(sorted(known))}")
        kw = dict(values)
        if kw.get("workspace") is not None:
            lo, hi = kw["workspace"]
            kw["workspace"] = (tuple(float(v) for v in lo), tuple(float(v) for v in hi))
        return cls(**kw)


class KinematicChain:
    """Vectorised forward kinematics of the base -> TCP chain, read from the URDF (no simulator); results are in
    the cell frame (the arm's base is translated by `base_position`, as `RobotSpec` defines)."""

    def __init__(self, urdf_path: str, joint_names: Sequence[str], tcp_link: str,
                 base_position: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        root = ET.parse(urdf_path).getroot()
        by_child = {j.find("child").get("link"): j for j in root.findall("joint")}
        chain, link = [], tcp_link
        while link in by_child:
            chain.append(by_child[link])
            link = by_child[link].find("parent").get("link")
        # Fixed joints are folded into the next actuated joint's origin (and the rest into `_tail`). Per actuated
        # joint: (origin translation t, A, B, C) with origin_R @ Rot(axis, q) = A + sin(q) B + (1 - cos(q)) C.
        self._steps: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        pending = np.eye(4)
        for joint in reversed(chain):
            origin = joint.find("origin")
            xyz = [float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()]
            rpy = [float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()]
            t = np.eye(4)
            t[:3, :3], t[:3, 3] = _rpy_matrix(*rpy), xyz
            pending = pending @ t
            name, kind = joint.get("name"), joint.get("type")
            if kind == "fixed":
                continue
            if kind not in ("revolute", "continuous"):
                raise ConfigError(f"unsupported joint type {kind!r} on the TCP chain ({name})")
            if name not in joint_names:
                raise ConfigError(f"joint {name!r} on the TCP chain is not in the robot spec's joint names")
            axis_el = joint.find("axis")
            a = np.array([float(v) for v in (axis_el.get("xyz") if axis_el is not None else "1 0 0").split()])
            a = a / np.linalg.norm(a)
            k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
            r0 = pending[:3, :3]
            self._steps.append((list(joint_names).index(name), pending[:3, 3].copy(), r0.copy(), r0 @ k, r0 @ k @ k))
            pending = np.eye(4)
        self._tail = pending[:3, 3].copy()
        self._base = np.asarray(base_position, dtype=np.float64)  # arm mount in the cell frame (translation only)
        if not chain:
            raise ConfigError(f"TCP link {tcp_link!r} not found in {urdf_path}")

    def tcp_positions(self, q: np.ndarray) -> np.ndarray:
        """q: float [N, dof] -> TCP positions float64 [N, 3] in the cell frame (robot base + `base_position`)."""
        q = np.asarray(q, dtype=np.float64)
        q = q.reshape(-1, q.shape[-1])
        rot = None
        pos = np.broadcast_to(self._base, (len(q), 3))
        for idx, t, a, b, c in self._steps:
            pos = pos + (t if rot is None else rot @ t)
            s, co = np.sin(q[:, idx])[:, None, None], np.cos(q[:, idx])[:, None, None]
            m = a + s * b + (1 - co) * c
            rot = m if rot is None else rot @ m
        return pos + (self._tail if rot is None else rot @ self._tail)


def _rpy_matrix(r: float, p: float, y: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


class CollisionModel:
    """The arm alone on a table (plane z = 0) in a private PyBullet DIRECT client; reports penetration depths.

    Link pairs already touching at the home pose (e.g. links joined through a fixed flange) are ignored, as a
    MoveIt setup assistant would mark them 'Default'."""

    def __init__(self, spec: RobotSpec) -> None:
        import pybullet as pb

        self._pb, self.client = pb, pb.connect(pb.DIRECT)
        flags = pb.URDF_USE_SELF_COLLISION | pb.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT
        self.robot = pb.loadURDF(resolve_urdf(spec), spec.base_position, useFixedBase=True, flags=flags,
                                 physicsClientId=self.client)
        self.plane = pb.createMultiBody(0, pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=self.client),
                                        physicsClientId=self.client)
        index = {pb.getJointInfo(self.robot, i, physicsClientId=self.client)[1].decode(): i
                 for i in range(pb.getNumJoints(self.robot, physicsClientId=self.client))}
        self._joints = [index[n] for n in spec.joint_names]
        for name in spec.gripper.joint_names:  # fingers open: the widest (most conservative) hand
            pb.resetJointState(self.robot, index[name], spec.gripper.open_position, physicsClientId=self.client)
        self._ignored: set[tuple[int, int]] = set()
        self.penetration(np.asarray(spec.home))
        self._ignored = {(c[3], c[4]) for c in pb.getContactPoints(self.robot, self.robot, physicsClientId=self.client)}

    def penetration(self, q: np.ndarray) -> tuple[float, float]:
        """(deepest link penetration into the table, deepest self-penetration), metres, >= 0."""
        pb, cid = self._pb, self.client
        pb.resetJointStatesMultiDof(self.robot, self._joints, [[float(v)] for v in q], physicsClientId=cid)
        pb.performCollisionDetection(physicsClientId=cid)
        table = min((c[8] for c in pb.getContactPoints(self.robot, self.plane, physicsClientId=cid) if c[3] != -1),
                    default=0.0)
        own = min((c[8] for c in pb.getContactPoints(self.robot, self.robot, physicsClientId=cid)
                   if (c[3], c[4]) not in self._ignored), default=0.0)
        return max(0.0, -table), max(0.0, -own)

    def close(self) -> None:
        if self.client is not None and self._pb.isConnected(self.client):
            self._pb.disconnect(self.client)
        self.client = None


@dataclass
class TrajectoryCheck:
    """Outcome of `SafetyShield.check_trajectory`: positions float64 [P, dof] in the spec's joint order and
    times_from_start float64 [P] (s), possibly clamped/stretched; empty when rejected or when asked to stop."""

    accepted: bool
    joint_names: tuple[str, ...]
    positions: np.ndarray
    times_from_start: np.ndarray
    events: list[str] = field(default_factory=list)
    reason: str = ""


class SafetyShield:
    """Checks joint commands for one arm. Not thread-safe (one private PyBullet client per shield)."""

    def __init__(self, spec: RobotSpec, limits: ShieldLimits | None = None) -> None:
        self.spec, self.limits = spec, limits or ShieldLimits()
        lim = self.limits
        self.lower = np.asarray(spec.lower_limits) + lim.position_margin
        self.upper = np.asarray(spec.upper_limits) - lim.position_margin
        self.vmax = np.asarray(spec.velocity_limits) * lim.velocity_scale
        self.amax = np.full(spec.dof, lim.acceleration_limit)
        box = lim.workspace or spec.workspace
        self.box_lo, self.box_hi = np.asarray(box[0], float), np.asarray(box[1], float)
        self.kinematics = KinematicChain(resolve_urdf(spec), spec.joint_names, spec.ee_link, spec.base_position)
        self.collision = CollisionModel(spec)
        self._v_prev = np.zeros(spec.dof)

    @classmethod
    def for_robot(cls, spec: RobotSpec, limits: ShieldLimits | Mapping[str, Any] | None = None) -> SafetyShield:
        if isinstance(limits, Mapping):
            limits = ShieldLimits.from_mapping(limits)
        return cls(spec, limits)

    def reset(self) -> None:
        """Forget the previous command's velocity (call when an episode or a motion starts from rest)."""
        self._v_prev = np.zeros(self.spec.dof)

    # ---- single commands (sim executor) -------------------------------------------------------------
    def filter_joint_target(self, q_now: np.ndarray, q_target: np.ndarray, dt: float) -> tuple[np.ndarray, list[str]]:
        """One control tick: q_now, q_target float [dof] (rad), dt (s) -> (q_safe float64 [dof], events)."""
        q_now = self._state(q_now)
        target = np.asarray(q_target, dtype=np.float64).reshape(-1)
        if target.shape != q_now.shape:
            self._v_prev[:] = 0.0
            return q_now, [f"rejected_shape: target has {target.size} values, the arm has {self.spec.dof} joints"]
        q_safe, flags = self.filter_batch(q_now[None], target[None], dt, self._v_prev[None])
        self._v_prev = (q_safe[0] - q_now) / dt
        return q_safe[0], self.describe(int(flags[0]), target, q_safe[0])

    def describe(self, flags: int, target: np.ndarray, q_safe: np.ndarray) -> list[str]:
        """Event strings ``code: detail`` for a flag word from `filter_batch`."""
        if flags & NONFINITE:
            return [f"rejected_nonfinite: NaN/inf in joint target at indices {np.flatnonzero(~np.isfinite(target)).tolist()}; holding"]
        gap = float(np.max(np.abs(q_safe - target)))
        return [f"{name}: commanded position is {gap:.4f} rad from the requested target"
                for bit, name in FLAG_NAMES.items() if flags & bit]

    def filter_batch(self, q_now: np.ndarray, q_target: np.ndarray, dt: float, v_prev: np.ndarray | None = None,
                     *, check_collision: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised core: q_now, q_target float [N, dof], v_prev [N, dof] (previous command's velocity) ->
        (q_safe float64 [N, dof], flags uint32 [N]). ``check_collision=False`` skips only the PyBullet stage; it
        exists for fuzz sweeps that verify collisions on a sample, never for executors."""
        if not (math.isfinite(dt) and dt > 0):
            raise SafetyError(f"dt must be a positive number of seconds, got {dt!r}")
        q_now = np.asarray(q_now, dtype=np.float64)
        target = np.asarray(q_target, dtype=np.float64)
        if not np.isfinite(q_now).all():
            raise SafetyError("current joint state contains NaN/inf; cannot command the arm, check the encoders")
        v_prev = np.zeros_like(q_now) if v_prev is None else np.nan_to_num(np.asarray(v_prev, dtype=np.float64))
        flags = np.zeros(len(q_now), dtype=np.uint32)
        finite = np.isfinite(target).all(axis=1)
        flags[~finite] |= NONFINITE | HOLD
        target = np.where(finite[:, None], target, q_now)
        clipped = np.clip(target, self.lower, self.upper)
        flags[(clipped != target).any(axis=1) & finite] |= POSITION_CLAMPED
        delta = np.where(finite[:, None], clipped - q_now, 0.0)  # a rejected command holds exactly
        scale = np.ones(len(q_now))
        mag = np.abs(delta)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_step = np.where(mag.max(axis=1) > self.limits.max_step, self.limits.max_step / mag.max(axis=1), 1.0)
            s_vel = np.nanmin(np.where(mag > 0, self.vmax * dt / mag, np.inf), axis=1)
            u = delta / dt
            up, low = np.maximum(0.0, v_prev + self.amax * dt), np.minimum(0.0, v_prev - self.amax * dt)
            s_acc = np.min(np.where(u > 0, up / u, np.where(u < 0, low / u, np.inf)), axis=1)
        for s_lim, bit in ((s_step, STEP_LIMITED), (s_vel, VELOCITY_LIMITED), (s_acc, ACCEL_LIMITED)):
            flags[s_lim < 1.0 - _EPS] |= bit
            scale = np.minimum(scale, s_lim)
        scale = np.clip(scale * (1 - 1e-9), 0.0, 1.0)  # keep a hair inside the bounds against rounding
        pending = np.flatnonzero(scale > 0)
        both = self.kinematics.tcp_positions(np.concatenate([q_now, q_now[pending] + scale[pending, None] * delta[pending]]))
        p_now, pc = both[: len(q_now)], both[len(q_now):]
        ws_now = self._box_distance(p_now)
        for it in range(10):  # Cartesian stage: shorten the step until the TCP box and speed limits hold
            if it:
                pc = self.kinematics.tcp_positions(q_now[pending] + scale[pending, None] * delta[pending])
            speed = np.linalg.norm(pc - p_now[pending], axis=1) / dt
            bad_ws = self._box_distance(pc) > ws_now[pending] + 1e-9
            bad_sp = speed > self.limits.tcp_speed_limit
            flags[pending[bad_ws]] |= WORKSPACE
            flags[pending[bad_sp]] |= TCP_SPEED_LIMITED
            fix = np.where(bad_sp, 0.95 * self.limits.tcp_speed_limit / np.maximum(speed, _EPS), 1.0)
            scale[pending] *= np.where(bad_ws, np.minimum(fix, 0.5), fix)
            pending = pending[bad_ws | bad_sp]
            if not len(pending):
                break
        scale[pending] = 0.0
        if check_collision:
            for i in np.flatnonzero(scale > 0):
                scale[i] = self._collision_backoff(q_now[i], delta[i], scale[i], p_now[i], ws_now[i], dt, flags, i)
        flags[(scale == 0) & (np.abs(delta).max(axis=1) > 0)] |= HOLD
        return q_now + scale[:, None] * delta, flags

    def _collision_backoff(self, q0, delta, s, p0, ws0, dt, flags, i) -> float:
        """Halve a Cartesian-checked step until it neither collides nor breaks the box/speed (else 0 = hold)."""
        base, lim = None, self.limits
        for attempt in range(4):
            qc = q0 + s * delta
            if attempt:  # the first candidate already passed the Cartesian stage
                pc = self.kinematics.tcp_positions(qc[None])
                if self._box_distance(pc)[0] > ws0 + 1e-9 or np.linalg.norm(pc[0] - p0) / dt > lim.tcp_speed_limit:
                    s *= 0.5
                    continue
            table, own = self.collision.penetration(qc)
            if table <= lim.table_tolerance and own <= lim.self_collision_tolerance:
                return s
            base = base or self.collision.penetration(q0)
            if table <= max(base[0], lim.table_tolerance) and own <= max(base[1], lim.self_collision_tolerance):
                return s
            flags[i] |= COLLISION
            s *= 0.5
        return 0.0

    def _box_distance(self, p: np.ndarray) -> np.ndarray:
        """Euclidean distance of points [N, 3] outside the workspace box (0 inside)."""
        return np.linalg.norm(np.maximum(0.0, np.maximum(self.box_lo - p, p - self.box_hi)), axis=1)

    def _state(self, q_now: np.ndarray) -> np.ndarray:
        q = np.asarray(q_now, dtype=np.float64).reshape(-1)
        if q.shape != (self.spec.dof,):
            raise SafetyError(f"current joint state has {q.size} values, {self.spec.name} has {self.spec.dof} joints")
        if not np.isfinite(q).all():
            raise SafetyError("current joint state contains NaN/inf; cannot command the arm, check the encoders")
        return q

    def violations(self, q: np.ndarray) -> dict[str, float]:
        """How far a single configuration is outside each static limit (0 = within); used for audits and tests."""
        q = self._state(q)
        pos = float(np.max(np.maximum(0.0, np.maximum(self.lower - q, q - self.upper))))
        table, own = self.collision.penetration(q)
        return {"position": pos, "workspace": float(self._box_distance(self.kinematics.tcp_positions(q[None]))[0]),
                "table": max(0.0, table - self.limits.table_tolerance),
                "self_collision": max(0.0, own - self.limits.self_collision_tolerance)}

    # ---- trajectories (ROS safety node) ---------------------------------------------------------------
    def check_trajectory(self, joint_names: Sequence[str], points: Sequence[tuple[Sequence[float], float]],
                         q_now: np.ndarray, v_now: np.ndarray | None = None) -> TrajectoryCheck:
        """Check a JointTrajectory: points = [(positions [len(joint_names)], time_from_start s)], q_now [dof].

        Clamps positions to limits and stretches segment durations for joint velocity/acceleration and TCP speed;
        rejects bad names/lengths/NaN/times, steps larger than `max_step`, and any sample (every
        `sample_resolution` rad along the linear interpolation) that leaves the workspace or collides.
        An empty trajectory is accepted: it means stop and hold."""
        names, dof, lim = tuple(self.spec.joint_names), self.spec.dof, self.limits
        q_now = self._state(q_now)

        def reject(code: str, why: str) -> TrajectoryCheck:
            return TrajectoryCheck(False, names, np.zeros((0, dof)), np.zeros(0), [f"{code}: {why}"], why)

        given = [str(n) for n in joint_names]
        if sorted(given) != sorted(names):
            return reject("rejected_joint_names", f"joint names {given} do not match the arm's {list(names)}")
        if not points:
            return TrajectoryCheck(True, names, np.zeros((0, dof)), np.zeros(0), ["stop: empty trajectory, hold"])
        if len(points) > lim.max_points:
            return reject("rejected_length", f"{len(points)} points; at most {lim.max_points} allowed")
        rows = [np.asarray(p, dtype=np.float64).reshape(-1) for p, _ in points]
        if any(r.size != dof for r in rows):
            return reject("rejected_shape", f"every point needs {dof} positions, got sizes {sorted({r.size for r in rows})}")
        pos = np.stack(rows)[:, [given.index(n) for n in names]]
        times = np.array([float(t) for _, t in points])
        if not (np.isfinite(pos).all() and np.isfinite(times).all()):
            return reject("rejected_nonfinite", "positions or times contain NaN/inf")
        if times[0] < 0 or (np.diff(times) <= 0).any() or times[-1] > lim.max_duration:
            return reject("rejected_times", f"times_from_start must rise strictly from >= 0 to <= {lim.max_duration} s")
        events = []
        clipped = np.clip(pos, self.lower, self.upper)
        if (clipped != pos).any():
            events.append(f"position_clamped: up to {np.abs(clipped - pos).max():.4f} rad")
        waypoints = np.vstack([q_now, clipped])
        seg = np.diff(waypoints, axis=0)
        steps = np.abs(seg).max(axis=1)
        if (steps > lim.max_step + _EPS).any():
            i = int(np.argmax(steps))
            return reject("rejected_step", f"point {i} moves a joint {steps[i]:.3f} rad (max_step {lim.max_step})")
        # samples along each linear segment, for the TCP path length, workspace and collisions
        counts = np.maximum(1, np.ceil(steps / lim.sample_resolution).astype(int))
        owner = np.repeat(np.arange(len(seg)), counts)
        frac = np.concatenate([np.arange(1, c + 1) / c for c in counts])
        samples = waypoints[owner] + frac[:, None] * seg[owner]
        tcp = self.kinematics.tcp_positions(np.vstack([q_now, samples]))
        chord = np.linalg.norm(np.diff(tcp, axis=0), axis=1)
        path = np.bincount(owner, weights=chord, minlength=len(seg))
        ws_now = self._box_distance(tcp[:1])[0]
        outside = np.flatnonzero(self._box_distance(tcp[1:]) > ws_now + 1e-9)
        if len(outside):
            i = int(owner[outside[0]])
            return reject("rejected_workspace", f"segment to point {i} takes the TCP outside the workspace box")
        dts = np.diff(np.concatenate([[0.0], times]))
        need = np.maximum.reduce([dts, (np.abs(seg) / self.vmax).max(axis=1), path / lim.tcp_speed_limit,
                                  np.full(len(dts), 1e-3)])  # every segment takes time, even a zero-length one
        if (need > dts * (1 + 1e-9)).any():
            events.append(f"velocity_limited: segment durations stretched up to x{np.max(need / np.maximum(dts, _EPS)):.2f}")
        dts, stretched = self._stretch_for_acceleration(seg, need, v_now)
        if dts is None:
            return reject("rejected_acceleration", "cannot time-scale the trajectory within the acceleration limit")
        if stretched:
            events.append("acceleration_limited: segment durations stretched")
        base = None
        for k, q in enumerate(samples):
            table, own = self.collision.penetration(q)
            if table > lim.table_tolerance or own > lim.self_collision_tolerance:
                base = base or self.collision.penetration(q_now)
                if table > max(base[0], lim.table_tolerance) or own > max(base[1], lim.self_collision_tolerance):
                    what = "the table" if table > max(base[0], lim.table_tolerance) else "itself"
                    return reject("rejected_collision", f"segment to point {int(owner[k])} puts the arm into {what}")
        return TrajectoryCheck(True, names, clipped, np.cumsum(dts), events)

    def _stretch_for_acceleration(self, seg: np.ndarray, dts: np.ndarray, v_now: np.ndarray | None):
        """Lengthen segments until every speed-up between consecutive segment velocities (starting from v_now,
        ending at rest) stays within the acceleration limit. Returns (durations, stretched) or (None, True)."""
        v0 = np.zeros(seg.shape[1]) if v_now is None else np.nan_to_num(np.asarray(v_now, dtype=np.float64))
        dts, stretched = dts.copy(), False
        for _ in range(60):
            vel = np.vstack([v0, seg / dts[:, None], np.zeros(seg.shape[1])])
            span = np.concatenate([[dts[0]], dts[:-1] + dts[1:], [dts[-1]]]) / 2  # time between velocity samples
            lo = np.minimum(0.0, vel[:-1] - self.amax * span[:, None])
            hi = np.maximum(0.0, vel[:-1] + self.amax * span[:, None])
            bad = np.flatnonzero(((vel[1:] < lo - 1e-9) | (vel[1:] > hi + 1e-9)).any(axis=1))
            if not len(bad):
                return dts, stretched
            stretched = True
            for b in bad:  # boundary b sits between segment b-1 and segment b
                for s in (b - 1, b):
                    if 0 <= s < len(dts):
                        dts[s] *= 1.25
        return None, True

    def close(self) -> None:
        self.collision.close()
