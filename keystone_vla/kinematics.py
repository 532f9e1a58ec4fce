"""Kinematics of one arm, without a simulator: forward kinematics and IK on the arm's URDF, and the end-effector
action integrator that turns a policy's 7-D actions into joint targets.

`ArmKinematics` loads only the arm's URDF (no table, no objects, no physics stepping) into a private PyBullet
DIRECT client, used as a kinematics library: `set_joints` teleports it to the measured joints, `ee_pose` is
forward kinematics of the grasp frame, `ik` solves with the joint limits (kept `IK_LIMIT_MARGIN` inside, clear of
the safety shield's margin) and the spec's home pose as rest pose, as the simulator's arm does.

`ActionIntegrator` keeps the commanded end-effector pose the next action's deltas apply to (the `Observation`
action contract: position delta m, axis-angle rotation delta rad, gripper 0 open .. 1 closed, cell frame) with the
same per-tick caps, workspace clip and contact re-anchoring as the simulator's executor, so a policy sees the same
executor on a real arm. This is what the ROS policy node runs on a cell.

This module must never import the simulator (`keystone_vla.sim`) or ROS: it runs on the robot's computer.
"""

from __future__ import annotations

import math

import numpy as np

from keystone_vla.robots import RobotSpec, resolve_urdf

IK_LIMIT_MARGIN = 0.06  # rad; the safety shield keeps 0.03 rad free inside each joint limit
MAX_STEP_M = 0.05  # largest position delta per control tick
MAX_ROT_RAD = 0.3  # largest rotation delta per control tick
REANCHOR_M = 0.03  # the hand is this far from the commanded pose (blocked by contact): re-anchor, no wind-up
MIN_TCP_Z = 0.003  # the commanded grasp point never goes below the table top


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b of xyzw quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz])


def quat_from_axis_angle(rotvec: np.ndarray) -> np.ndarray:
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    axis = rotvec / angle
    s = math.sin(angle / 2)
    return np.array([axis[0] * s, axis[1] * s, axis[2] * s, math.cos(angle / 2)])


class ArmKinematics:
    """FK / IK of `spec`'s arm and gripper (see module docstring). Not thread-safe; `close()` frees the client."""

    def __init__(self, spec: RobotSpec) -> None:
        import pybullet as pb

        self._pb = pb
        self.spec = spec
        self.client = pb.connect(pb.DIRECT)
        self.body = pb.loadURDF(resolve_urdf(spec), spec.base_position, useFixedBase=True, physicsClientId=self.client)
        by_joint, by_link = {}, {}
        n = pb.getNumJoints(self.body, physicsClientId=self.client)
        for j in range(n):
            info = pb.getJointInfo(self.body, j, physicsClientId=self.client)
            by_joint[info[1].decode()] = j
            by_link[info[12].decode()] = j
        self.joints = [by_joint[name] for name in spec.joint_names]
        self.fingers = [by_joint[name] for name in spec.gripper.joint_names]
        self.ee_link = by_link[spec.ee_link]
        #: the link the last arm joint moves (the flange the tool is mounted on)
        self.flange_link = pb.getJointInfo(self.body, self.joints[-1], physicsClientId=self.client)[12].decode()
        movable = [j for j in range(n) if pb.getJointInfo(self.body, j, physicsClientId=self.client)[2] != pb.JOINT_FIXED]
        lower, upper, rest = [], [], []
        for j in movable:
            if j in self.joints:
                k = self.joints.index(j)
                lower.append(spec.lower_limits[k] + IK_LIMIT_MARGIN)
                upper.append(spec.upper_limits[k] - IK_LIMIT_MARGIN)
                rest.append(spec.home[k])
            else:
                lower.append(0.0)
                upper.append(spec.gripper.open_position)
                rest.append(spec.gripper.open_position)
        self._ik = dict(lowerLimits=lower, upperLimits=upper, jointRanges=[u - lo for lo, u in zip(lower, upper)],
                        restPoses=rest, maxNumIterations=100, residualThreshold=1e-5)
        self._arm_in_movable = [movable.index(j) for j in self.joints]
        self.set_joints(np.asarray(spec.home), [spec.gripper.open_position] * len(self.fingers))

    def set_joints(self, q: np.ndarray, fingers: list[float] | np.ndarray | None = None) -> None:
        """Put the model at arm joints `q` float [dof] (rad) and finger positions (m, per finger)."""
        pb, cid = self._pb, self.client
        for j, v in zip(self.joints, q):
            pb.resetJointState(self.body, j, float(v), physicsClientId=cid)
        if fingers is not None:
            for j, v in zip(self.fingers, fingers):
                pb.resetJointState(self.body, j, float(v), physicsClientId=cid)

    def joint_positions(self) -> np.ndarray:
        states = self._pb.getJointStates(self.body, self.joints, physicsClientId=self.client)
        return np.array([s[0] for s in states], dtype=np.float32)

    def gripper_opening(self) -> float:
        """Finger opening in [0, 1] (1 = fully open)."""
        g = self.spec.gripper
        states = self._pb.getJointStates(self.body, self.fingers, physicsClientId=self.client)
        pos = np.mean([s[0] for s in states])
        return float(np.clip((pos - g.closed_position) / (g.open_position - g.closed_position), 0.0, 1.0))

    def ee_pose(self) -> np.ndarray:
        """Grasp frame in the cell frame: float32 [7] (x y z, quaternion xyzw)."""
        st = self._pb.getLinkState(self.body, self.ee_link, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array([*st[4], *st[5]], dtype=np.float32)

    def link_pose(self, link: str) -> np.ndarray:
        """Any link's frame (e.g. a camera mount) in the cell frame: float64 [7]."""
        index = {self._pb.getJointInfo(self.body, j, physicsClientId=self.client)[12].decode(): j
                 for j in range(self._pb.getNumJoints(self.body, physicsClientId=self.client))}
        if link not in index:
            from keystone_vla.errors import unknown_choice

            raise unknown_choice(f"link of {self.spec.name}", link, index)
        st = self._pb.getLinkState(self.body, index[link], computeForwardKinematics=True, physicsClientId=self.client)
        return np.array([*st[4], *st[5]], dtype=np.float64)

    def ik(self, pos: np.ndarray, orn: np.ndarray) -> np.ndarray:
        """Joint targets float64 [dof] for the grasp frame at `pos`, `orn` (xyzw), seeded at the current joints."""
        q = self._pb.calculateInverseKinematics(self.body, self.ee_link, list(pos), list(orn),
                                                physicsClientId=self.client, **self._ik)
        return np.array([q[i] for i in self._arm_in_movable], dtype=np.float64)

    def close(self) -> None:
        if self.client is not None and self._pb.isConnected(self.client):
            self._pb.disconnect(self.client)
        self.client = None


class ActionIntegrator:
    """End-effector actions -> joint targets on `ArmKinematics` (see module docstring)."""

    def __init__(self, kinematics: ArmKinematics) -> None:
        self.kin = kinematics
        self.spec = kinematics.spec
        self.reanchor()

    def reanchor(self) -> None:
        """Start the commanded pose at the model's current (measured) grasp pose."""
        pose = self.kin.ee_pose().astype(np.float64)
        self.target_pos, self.target_orn = pose[:3].copy(), pose[3:].copy()

    def command(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """action float [7] -> (joint targets float64 [dof], gripper command 0..1); the model must be at the
        measured joints (`ArmKinematics.set_joints`) first."""
        from keystone_vla.errors import ConfigError

        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ConfigError(f"action must be 7 finite numbers (dx, dy, dz, rx, ry, rz, gripper), got {a.tolist()}")
        dpos, drot = a[:3], a[3:6]
        n = np.linalg.norm(dpos)
        if n > MAX_STEP_M:
            dpos = dpos * (MAX_STEP_M / n)
        r = np.linalg.norm(drot)
        if r > MAX_ROT_RAD:
            drot = drot * (MAX_ROT_RAD / r)
        ee = self.kin.ee_pose().astype(np.float64)
        if np.linalg.norm(ee[:3] - self.target_pos) > REANCHOR_M:
            self.target_pos = ee[:3].copy()
        lo, hi = self.spec.workspace
        self.target_pos = np.clip(self.target_pos + dpos, [lo[0], lo[1], MIN_TCP_Z], hi)
        q = quat_multiply(quat_from_axis_angle(drot), self.target_orn)
        self.target_orn = q / np.linalg.norm(q)
        return self.kin.ik(self.target_pos, self.target_orn), float(np.clip(a[6], 0.0, 1.0))
