"""policy node: turns an instruction into joint-trajectory proposals for the safety node.

Subscribes `/camera/front/image_raw`, `/joint_states`, `/keystone/instruction` and `/keystone/scene`. It keeps a
*shadow* SimWorld (never stepped) reset with the task/seed the scene topic announces; each control tick it syncs
the shadow's arm joints and object poses from the topics, asks the policy (`oracle`, `keystone-base` or a
checkpoint folder, loaded by `keystone_vla.policies.registry`) for the 7-D action, turns it into joint targets
with the simulator's IK, and publishes a short JointTrajectory (arm + finger joints) on
`/keystone/proposed_trajectory`, plus status/plan JSON on `/keystone/status`. When the task is done it
publishes an empty trajectory (stop).

It never publishes on the controller topics: every proposal goes through the safety node.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pybullet as p

from keystone_vla.errors import KeystoneError
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import joint_vector, make_trajectory
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, LATCHED_QOS, SENSOR_QOS, Node
from keystone_vla.types import Observation


class PolicyNode:
    def __init__(self, node: Node) -> None:
        from keystone_vla.policies.registry import agent_config_of, load_policy
        from keystone_vla.sim.world import SimWorld

        self.node = node
        self.policy_name = node.declare_parameter("policy", "oracle")
        arm = node.declare_parameter("arm", "panda")
        rate = float(node.declare_parameter("control_rate", 10.0))
        self.horizon = float(node.declare_parameter("horizon", 0.1))  # time_from_start of each proposal (s)
        self.max_point_step = float(node.declare_parameter("max_point_step", 0.2))  # rad between proposal points
        # ticks allowed, as a multiple of the task's max_steps (a real-time arm lags the in-process simulator)
        self.budget = float(node.declare_parameter("tick_budget", 2.0))
        # the agent preset ('' = the checkpoint's agent.json, else shipped), resolved as keystone eval does
        preset = str(node.declare_parameter("agent", "")) or None
        self.agent = agent_config_of(self.policy_name, preset)
        self.policy = load_policy(self.policy_name, self.agent)
        self.shadow = SimWorld(arm=arm, image_size=64, cameras=())
        self.spec = self.shadow.spec
        self.task: Any = None
        self.inst: Any = None
        self.scene: dict | None = None
        self.js: m.JointState | None = None
        self.image: np.ndarray | None = None
        self.instruction = ""
        self.state = "idle"
        self.ticks = 0
        self.reason = ""
        self.success_at_start = False
        self.estopped = False  # paused while the safety node reports a latched e-stop
        self.prop_pub = node.create_publisher(m.JointTrajectory, topics.PROPOSED_TRAJECTORY, DEFAULT_QOS)
        self.status_pub = node.create_publisher(m.String, topics.STATUS, LATCHED_QOS)
        node.create_subscription(m.JointState, topics.JOINT_STATES, self.on_joint_state, SENSOR_QOS)
        node.create_subscription(m.Image, topics.CAMERA_IMAGE, self.on_image, SENSOR_QOS)
        node.create_subscription(m.String, topics.SCENE, self.on_scene, LATCHED_QOS)
        node.create_subscription(m.String, topics.INSTRUCTION, self.on_instruction, DEFAULT_QOS)
        node.create_subscription(m.String, topics.SAFETY_STATE, self.on_safety_state, LATCHED_QOS)
        node.create_timer(1.0 / rate, self.tick)
        self.publish_status()

    # ---- inputs -------------------------------------------------------------------------------------------
    def on_joint_state(self, msg: m.JointState) -> None:
        self.js = msg

    def on_safety_state(self, msg: m.String) -> None:
        self.estopped = msg.data == "estop"

    def on_image(self, msg: m.Image) -> None:
        self.image = msg.to_rgb()

    def on_scene(self, msg: m.String) -> None:
        first = self.scene is None
        self.scene = json.loads(msg.data)
        if first:  # announce that instructions can now be grounded
            self.publish_status()

    def on_instruction(self, msg: m.String) -> None:
        text = msg.data.strip()
        if not text:  # e.g. a speech front end that heard nothing: refused, never run
            from keystone_vla.perception.grounding import check_instruction

            refusal = check_instruction(text)
            assert refusal is not None  # empty text is always refused
            self.refuse(msg.data, refusal.reason)
            return
        if self.scene is None:
            self.refuse(text, "no scene yet from sim_bridge (/keystone/scene); cannot ground the instruction")
            return
        from keystone_vla.policies.episode import check_plan_agrees
        from keystone_vla.sim.tasks import get_task

        try:
            self.task = get_task(self.scene["task"])
            self.inst = self.task.reset(self.shadow, int(self.scene["seed"]), self.scene["split"], text)
            self.sync()
            bind = getattr(self.policy, "bind", None)
            if bind is not None:
                bind(self.shadow, self.inst)
            # a learned policy's own plan must ask for the steps the instruction grounds to, or nothing moves
            check_plan_agrees(getattr(self.policy, "plan", None), self.inst.plan)
            self.policy.reset()
        except KeystoneError as exc:
            self.refuse(text, str(exc))
            return
        self.instruction, self.state, self.ticks, self.reason = text, "executing", 0, ""
        self.success_at_start = bool(self.scene.get("success"))
        self.node.log.info(f"executing {text!r}: plan {self.inst.plan.calls()}")
        self.publish_status()

    # ---- control loop -------------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.state != "executing" or self.js is None or self.estopped:
            return
        self.sync()
        success = bool(self.scene and self.scene.get("success"))
        if success and not self.success_at_start:
            self.finish("succeeded")
            return
        self.success_at_start = self.success_at_start and success  # a goal that held at the start must break first
        if self.ticks >= self.budget * self.task.max_steps:
            self.finish("failed")
            return
        q = self.shadow.robot.joint_positions()
        obs = Observation(images={"front": self.image} if self.image is not None else {},
                          state=np.append(q, self.shadow.robot.gripper_opening()).astype(np.float32),
                          ee_pose=self.shadow.robot.ee_pose(), instruction=self.instruction)
        from keystone_vla.policies.base import check_action

        action = check_action(self.policy.act(obs), self.policy_name)
        q_target, grip = self.shadow.command_action(action)
        g = self.spec.gripper
        opening = g.open_position + grip * (g.closed_position - g.open_position)
        names = list(self.spec.joint_names) + list(g.joint_names)
        # a big IK jump (e.g. a wrist turn) goes out as several points, each within the shield's max_step
        q_now = q.astype(np.float64)
        n = max(1, int(np.ceil(np.abs(q_target - q_now).max() / self.max_point_step)))
        fractions = np.arange(1, n + 1) / n
        arm = q_now + fractions[:, None] * (q_target - q_now)
        positions = np.hstack([arm, np.full((n, len(g.joint_names)), opening)])
        self.prop_pub.publish(make_trajectory(names, positions, self.horizon * fractions))
        self.ticks += 1
        if self.ticks % 5 == 0:
            self.publish_status()

    def sync(self) -> None:
        """Copy measured joints and scene object poses into the shadow world (teleport; no physics)."""
        robot, cid = self.shadow.robot, self.shadow.client
        if self.js is not None:
            for name, j in zip(list(self.spec.joint_names) + list(self.spec.gripper.joint_names),
                               robot.joints + robot.fingers):
                q = joint_vector(self.js, [name])
                if q is not None:
                    p.resetJointState(robot.body, j, float(q[0]), physicsClientId=cid)
        if self.scene is not None:
            for name, pose in self.scene.get("objects", {}).items():
                obj = self.shadow.objects.get(name)
                if obj is not None:
                    p.resetBasePositionAndOrientation(obj.body, pose["pos"], pose["quat"], physicsClientId=cid)

    def finish(self, state: str) -> None:
        self.prop_pub.publish(m.JointTrajectory(m.Header(), list(self.spec.joint_names), []))  # stop
        self.state = state
        self.node.log.info(f"{state}: {self.instruction!r} after {self.ticks} ticks")
        self.publish_status()

    def refuse(self, text: str, reason: str) -> None:
        self.instruction, self.state, self.reason = text, "refused", reason
        self.node.log.warning(f"refused {text!r}: {reason}")
        self.publish_status()

    def publish_status(self) -> None:
        plan = self.inst.plan.calls() if self.inst is not None else []
        step = int(getattr(self.policy, "plan_step", 0))
        self.status_pub.publish(m.String(json.dumps({
            "t": time.time(), "state": self.state, "instruction": self.instruction, "policy": self.policy_name,
            "agent": self.agent.preset if self.agent else None,
            "plan": plan, "plan_step": step, "ticks": self.ticks, "reason": self.reason,
            "scene_ready": self.scene is not None})))

    def close(self) -> None:
        self.shadow.close()
