"""sim_bridge: the PyBullet arm as a ROS robot (what a robot driver + ros2_control would be on hardware).

Publishes `/joint_states` (arm + finger joints, `joint_state_rate` Hz, default 100), `/camera/front/image_raw` +
`camera_info` (`camera_rate` Hz), and `/keystone/scene` (latched JSON: task, seed, instruction, plan, object
poses, success) so an oracle policy in another process can act; executes `trajectory_msgs/JointTrajectory` from
`/joint_trajectory_controller/joint_trajectory` with linear time interpolation like ros2_control's trajectory
controller (an empty trajectory stops and holds) and finger commands from `/gripper_controller/joint_trajectory`.
Physics runs in real time (240 Hz steps caught up each tick).

The bridge is the robot, not a gate: it never filters commands (that is the safety node's job) and never
publishes on the controller topics.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pybullet as p

from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import trajectory_points
from keystone_vla.ros_nodes.trajectory_exec import TrajectoryInterpolator
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, LATCHED_QOS, SENSOR_QOS, Node

MAX_CATCH_UP_STEPS = 48  # physics steps per tick at most (0.2 s); beyond that the sim runs slower than real time


class SimBridgeNode:
    def __init__(self, node: Node) -> None:
        from keystone_vla.sim.tasks import get_task
        from keystone_vla.sim.world import PHYSICS_HZ, SimWorld

        self.node = node
        arm = node.declare_parameter("arm", "panda")
        self.task_name = node.declare_parameter("task", "pick_place")
        self.seed = int(node.declare_parameter("seed", 0))
        self.split = node.declare_parameter("split", "seen")
        image_size = int(node.declare_parameter("image_size", 128))
        js_rate = float(node.declare_parameter("joint_state_rate", 100.0))
        cam_rate = float(node.declare_parameter("camera_rate", 10.0))
        scene_rate = float(node.declare_parameter("scene_rate", 5.0))
        self.physics_hz = PHYSICS_HZ
        self.world = SimWorld(arm=arm, image_size=image_size, cameras=("front",))
        self.task = get_task(self.task_name)
        self.inst = self.task.reset(self.world, self.seed, self.split)
        self.spec = self.world.spec
        self.names = list(self.spec.joint_names) + list(self.spec.gripper.joint_names)
        self.interp = TrajectoryInterpolator(self.world.robot.joint_positions().astype(np.float64))
        self.gripper = 0.0
        self.t_start = time.monotonic()
        self.steps_done = 0
        self.trajectories = 0

        self.js_pub = node.create_publisher(m.JointState, topics.JOINT_STATES, DEFAULT_QOS)
        self.img_pub = node.create_publisher(m.Image, topics.CAMERA_IMAGE, SENSOR_QOS)
        self.info_pub = node.create_publisher(m.CameraInfo, topics.CAMERA_INFO, SENSOR_QOS)
        self.scene_pub = node.create_publisher(m.String, topics.SCENE, LATCHED_QOS)
        node.create_subscription(m.JointTrajectory, topics.CONTROLLER_TRAJECTORY, self.on_trajectory, DEFAULT_QOS)
        node.create_subscription(m.JointTrajectory, topics.GRIPPER_TRAJECTORY, self.on_gripper, DEFAULT_QOS)
        node.create_timer(1.0 / js_rate, self.tick)
        if cam_rate > 0:
            node.create_timer(1.0 / cam_rate, self.publish_camera)
        node.create_timer(1.0 / scene_rate, self.publish_scene)
        self.publish_scene()

    # ---- commands -----------------------------------------------------------------------------------------
    def on_trajectory(self, msg: m.JointTrajectory) -> None:
        now = time.monotonic()
        arm = list(self.spec.joint_names)
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
        if due > MAX_CATCH_UP_STEPS:  # fell behind (CPU contention): slow the sim down rather than jump
            self.t_start += (due - MAX_CATCH_UP_STEPS) / self.physics_hz
            due = MAX_CATCH_UP_STEPS
        self.world.robot.command_joints(self.interp.sample(now), self.gripper)
        for _ in range(max(due, 0)):
            p.stepSimulation(physicsClientId=self.world.client)
        self.steps_done += max(due, 0)
        self.publish_joint_states()

    def publish_joint_states(self) -> None:
        robot = self.world.robot
        joints = robot.joints + robot.fingers
        states = p.getJointStates(robot.body, joints, physicsClientId=self.world.client)
        self.js_pub.publish(m.JointState(m.Header.now("base_link"), self.names, [s[0] for s in states],
                                         [s[1] for s in states], []))

    def publish_camera(self) -> None:
        frame = self.world.render("front")
        header = m.Header.now("front_camera_optical")
        self.img_pub.publish(m.Image.from_rgb(frame.rgb, header))
        cam = self.world.cameras["front"]
        k = np.asarray(cam.K, dtype=np.float64)
        proj = np.hstack([k, np.zeros((3, 1))])
        self.info_pub.publish(m.CameraInfo(header, cam.height, cam.width, "plumb_bob", [0.0] * 5,
                                           k.reshape(-1).tolist(), np.eye(3).reshape(-1).tolist(),
                                           proj.reshape(-1).tolist(), 0, 0, m.RegionOfInterest()))

    def scene(self) -> dict:
        objects = {}
        for name, obj in self.world.objects.items():
            pos, quat = obj.pose()
            objects[name] = {"pos": [float(v) for v in pos], "quat": [float(v) for v in quat]}
        success = bool(self.task.success(self.world, self.inst) and self.world.robot.gripper_opening() > 0.5)
        return {"task": self.task_name, "seed": self.seed, "split": self.split, "arm": self.spec.name,
                "instruction": self.inst.instruction, "plan": self.inst.plan.calls(), "objects": objects,
                "success": success, "sim_time": self.steps_done / self.physics_hz, "trajectories": self.trajectories}

    def publish_scene(self) -> None:
        self.scene_pub.publish(m.String(json.dumps(self.scene())))

    def close(self) -> None:
        self.world.close()
