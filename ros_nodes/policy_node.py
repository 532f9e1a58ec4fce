"""policy node: turns an instruction into joint-trajectory proposals for the safety node, from what the cell sees.

Subscribes `/joint_states`, the front colour and depth images and camera info, `/tf_static` (the camera's pose,
which the perception node broadcasts from its calibration), `/keystone/instruction`, `/keystone/scene` (the
perception node's scene graphs) and the safety state. The agent (`keystone-base`, `scripted` or a VLA checkpoint
folder, loaded by `keystone_vla.policies.registry`) reads objects only through its scene source, a
`keystone_vla.perception.scene_source.DetectionScene` fed with every scene graph that arrives (a message with a
``failure`` is not fed: the last good graph ages out after `scene_max_age` s and the agent holds the arm, saying
why). Once the camera info and the `camera_frame` transform have arrived, the depth frame that matches each colour
frame's stamp goes into the observation, and the scene source measures from it what `keystone eval` measures:
the parts the hand hides (their poses are kept, a released part is confirmed only when seen) and the held part's
height in the fingers. Stamps and the observation's timestamp are one clock: header stamps, wall-clock ROS time.

Each control tick the node builds the `Observation` (front image; state = arm joints + gripper opening;
`ee_pose` = forward kinematics of the measured joints), asks the agent for the 7-D action, turns it into joint
targets with inverse kinematics and publishes a short JointTrajectory (arm + finger joints) on
`/keystone/proposed_trajectory`, plus status JSON on `/keystone/status` (state, plan, step, `scene_source`,
`hold_reason`, ...). FK and IK come from `keystone_vla.kinematics` (the arm's URDF alone, set to the measured
joints each tick): nothing on this node's import path loads the simulator, so it runs unchanged on a real cell.

An instruction starts `agent.begin(text, observation, scene_source, robot)`: a plan that does not ground in the
perceived scene (`GroundingError`) is published as state ``refused`` with the reason, and nothing moves. The run
ends ``succeeded`` once the agent is on its plan's last step and that step's effect holds in the perceived scene
(`keystone_vla.perception.relations.effect_holds`) with the hand open, for `success_ticks` ticks in a row;
``halted`` with the agent's reason when it gives up on an untrustworthy scene, or when the safety node reports a
controller fault (safety state ``fault: ...``: the controller aborted or lost a trajectory); ``cancelled`` when the
operator cancels (the `~/cancel` std_srvs/Trigger service); ``failed`` after `max_ticks`. Each end publishes an
empty trajectory (stop). A plan the agent cannot ground (GroundingError, or a question back to the operator) is
``refused`` with the reason (an `AskBack` also as ``question``: "did you mean ...?"); nothing moves.

It never publishes on the controller topics (every proposal goes through the safety node), never reads simulator
truth (`/keystone/sim_truth` is for scoring in tests), and cannot run the oracle, which needs the simulator.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError, KeystoneError
from keystone_vla.perception.objects import DetectedObject
from keystone_vla.perception.scene_source import DetectionScene
from keystone_vla.ros_nodes import interfaces as itf
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import joint_vector, make_trajectory
from keystone_vla.ros_nodes.diagnostics import Diagnostics
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, LATCHED_QOS, SENSOR_QOS, STATIC_LISTENER_QOS, Node
from keystone_vla.types import Observation

CAMERA = "front"
DEPTH_SLOP = 0.005  # s: largest colour / depth stamp difference for a pair (as the perception node pairs them)
#: policies that read the simulator themselves and so cannot run on topics
SIMULATOR_POLICIES = ("oracle",)


def tool_frame(kin: Any) -> m.TransformStamped:
    """The static transform flange -> grasp frame (the tool frame) of the arm, from its URDF."""
    from keystone_vla.perception.tracker import pose_matrix
    from keystone_vla.ros_nodes.convert import matrix_to_pose

    flange = kin.flange_link
    t = np.linalg.inv(pose_matrix(kin.link_pose(flange))) @ pose_matrix(kin.link_pose(kin.spec.ee_link))
    return m.TransformStamped(m.Header.now(flange), kin.spec.ee_link, m.Transform.from_pose(matrix_to_pose(t)))


class PolicyNode:
    def __init__(self, node: Node) -> None:
        from keystone_vla.kinematics import ActionIntegrator, ArmKinematics
        from keystone_vla.policies.registry import agent_config_of, load_policy
        from keystone_vla.robots import get_robot

        self.node = node
        from keystone_vla.robots import ROBOTS

        self.policy_name = node.declare_parameter("policy", "keystone-base",
                                                  "keystone-base, scripted or a VLA checkpoint folder")
        arm = node.declare_parameter("arm", "panda", "the arm (robot spec)", choices=tuple(ROBOTS))
        rate = float(node.declare_parameter("control_rate", 10.0, "control ticks per second (Hz)", range=(1.0, 100.0)))
        self.horizon = float(node.declare_parameter("horizon", 0.1, "time_from_start of each proposal (s)",
                                                    range=(0.01, 2.0)))
        self.max_point_step = float(node.declare_parameter(
            "max_point_step", 0.2, "largest joint change between proposal points (rad)", range=(0.01, 1.0)))
        self.max_ticks = int(node.declare_parameter("max_ticks", 600, "control ticks before a run has failed",
                                                    range=(1, 1_000_000)))
        self.success_ticks = int(node.declare_parameter(
            "success_ticks", 10, "ticks in a row the last step's effect must hold", range=(1, 1000)))
        scene_max_age = float(node.declare_parameter("scene_max_age", 0.5, "an older scene graph holds the arm (s)",
                                                     range=(0.01, 10.0)))
        preset = str(node.declare_parameter("agent", "", "agent preset (shipped, raw); empty: the checkpoint's "
                                            "agent.json")) or None
        if self.policy_name in SIMULATOR_POLICIES:
            raise ConfigError(f"policy {self.policy_name!r} reads the simulator's true state and cannot run in the "
                              "ROS policy node, which sees the cell only through its topics; use keystone-base, "
                              "scripted or a VLA checkpoint folder (keystone sim run runs the oracle)")
        self.agent = agent_config_of(self.policy_name, preset)
        self.policy = load_policy(self.policy_name, self.agent)
        if getattr(self.policy, "begin", None) is None:
            raise ConfigError(f"policy {self.policy_name!r} has no begin(instruction, observation, scene_source, "
                              "robot): the ROS policy node drives scene-grounded agents only (keystone-base, "
                              "scripted, a VLA checkpoint folder)")
        self.spec = get_robot(arm)
        self.kin = ArmKinematics(self.spec)  # the arm's URDF only: FK of the measured joints, IK of the actions
        self.integrator = ActionIntegrator(self.kin)
        self.camera_frame = str(node.declare_parameter(
            "camera_frame", "front_camera_optical", "the camera's optical frame on /tf_static (the perception node's "
            "calibration): with its camera info and depth frames the hidden and the held parts are measured"))
        self.scene = DetectionScene(max_age=scene_max_age, camera_name=CAMERA)
        self.scene_ready = False
        self._announced = False  # the status has said `ready`
        self.scene_failure: str | None = None  # the perception node's latest failure, if its latest message was one
        self.js: m.JointState | None = None
        self.image: np.ndarray | None = None
        self.image_stamp = float("nan")
        self.depth: tuple[float, np.ndarray] | None = None  # (stamp, metres) of the latest depth frame
        self.camera_info: m.CameraInfo | None = None
        self.camera_to_base: np.ndarray | None = None  # from /tf_static
        self.instruction = ""
        self.plan: Any = None  # the grounded plan of the current (or last) run; None when refused
        self.state = "idle"
        self.ticks = 0
        self.done_ticks = 0
        self.reason = ""
        self.estopped = False  # paused while the safety node reports a latched e-stop
        self.safety_fault: str | None = None  # the safety node's latched controller fault
        self.question: str | None = None  # what the agent asks back when it cannot ground an instruction
        self.prop_pub = node.create_publisher(m.JointTrajectory, topics.PROPOSED_TRAJECTORY, DEFAULT_QOS)
        self.status_pub = node.create_publisher(m.String, topics.STATUS, LATCHED_QOS)
        node.create_subscription(m.JointState, topics.JOINT_STATES, self.on_joint_state, SENSOR_QOS)
        node.create_subscription(m.Image, topics.CAMERA_IMAGE, self.on_image, SENSOR_QOS)
        node.create_subscription(m.Image, topics.CAMERA_DEPTH, self.on_depth, SENSOR_QOS)
        node.create_subscription(m.CameraInfo, topics.CAMERA_INFO, self.on_camera_info, SENSOR_QOS)
        node.create_subscription(m.TFMessage, topics.TF_STATIC, self.on_tf_static, STATIC_LISTENER_QOS)
        node.create_subscription(m.String, topics.SCENE, self.on_scene, LATCHED_QOS)
        node.create_subscription(m.String, topics.INSTRUCTION, self.on_instruction, DEFAULT_QOS)
        node.create_subscription(m.String, topics.SAFETY_STATE, self.on_safety_state, LATCHED_QOS)
        node.create_service(itf.TRIGGER, topics.POLICY_CANCEL, self.on_cancel)
        node.create_timer(1.0 / rate, self.tick)
        self.diag = Diagnostics(node, "policy", lambda: self.state + (f": {self.reason}" if self.reason else ""))
        self.diag.values = lambda: {"instruction": self.instruction, "ticks": self.ticks, "ready": self.ready,
                                    "hold_reason": self.policy.hold_reason or ""}
        self.tf_pub = node.create_publisher(m.TFMessage, topics.TF_STATIC, LATCHED_QOS)
        self.tf_pub.publish(m.TFMessage([tool_frame(self.kin)]))
        self.publish_status()

    # ---- inputs -------------------------------------------------------------------------------------------
    def on_joint_state(self, msg: m.JointState) -> None:
        self.js = msg
        self._announce_ready()

    def on_safety_state(self, msg: m.String) -> None:
        self.estopped = msg.data == "estop"
        self.safety_fault = msg.data if msg.data.startswith("fault") else None
        if self.safety_fault and self.state == "executing":
            self.finish("halted", f"safety node: controller {msg.data}")

    def on_cancel(self, _request: itf.Trigger_Request) -> itf.Trigger_Response:
        """The operator's cancel (std_srvs/Trigger): the current run ends ``cancelled`` and the arm holds."""
        if self.state != "executing":
            return itf.Trigger_Response(False, f"nothing to cancel (state {self.state})")
        self.finish("cancelled", "cancelled by the operator")
        return itf.Trigger_Response(True, f"cancelled {self.instruction!r} after {self.ticks} ticks")

    def on_image(self, msg: m.Image) -> None:
        self.image, self.image_stamp = msg.to_rgb(), msg.header.stamp.to_seconds()
        self._announce_ready()

    def on_depth(self, msg: m.Image) -> None:
        try:
            self.depth = (msg.header.stamp.to_seconds(), msg.to_depth())
        except KeystoneError as exc:  # a wrong encoding: no depth this frame (no hidden-part or held-height check)
            self.depth = None
            self.node.log.warning(f"ignored a depth frame on {topics.CAMERA_DEPTH}: {exc}")

    def on_camera_info(self, msg: m.CameraInfo) -> None:
        known = self.camera_info
        self.camera_info = msg
        if known is None or (known.width, known.height, list(known.k)) != (msg.width, msg.height, list(msg.k)):
            self._update_camera()

    def on_tf_static(self, msg: m.TFMessage) -> None:
        from keystone_vla.perception.tracker import pose_matrix

        for t in msg.transforms:
            if t.child_frame_id == self.camera_frame:
                tr, q = t.transform.translation, t.transform.rotation
                self.camera_to_base = pose_matrix([tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w])
                self._update_camera()

    def _update_camera(self) -> None:
        """The scene source's camera model, once both the intrinsics and the pose are known."""
        from keystone_vla.perception.cameras import PinholeCamera
        from keystone_vla.ros_nodes.convert import camera_info_mapping

        if self.camera_info is None or self.camera_to_base is None:
            return
        try:
            self.scene.camera = PinholeCamera.from_camera_info(camera_info_mapping(self.camera_info),
                                                               camera_to_world=self.camera_to_base)
        except ConfigError as exc:
            self.scene.camera = None
            self.node.log.warning(f"camera model not built from {topics.CAMERA_INFO}: {exc}")

    @property
    def ready(self) -> bool:
        """Joint states, a camera image and a scene graph have arrived: an instruction can be grounded."""
        return self.js is not None and self.image is not None and self.scene_ready

    def _announce_ready(self) -> None:
        if self.ready and not self._announced:
            self._announced = True
            self.publish_status()

    def on_scene(self, msg: m.String) -> None:
        try:
            data = json.loads(msg.data)
            failure = data.get("failure")
            objects = [] if failure else [DetectedObject.from_dict(o) for o in data["objects"]]
            stamp = float(data["stamp"])
        except (ValueError, KeyError, TypeError, KeystoneError) as exc:
            self.node.log.warning(f"ignored a malformed scene graph on {topics.SCENE}: {exc}")
            return
        self.scene_failure = failure
        if failure:
            return
        self.scene.feed(objects, stamp)
        self.scene_ready = True
        self._announce_ready()

    def on_instruction(self, msg: m.String) -> None:
        text = msg.data.strip()
        if not text:  # e.g. a speech front end that heard nothing: refused, never run
            from keystone_vla.perception.grounding import check_instruction

            refusal = check_instruction(text)
            assert refusal is not None  # empty text is always refused
            self.refuse(msg.data, refusal.reason)
            return
        if self.safety_fault:
            self.refuse(text, f"the safety node holds the arm ({self.safety_fault}); call {topics.SAFETY_RESET} "
                              "once the cause is fixed")
            return
        if self.js is None:
            self.refuse(text, f"no joint states yet on {topics.JOINT_STATES}; is the robot driver up?")
            return
        if self.image is None:
            self.refuse(text, f"no camera image yet on {topics.CAMERA_IMAGE}; is the camera driver up?")
            return
        self.sync()
        # actions are deltas on the commanded pose: start it at the measured pose, never at a stale one
        self.integrator.reanchor()
        try:
            plan = self.policy.begin(text, self.observation(text), self.scene, self.spec)
        except KeystoneError as exc:  # GroundingError (unknown / ambiguous / unreachable object, no scene), a
            # question back to the operator (an ask-back carries `question`), ...: nothing moves
            from keystone_vla.perception.grounding import AskBack

            self.refuse(text, str(exc), str(exc) if isinstance(exc, AskBack) else None)
            return
        self.question = None
        self.plan = plan
        self.instruction, self.state, self.ticks, self.done_ticks, self.reason = text, "executing", 0, 0, ""
        self.node.log.info(f"executing {text!r}: plan {plan.calls()}")
        self.publish_status()

    # ---- control loop -------------------------------------------------------------------------------------
    def observation(self, instruction: str) -> Observation:
        """The agent's view of this tick: front image, arm joints + gripper opening, FK end-effector pose."""
        kin = self.kin
        depth = {}
        if self.depth is not None and self.image is not None and abs(self.depth[0] - self.image_stamp) <= DEPTH_SLOP:
            depth = {CAMERA: self.depth[1]}  # the colour frame's own depth frame, never an older one
        return Observation(images={CAMERA: self.image} if self.image is not None else {},
                           state=np.append(kin.joint_positions(), kin.gripper_opening()).astype(np.float32),
                           ee_pose=kin.ee_pose(), instruction=instruction, depth=depth, timestamp=time.time())

    def tick(self) -> None:
        if self.state != "executing" or self.js is None or self.estopped:
            return
        from keystone_vla.policies.base import check_action

        self.sync()
        obs = self.observation(self.instruction)
        try:
            action = check_action(self.policy.act(obs), self.policy_name)
        except KeystoneError as exc:
            self.finish("failed", str(exc))
            return
        if self.policy.halted:
            self.finish("halted", str(self.policy.halted))
            return
        self.done_ticks = self.done_ticks + 1 if self.plan_complete(obs) else 0
        if self.done_ticks >= self.success_ticks:
            self.finish("succeeded")
            return
        if self.ticks >= self.max_ticks:
            self.finish("failed", f"the plan was not complete after max_ticks={self.max_ticks} control ticks")
            return
        q_target, grip = self.integrator.command(action)
        g = self.spec.gripper
        opening = g.open_position + grip * (g.closed_position - g.open_position)
        names = list(self.spec.joint_names) + list(g.joint_names)
        # a big IK jump (e.g. a wrist turn) goes out as several points, each within the shield's max_step
        q_now = self.kin.joint_positions().astype(np.float64)
        n = max(1, int(np.ceil(np.abs(q_target - q_now).max() / self.max_point_step)))
        fractions = np.arange(1, n + 1) / n
        arm = q_now + fractions[:, None] * (q_target - q_now)
        positions = np.hstack([arm, np.full((n, len(g.joint_names)), opening)])
        self.prop_pub.publish(make_trajectory(names, positions, self.horizon * fractions))
        self.ticks += 1
        if self.ticks % 5 == 0:
            self.publish_status()

    def plan_complete(self, obs: Observation) -> bool:
        """The agent is on its last step, whose effect holds in this tick's perceived scene, with the hand open
        (past the tracker's release threshold, so the part's pose is seen, not carried by the hand)."""
        from keystone_vla.perception.relations import effect_holds
        from keystone_vla.perception.tracker import EMPTY_OPEN

        plan, view = self.policy.plan, getattr(self.policy, "view", None)
        if plan is None or not plan.steps or view is None or view.failure:
            return False
        last = len(plan.steps) - 1
        return (self.policy.plan_step == last and float(obs.state[-1]) > EMPTY_OPEN
                and effect_holds(plan.steps[last], view.objects))

    def sync(self) -> None:
        """Set the kinematic model to the measured arm and finger joints (a joint missing from the message keeps
        its last value)."""
        if self.js is None:
            return
        q = self.kin.joint_positions().astype(np.float64)
        for i, name in enumerate(self.spec.joint_names):
            v = joint_vector(self.js, [name])
            if v is not None:
                q[i] = v[0]
        fingers = joint_vector(self.js, list(self.spec.gripper.joint_names))
        self.kin.set_joints(q, fingers)

    def finish(self, state: str, reason: str = "") -> None:
        self.prop_pub.publish(m.JointTrajectory(m.Header(), list(self.spec.joint_names), []))  # stop
        self.state, self.reason = state, reason
        self.node.log.info(f"{state}: {self.instruction!r} after {self.ticks} ticks" + (f" ({reason})" if reason else ""))
        if reason and state != "succeeded":
            self.diag.error(reason)
        self.publish_status()

    def refuse(self, text: str, reason: str, question: str | None = None) -> None:
        self.instruction, self.state, self.reason, self.plan = text, "refused", reason, None
        self.question = question
        self.node.log.warning(f"refused {text!r}: {reason}")
        self.publish_status()

    def status(self) -> dict[str, Any]:
        stamp = self.scene.stamp
        return {
            "t": time.time(), "state": self.state, "instruction": self.instruction, "policy": self.policy_name,
            "agent": self.agent.preset if self.agent else None,
            "plan": self.plan.calls() if self.plan is not None else [],
            "plan_step": int(self.policy.plan_step), "ticks": self.ticks, "max_ticks": self.max_ticks,
            "reason": self.reason, "question": self.question, "ready": self.ready, "scene_ready": self.scene_ready,
            "scene_source": self.scene.name, "privileged": bool(self.scene.privileged),
            "hold_reason": self.policy.hold_reason, "holds": int(self.policy.holds), "scene_failure": self.scene_failure,
            "scene_age": round(time.time() - stamp, 3) if stamp is not None else None,
            "depth_checks": self.scene.camera is not None}

    def publish_status(self) -> None:
        self.status_pub.publish(m.String(json.dumps(self.status())))

    def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if close is not None:
            close()
        self.kin.close()
