"""The PyBullet world: table, arm with parallel gripper, cameras, and the 10 Hz end-effector action executor.

Frames: the arm's base is the world origin and the table top is the plane z = 0 (so world == robot base frame).
Timing: physics runs at 240 Hz; one control tick (`apply_action`) is 24 physics steps (10 Hz).

Action (float32 [7], see keystone_vla.types): end-effector position delta (m), rotation delta (axis-angle, rad, base
frame), gripper command (0 open .. 1 closed). Deltas integrate into a commanded target pose, which IK (on the arm's
URDF, with joint limits and rest poses) turns into joint targets; a safety shield, when set, filters those targets
before they reach the motors. This module never decides what to do (tasks and policies do).
"""

from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np
import pybullet as p
import pybullet_data

from keystone_vla.errors import SimError
from keystone_vla.robots import RobotSpec, get_robot, resolve_urdf
from keystone_vla.types import Observation

from .camera import CAMERA_CONFIGS, ArmProxies, Camera, CameraFrame
from .geometry import quat_from_axis_angle, quat_multiply
from .objects import SceneObject

PHYSICS_HZ = 240
CONTROL_HZ = 10
SUBSTEPS = PHYSICS_HZ // CONTROL_HZ
MAX_STEP_M = 0.05  # largest position delta per control tick
MAX_ROT_RAD = 0.3  # largest rotation delta per control tick
RENDER_MODES = ("fast", "full")
IK_LIMIT_MARGIN = 0.06  # rad; the safety shield keeps 0.03 rad free inside each joint limit


class JointTargetFilter(Protocol):
    """The safety seam: anything with this method can sit between IK and the motors."""

    def filter_joint_target(self, q_now: np.ndarray, q_target: np.ndarray, dt: float) -> tuple[np.ndarray, list[str]]: ...

    def reset(self) -> None: ...


class RobotArm:
    """The arm body plus the index bookkeeping and IK settings for one `RobotSpec`."""

    def __init__(self, client: int, spec: RobotSpec) -> None:
        self.client = client
        self.spec = spec
        self.body = p.loadURDF(
            resolve_urdf(spec), spec.base_position, useFixedBase=True, flags=p.URDF_USE_SELF_COLLISION,
            physicsClientId=client,
        )
        by_joint: dict[str, int] = {}
        by_link: dict[str, int] = {}
        for j in range(p.getNumJoints(self.body, physicsClientId=client)):
            info = p.getJointInfo(self.body, j, physicsClientId=client)
            by_joint[info[1].decode()] = j
            by_link[info[12].decode()] = j
        self.joints = [by_joint[n] for n in spec.joint_names]
        self.fingers = [by_joint[n] for n in spec.gripper.joint_names]
        self.ee_link = by_link[spec.ee_link]
        self.movable = [j for j in range(p.getNumJoints(self.body, physicsClientId=client))
                        if p.getJointInfo(self.body, j, physicsClientId=client)[2] != p.JOINT_FIXED]
        # IK null-space settings over all movable joints (arm + fingers)
        lower, upper, rest = [], [], []
        for j in self.movable:
            if j in self.joints:
                k = self.joints.index(j)
                lower.append(spec.lower_limits[k] + IK_LIMIT_MARGIN)  # stay clear of the shield's margin
                upper.append(spec.upper_limits[k] - IK_LIMIT_MARGIN)
                rest.append(spec.home[k])
            else:
                lower.append(0.0)
                upper.append(spec.gripper.open_position)
                rest.append(spec.gripper.open_position)
        self._ik = dict(lowerLimits=lower, upperLimits=upper, jointRanges=[u - lo for lo, u in zip(lower, upper)],
                        restPoses=rest, maxNumIterations=100, residualThreshold=1e-5)
        self._arm_in_movable = [self.movable.index(j) for j in self.joints]
        if len(self.fingers) == 2:  # keep fingers symmetric (research: avoids shoving the object sideways)
            c = p.createConstraint(self.body, self.fingers[0], self.body, self.fingers[1], jointType=p.JOINT_GEAR,
                                   jointAxis=[1, 0, 0], parentFramePosition=[0, 0, 0], childFramePosition=[0, 0, 0],
                                   physicsClientId=client)
            p.changeConstraint(c, gearRatio=-1, erp=0.1, maxForce=50, physicsClientId=client)
        for j in self.fingers:
            p.changeDynamics(self.body, j, lateralFriction=2.0, spinningFriction=0.01, frictionAnchor=True,
                             physicsClientId=client)
        self.reset()

    def reset(self, q: np.ndarray | None = None) -> None:
        q = self.spec.home if q is None else q
        for j, v in zip(self.joints, q):
            p.resetJointState(self.body, j, v, physicsClientId=self.client)
        for j in self.fingers:
            p.resetJointState(self.body, j, self.spec.gripper.open_position, physicsClientId=self.client)
        self.command_joints(np.asarray(q, dtype=np.float64), 0.0)

    def joint_positions(self) -> np.ndarray:
        states = p.getJointStates(self.body, self.joints, physicsClientId=self.client)
        return np.array([s[0] for s in states], dtype=np.float32)

    def joint_velocities(self) -> np.ndarray:
        states = p.getJointStates(self.body, self.joints, physicsClientId=self.client)
        return np.array([s[1] for s in states], dtype=np.float32)

    def gripper_opening(self) -> float:
        """Finger opening in [0, 1] (1 = fully open)."""
        g = self.spec.gripper
        pos = np.mean([s[0] for s in p.getJointStates(self.body, self.fingers, physicsClientId=self.client)])
        return float(np.clip((pos - g.closed_position) / (g.open_position - g.closed_position), 0.0, 1.0))

    def ee_pose(self) -> np.ndarray:
        st = p.getLinkState(self.body, self.ee_link, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array([*st[4], *st[5]], dtype=np.float32)

    def ik(self, pos: np.ndarray, orn: np.ndarray) -> np.ndarray:
        q = p.calculateInverseKinematics(self.body, self.ee_link, list(pos), list(orn), physicsClientId=self.client,
                                         **self._ik)
        return np.array([q[i] for i in self._arm_in_movable], dtype=np.float64)

    def command_joints(self, q: np.ndarray, gripper: float) -> None:
        for j, target, force, vmax in zip(self.joints, q, self.spec.max_joint_force, self.spec.velocity_limits):
            p.setJointMotorControl2(self.body, j, p.POSITION_CONTROL, targetPosition=float(target),
                                    force=max(force, 200.0), maxVelocity=vmax, physicsClientId=self.client)
        g = self.spec.gripper
        finger = g.open_position + float(np.clip(gripper, 0, 1)) * (g.closed_position - g.open_position)
        for j in self.fingers:
            p.setJointMotorControl2(self.body, j, p.POSITION_CONTROL, targetPosition=finger, force=g.max_force,
                                    physicsClientId=self.client)


class SimWorld:
    """A table-top world with one arm, its cameras and the task's objects.

    `reset_scene()` rebuilds everything from scratch (so an episode depends only on its seed, not on history);
    tasks then add objects with the builders in `keystone_vla.sim.objects` and register them with `add_object`.
    """

    def __init__(self, arm: str = "panda", image_size: int = 128, cameras: tuple[str, ...] = ("front", "wrist"),
                 render_mode: str = "fast") -> None:
        self.spec = get_robot(arm)
        unknown = [c for c in cameras if c not in CAMERA_CONFIGS]
        if unknown:
            raise SimError(f"unknown camera {unknown[0]!r}; valid cameras: {', '.join(CAMERA_CONFIGS)}")
        if render_mode not in RENDER_MODES:
            raise SimError(f"unknown render mode {render_mode!r}; valid: {', '.join(RENDER_MODES)}")
        if not 16 <= image_size <= 512:
            raise SimError(f"image_size must be between 16 and 512 pixels, got {image_size}")
        self.image_size = image_size
        self.camera_names = tuple(cameras)
        self.render_mode = render_mode
        self.client = p.connect(p.DIRECT)
        self.shield: JointTargetFilter | None = None
        self.interventions = 0
        self.objects: dict[str, SceneObject] = {}
        self.reset_scene()

    # -- scene ------------------------------------------------------------------------------------------------------
    def reset_scene(self) -> None:
        cid = self.client
        p.resetSimulation(physicsClientId=cid)
        p.setGravity(0, 0, -9.81, physicsClientId=cid)
        p.setTimeStep(1.0 / PHYSICS_HZ, physicsClientId=cid)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=cid)
        self.table = p.loadURDF("table/table.urdf", [0.5, 0, -0.625], useFixedBase=True, physicsClientId=cid)
        self.robot = RobotArm(cid, self.spec)
        self.objects = {}
        self.tick = 0
        self.interventions = 0
        if getattr(self, "shield", None) is not None:
            self.shield.reset()  # a new episode starts at rest: no velocity history
        self.proxies = None
        if self.render_mode == "fast":
            chain = [-1, *self.robot.joints, self.robot.ee_link]
            self.proxies = ArmProxies(cid, self.robot.body, chain, self.robot.fingers)
        self.cameras: dict[str, Camera] = {}
        for name in self.camera_names:
            cfg = CAMERA_CONFIGS[name]
            cam = Camera(cfg, cid, self.image_size, self.image_size, self._wrist_pose if cfg.mounted else None)
            if self.proxies:
                cam.body_alias = {b: self.robot.body for b in self.proxies.all_bodies}
            self.cameras[name] = cam
        self._target_pos, self._target_orn = self._home_target()
        self._gripper_cmd = 0.0

    def _home_target(self) -> tuple[np.ndarray, np.ndarray]:
        pose = self.robot.ee_pose().astype(np.float64)
        return pose[:3].copy(), pose[3:].copy()

    def add_object(self, obj: SceneObject) -> SceneObject:
        if obj.name in self.objects:
            raise SimError(f"object id {obj.name!r} is already in the scene")
        self.objects[obj.name] = obj
        return obj

    def settle(self, steps: int = 60) -> None:
        for _ in range(steps):
            p.stepSimulation(physicsClientId=self.client)

    # -- control ----------------------------------------------------------------------------------------------------
    @property
    def target_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The commanded end-effector pose the next action's deltas apply to (position, quaternion xyzw)."""
        return self._target_pos.copy(), self._target_orn.copy()

    @property
    def gripper_command(self) -> float:
        return self._gripper_cmd

    def command_action(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """Integrate one action into the commanded pose and solve IK, without stepping physics.

        Returns (joint targets float64 [dof], gripper command 0..1). `apply_action` uses it; so does the ROS policy
        node, whose shadow world turns actions into trajectory proposals for the real (or bridged) arm.
        """
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise SimError(f"action must be 7 finite numbers (dx, dy, dz, rx, ry, rz, gripper), got {a.tolist()}")
        dpos = a[:3]
        n = np.linalg.norm(dpos)
        if n > MAX_STEP_M:
            dpos = dpos * (MAX_STEP_M / n)
        drot = a[3:6]
        r = np.linalg.norm(drot)
        if r > MAX_ROT_RAD:
            drot = drot * (MAX_ROT_RAD / r)
        ee = self.robot.ee_pose().astype(np.float64)
        if np.linalg.norm(ee[:3] - self._target_pos) > 0.03:  # blocked (contact): re-anchor, no wind-up
            self._target_pos = ee[:3].copy()
        lo, hi = self.spec.workspace
        self._target_pos = np.clip(self._target_pos + dpos, [lo[0], lo[1], 0.003], hi)
        q = quat_multiply(quat_from_axis_angle(drot), self._target_orn)
        self._target_orn = q / np.linalg.norm(q)
        self._gripper_cmd = float(np.clip(a[6], 0.0, 1.0))
        return self.robot.ik(self._target_pos, self._target_orn), self._gripper_cmd

    def apply_action(self, action: np.ndarray) -> list[str]:
        """Execute one 10 Hz control tick; returns the safety events it raised (empty when none)."""
        q_target, gripper = self.command_action(action)
        events: list[str] = []
        if self.shield is not None:
            q_target, events = self.shield.filter_joint_target(
                self.robot.joint_positions().astype(np.float64), q_target, 1.0 / CONTROL_HZ
            )
            if events:
                self.interventions += 1
        self.robot.command_joints(q_target, gripper)
        for _ in range(SUBSTEPS):
            p.stepSimulation(physicsClientId=self.client)
        self.tick += 1
        return events

    # -- sensing ----------------------------------------------------------------------------------------------------
    def _wrist_pose(self):
        pose = self.robot.ee_pose().astype(np.float64)
        rot = np.array(p.getMatrixFromQuaternion(pose[3:])).reshape(3, 3)
        eye = pose[:3] + rot @ np.array([0.09, 0.0, -0.07])  # beside the hand, above the fingertips
        target = pose[:3] + rot @ np.array([0.0, 0.0, 0.12])
        return tuple(eye), tuple(target), tuple(rot @ np.array([1.0, 0.0, 0.0]))

    def render(self, camera: str = "front") -> CameraFrame:
        if camera not in self.cameras:
            raise SimError(f"camera {camera!r} is not enabled; enabled cameras: {', '.join(self.cameras)}")
        if self.proxies is not None:
            self.proxies.update()
        return self.cameras[camera].render()

    def state_vector(self) -> np.ndarray:
        """float32 [dof + 1]: arm joint positions, then gripper opening (1 open)."""
        return np.append(self.robot.joint_positions(), self.robot.gripper_opening()).astype(np.float32)

    def observation(self, instruction: str = "", cameras: tuple[str, ...] | None = None, depth: bool = False) -> Observation:
        names = self.camera_names if cameras is None else cameras
        if self.proxies is not None and names:
            self.proxies.update()
        frames = {c: self.cameras[c].render() for c in names}
        return Observation(
            images={c: f.rgb for c, f in frames.items()},
            depth={c: f.depth for c, f in frames.items()} if depth else {},
            state=self.state_vector(),
            ee_pose=self.robot.ee_pose(),
            instruction=instruction,
            timestamp=self.tick / CONTROL_HZ,
        )

    def close(self) -> None:
        if self.client is not None and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def unsafe_no_shield_warning() -> None:
    warnings.warn("SAFETY SHIELD DISABLED (--unsafe-no-shield): commands reach the motors unchecked; tests only",
                  stacklevel=2)


__all__ = ["SimWorld", "RobotArm", "JointTargetFilter", "CONTROL_HZ", "PHYSICS_HZ", "SUBSTEPS"]
