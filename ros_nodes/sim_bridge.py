"""sim_bridge: the PyBullet arm and its front camera as a ROS robot cell (what a robot driver + ros2_control + an
RGB-D camera driver would be on hardware).

Publishes what a real cell publishes, nothing more:

- `/joint_states` (arm + finger joints, `joint_state_rate` Hz, default 100);
- the front camera at `camera_rate` Hz: colour `/camera/front/image_raw` (rgb8), depth
  `/camera/front/depth/image_raw` (32FC1, metres along the optical axis, NaN where the ray hits nothing, REP 118)
  and `/camera/front/camera_info`, all three with the same header (stamp = render time, frame
  ``front_camera_optical``). The intrinsics are given in the ROS pixel convention (pixel centres at integer
  coordinates), so TinyRenderer's half-pixel shift is folded into the principal point, as a calibration would.

The camera's pose in ``base_link`` is calibration, not a topic: the perception node takes it as its `camera_pose`
parameter (config/sim.yaml holds the value `camera_pose(world)` reads from this simulator) and broadcasts it on
`/tf_static`. The bridge logs that value on start.

Simulator truth (task, seed, instruction, plan, true object poses, `success` per `keystone_vla.sim.judge`) goes
only to `/keystone/sim_truth` (latched JSON, `truth_rate` Hz), for scoring in tests; no node of the stack may
subscribe to it. With `publish_truth: false` the bridge publishes only what a robot driver and a camera driver
publish, and writes the truth to `truth_file` (JSON, replaced atomically each truth tick) when one is given. The
bridge must never publish object poses anywhere else: the stack sees objects only through perception.

It is the arm's `joint_trajectory_controller` (named by `controller`): it executes `trajectory_msgs/JointTrajectory`
from `/<controller>/joint_trajectory` and serves `control_msgs/action/FollowJointTrajectory` on
`/<controller>/follow_joint_trajectory` as the ros2_control controller does: a goal whose joints are not the arm's
(INVALID_JOINTS) or with no or non-finite points (INVALID_GOAL) is rejected; an accepted goal preempts the active
one (that one ends CANCELED), runs with linear time interpolation, sends feedback (desired, actual, error) at
`action_monitor_rate` Hz, aborts with PATH_TOLERANCE_VIOLATED when a joint leaves the goal's path tolerance (then
holds where it is), succeeds at its end within the goal tolerance, or aborts with GOAL_TOLERANCE_VIOLATED
`goal_time_tolerance` s after it; a cancel holds and ends it CANCELED; a topic command preempts it too. An empty
topic trajectory stops and holds. Finger commands come from `/gripper_controller/joint_trajectory`. Physics runs in
real time (240 Hz steps caught up each tick).
The bridge is the robot, not a gate: it never filters commands (that is the safety node's job) and never publishes
on the controller topics.

`/diagnostics` at 1 Hz, as a driver's would be: state ``ok`` (``ok: executing goal`` while one runs,
``ok: lagging`` when physics cannot keep real time), the last aborted or rejected goal's reason, joint-state /
camera / physics-step rates and the goal totals. Never simulator truth.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import pybullet as p

from keystone_vla.ros_nodes import interfaces as itf
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import matrix_to_pose, trajectory_points
from keystone_vla.ros_nodes.diagnostics import Diagnostics
from keystone_vla.ros_nodes.trajectory_exec import GoalMonitor, TrajectoryInterpolator
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, LATCHED_QOS, SENSOR_QOS, Node

MAX_CATCH_UP_STEPS = 48  # physics steps per tick at most (0.2 s); beyond that the sim runs slower than real time
CAMERA = "front"
CAMERA_FRAME = "front_camera_optical"


def camera_pose(world: Any, name: str = CAMERA) -> list[float]:
    """The simulated camera's optical frame (x right, y down, z forward) in the base frame: x y z qx qy qz qw,
    the perception node's `camera_pose` calibration."""
    return matrix_to_pose(np.linalg.inv(world.cameras[name].world_to_camera))


def ros_intrinsics(camera: Any) -> np.ndarray:
    """K float64 [3, 3] in the ROS convention (pixel (col, row) centred at (col, row)) for a simulated camera,
    whose TinyRenderer pixels sit at (col, row) + `PIXEL_OFFSET`."""
    from keystone_vla.sim.camera import PIXEL_OFFSET

    k = np.asarray(camera.K, dtype=np.float64).copy()
    k[0, 2] -= PIXEL_OFFSET[0]
    k[1, 2] -= PIXEL_OFFSET[1]
    return k


class SimBridgeNode:
    def __init__(self, node: Node) -> None:
        from keystone_vla.sim.judge import SuccessJudge
        from keystone_vla.sim.tasks import get_task
        from keystone_vla.sim.world import PHYSICS_HZ, SimWorld

        self.node = node
        from keystone_vla.robots import ROBOTS
        from keystone_vla.sim.tasks import TASKS

        arm = node.declare_parameter("arm", "panda", "the simulated arm", choices=tuple(ROBOTS))
        self.task_name = node.declare_parameter("task", "pick_place", "the simulated task (scene and goal)",
                                                choices=tuple(TASKS))
        self.seed = int(node.declare_parameter("seed", 0, "the task's scene seed", range=(0, 2**31 - 1)))
        self.split = node.declare_parameter("split", "seen", "object split of the task", choices=("seen", "unseen"))
        image_size = int(node.declare_parameter("image_size", 128, "camera image size (pixels)", range=(16, 512)))
        js_rate = float(node.declare_parameter("joint_state_rate", 100.0, "joint state rate (Hz)", range=(1.0, 1000.0)))
        cam_rate = float(node.declare_parameter("camera_rate", 10.0, "camera frame rate (Hz); 0: no camera",
                                                range=(0.0, 60.0)))
        truth_rate = float(node.declare_parameter("truth_rate", 10.0, "simulator truth / success judge rate (Hz)",
                                                  range=(0.1, 100.0)))
        self.publish_truth_topic = bool(node.declare_parameter(
            "publish_truth", True, f"publish the simulator's truth on {topics.SIM_TRUTH} (false: only what a robot "
            "and camera driver publish)"))
        self.truth_file = str(node.declare_parameter("truth_file", "", "write the truth JSON to this file too"))
        controller = node.declare_parameter("controller", topics.CONTROLLER, "the trajectory controller's name")
        monitor_rate = float(node.declare_parameter("action_monitor_rate", 20.0,
                                                    "FollowJointTrajectory feedback rate (Hz)", range=(1.0, 500.0)))
        traj_topic, action_name = topics.controller_topics(controller)
        self.physics_hz = PHYSICS_HZ
        self.world = SimWorld(arm=arm, image_size=image_size, cameras=(CAMERA,))
        self.task = get_task(self.task_name)
        self.inst = self.task.reset(self.world, self.seed, self.split)
        # the judge's settle window is 1 s of its own ticks, whatever the truth rate
        self.judge = SuccessJudge(settle_ticks=max(1, round(truth_rate)))
        self.success = self.goal_held = False
        self.spec = self.world.spec
        self.names = list(self.spec.joint_names) + list(self.spec.gripper.joint_names)
        self.interp = TrajectoryInterpolator(self.world.robot.joint_positions().astype(np.float64))
        self.gripper = 0.0
        self.t_start = time.monotonic()
        self.steps_done = 0
        self.trajectories = 0
        self.camera_info = self._camera_info()

        self.js_pub = node.create_publisher(m.JointState, topics.JOINT_STATES, DEFAULT_QOS)
        self.img_pub = node.create_publisher(m.Image, topics.CAMERA_IMAGE, SENSOR_QOS)
        self.depth_pub = node.create_publisher(m.Image, topics.CAMERA_DEPTH, SENSOR_QOS)
        self.info_pub = node.create_publisher(m.CameraInfo, topics.CAMERA_INFO, SENSOR_QOS)
        self.truth_pub = node.create_publisher(m.String, topics.SIM_TRUTH, LATCHED_QOS) if self.publish_truth_topic \
            else None
        node.create_subscription(m.JointTrajectory, traj_topic, self.on_trajectory, DEFAULT_QOS)
        self.goal_id: bytes | None = None  # the active FollowJointTrajectory goal
        self.goal_monitor: GoalMonitor | None = None
        self.goal_final: np.ndarray | None = None
        self.goals = {"accepted": 0, "rejected": 0, "succeeded": 0, "aborted": 0, "canceled": 0}
        self.action = node.create_action_server(itf.FOLLOW_JOINT_TRAJECTORY, action_name, self.on_goal, self.on_cancel)
        node.create_timer(1.0 / monitor_rate, self.monitor_goal)
        node.create_subscription(m.JointTrajectory, topics.GRIPPER_TRAJECTORY, self.on_gripper, DEFAULT_QOS)
        self.lagging = False
        self.diag = Diagnostics(node, "sim_bridge", self.state)
        self.diag.values = lambda: {f"goals_{k}": v for k, v in self.goals.items()}
        node.create_timer(1.0 / js_rate, self.tick)
        if cam_rate > 0:
            node.create_timer(1.0 / cam_rate, self.publish_camera)
        node.create_timer(1.0 / truth_rate, self.publish_truth)
        node.log.info(f"{CAMERA} camera pose in base_link (perception's camera_pose): "
                      f"{[round(v, 6) for v in camera_pose(self.world)]}")
        self.publish_truth()

    # ---- commands -----------------------------------------------------------------------------------------
    def on_trajectory(self, msg: m.JointTrajectory) -> None:
        now = time.monotonic()
        arm = list(self.spec.joint_names)
        self.end_goal(itf.STATUS_CANCELED, itf.SUCCESSFUL, "preempted by a command on the trajectory topic")
        if not msg.points:
            self.interp.stop(now)
            return
        if sorted(msg.joint_names) != sorted(arm):
            self.node.log.error(f"trajectory joint names {list(msg.joint_names)} do not match {arm}; ignored")
            return
        order = [list(msg.joint_names).index(n) for n in arm]
        pts = trajectory_points(msg)
        positions = np.array([q for q, _ in pts], dtype=np.float64)[:, order]
        self.interp.set(positions, np.array([t for _, t in pts]), now)
        self.trajectories += 1

    # ---- FollowJointTrajectory, as joint_trajectory_controller serves it ----------------------------------------
    def on_goal(self, goal_id: bytes, goal: itf.FollowJointTrajectory_Goal) -> bool:
        traj, arm = goal.trajectory, list(self.spec.joint_names)
        problem = None
        if sorted(traj.joint_names) != sorted(arm):
            problem = f"INVALID_JOINTS: goal joints {list(traj.joint_names)} are not the controller's {arm}"
        elif not traj.points or any(len(p.positions) != len(arm) or not np.all(np.isfinite(p.positions))
                                    for p in traj.points):
            problem = "INVALID_GOAL: no points, or a point without finite positions for every joint"
        if problem:
            self.goals["rejected"] += 1
            self.diag.error(f"rejected a goal: {problem}")
            self.node.log.warning(f"rejected a FollowJointTrajectory goal: {problem}")
            return False
        self.end_goal(itf.STATUS_CANCELED, itf.SUCCESSFUL, "preempted by a new goal")
        now = time.monotonic()
        order = [list(traj.joint_names).index(n) for n in arm]
        pts = trajectory_points(traj)
        positions = np.array([q for q, _ in pts], dtype=np.float64)[:, order]
        times = np.array([t for _, t in pts])
        self.interp.set(positions, times, now)
        self.trajectories += 1

        def tolerances(items: list) -> np.ndarray:
            tol = np.zeros(len(arm))
            for t in items:
                if t.name in arm:
                    tol[arm.index(t.name)] = t.position
            return tol

        self.goal_id, self.goal_final = goal_id, positions[-1]
        self.goal_monitor = GoalMonitor(arm, now + float(times[-1]), tolerances(goal.path_tolerance),
                                        tolerances(goal.goal_tolerance), goal.goal_time_tolerance.to_seconds())
        self.goals["accepted"] += 1
        return True

    def on_cancel(self, goal_id: bytes) -> bool:
        if goal_id == self.goal_id:
            self.interp.stop(time.monotonic())
            self.end_goal(itf.STATUS_CANCELED, itf.SUCCESSFUL, "canceled")
        return True

    def end_goal(self, status: int, code: int, text: str) -> None:
        if self.goal_id is None:
            return
        self.action.finish(self.goal_id, status, itf.FollowJointTrajectory_Result(code, text))
        key = {itf.STATUS_SUCCEEDED: "succeeded", itf.STATUS_ABORTED: "aborted"}.get(status, "canceled")
        self.goals[key] += 1
        if status == itf.STATUS_ABORTED:
            self.node.log.warning(f"aborted the FollowJointTrajectory goal: {text}")
            self.diag.error(f"aborted a goal: {text}")
        self.goal_id = self.goal_monitor = self.goal_final = None

    def monitor_goal(self) -> None:
        if self.goal_id is None:
            return
        now = time.monotonic()
        desired = self.interp.sample(now)
        actual = self.world.robot.joint_positions().astype(np.float64)
        names = list(self.spec.joint_names)
        zero = m.Duration()
        self.action.publish_feedback(self.goal_id, itf.FollowJointTrajectory_Feedback(
            m.Header.now(), names, m.JointTrajectoryPoint(list(desired), [], [], [], zero),
            m.JointTrajectoryPoint(list(actual), [], [], [], zero),
            m.JointTrajectoryPoint(list(desired - actual), [], [], [], zero)))
        verdict = self.goal_monitor.check(now, desired, actual, self.goal_final)
        if verdict is None:
            return
        succeeded, code, text = verdict
        if not succeeded:
            self.interp.set(actual[None], np.array([0.0]), now)  # hold where the arm is
        self.end_goal(itf.STATUS_SUCCEEDED if succeeded else itf.STATUS_ABORTED, code, text)

    def on_gripper(self, msg: m.JointTrajectory) -> None:
        if not msg.points or not msg.points[-1].positions:
            return
        g = self.spec.gripper
        opening = float(msg.points[-1].positions[0])
        self.gripper = float(np.clip((g.open_position - opening) / (g.open_position - g.closed_position), 0.0, 1.0))

    # ---- real-time loop -----------------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        due = int((now - self.t_start) * self.physics_hz) - self.steps_done
        self.lagging = due > MAX_CATCH_UP_STEPS
        if self.lagging:  # fell behind (CPU contention): slow the sim down rather than jump
            self.t_start += (due - MAX_CATCH_UP_STEPS) / self.physics_hz
            due = MAX_CATCH_UP_STEPS
        self.world.robot.command_joints(self.interp.sample(now), self.gripper)
        for _ in range(max(due, 0)):
            p.stepSimulation(physicsClientId=self.world.client)
        self.steps_done += max(due, 0)
        self.diag.tick("physics_steps", max(due, 0))
        self.publish_joint_states()
        self.diag.tick("joint_states")

    def state(self) -> str:
        if self.lagging:
            return "ok: lagging (physics slower than real time)"
        return "ok: executing goal" if self.goal_id is not None else "ok"

    def publish_joint_states(self) -> None:
        robot = self.world.robot
        joints = robot.joints + robot.fingers
        states = p.getJointStates(robot.body, joints, physicsClientId=self.world.client)
        self.js_pub.publish(m.JointState(m.Header.now("base_link"), self.names, [s[0] for s in states],
                                         [s[1] for s in states], []))

    # ---- the camera ---------------------------------------------------------------------------------------
    def _camera_info(self) -> m.CameraInfo:
        cam = self.world.cameras[CAMERA]
        k = ros_intrinsics(cam)
        proj = np.hstack([k, np.zeros((3, 1))])
        return m.CameraInfo(m.Header(), cam.height, cam.width, "plumb_bob", [0.0] * 5, k.reshape(-1).tolist(),
                            np.eye(3).reshape(-1).tolist(), proj.reshape(-1).tolist(), 0, 0, m.RegionOfInterest())

    def publish_camera(self) -> None:
        frame = self.world.render(CAMERA)
        header = m.Header.now(CAMERA_FRAME)  # one stamp for colour, depth and info: perception pairs on it
        cam = self.world.cameras[CAMERA]
        depth = np.where(frame.depth < cam.far * 0.999, frame.depth, np.nan).astype(np.float32)  # far plane: no return
        self.img_pub.publish(m.Image.from_rgb(frame.rgb, header))
        self.depth_pub.publish(m.Image.from_depth(depth, header))
        self.camera_info.header = header
        self.info_pub.publish(self.camera_info)
        self.diag.tick("camera_frames")

    # ---- simulator truth (scoring only) -------------------------------------------------------------------
    def truth(self) -> dict:
        objects = {}
        for name, obj in self.world.objects.items():
            pos, quat = obj.pose()
            objects[name] = {"pos": [float(v) for v in pos], "quat": [float(v) for v in quat]}
        return {"task": self.task_name, "seed": self.seed, "split": self.split, "arm": self.spec.name,
                "instruction": self.inst.instruction, "plan": self.inst.plan.calls(), "objects": objects,
                "success": self.success, "goal_held": self.goal_held,
                "sim_time": self.steps_done / self.physics_hz, "trajectories": self.trajectories,
                "goals": dict(self.goals)}

    def publish_truth(self) -> None:
        verdict = self.judge.update(self.world, self.inst, self.task)
        # `success` is the judge's criterion now (goal held, hand open and clear for its settle window, parts at
        # rest): it drops again if a later command undoes the goal
        self.success, self.goal_held = bool(verdict.success), bool(verdict.goal_held)
        text = json.dumps(self.truth())
        if self.truth_pub is not None:
            self.truth_pub.publish(m.String(text))
        if self.truth_file:
            tmp = f"{self.truth_file}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.truth_file)

    def close(self) -> None:
        self.world.close()
