"""Topic names of the Keystone ROS graph (one place, so nodes, launch files and tests agree).

Never publish on `CONTROLLER_TRAJECTORY` from anything but the safety node. `SIM_TRUTH` is the simulator's
answer sheet, for scoring in tests only: no node of the stack may subscribe to it (tests check the live graph).
"""

JOINT_STATES = "/joint_states"  # sensor_msgs/JointState, sim_bridge / robot driver, 100 Hz
CAMERA_IMAGE = "/camera/front/image_raw"  # sensor_msgs/Image rgb8
CAMERA_DEPTH = "/camera/front/depth/image_raw"  # sensor_msgs/Image 32FC1 metres (16UC1 mm accepted), same stamps
CAMERA_INFO = "/camera/front/camera_info"  # sensor_msgs/CameraInfo (pixel centres at integer coordinates)
CONTROLLER = "joint_trajectory_controller"  # the ros2_control controller's name (safety: `controller` parameter)
CONTROLLER_TRAJECTORY = f"/{CONTROLLER}/joint_trajectory"  # trajectory_msgs/JointTrajectory
CONTROLLER_ACTION = f"/{CONTROLLER}/follow_joint_trajectory"  # control_msgs/action/FollowJointTrajectory
PROPOSED_TRAJECTORY = "/keystone/proposed_trajectory"  # policy -> safety
INSTRUCTION = "/keystone/instruction"  # std_msgs/String
ESTOP = "/keystone/estop"  # std_msgs/Bool, true latches a stop
ESTOP_RESET = "/keystone/estop_reset"  # std_msgs/Bool, true releases the latch
SAFETY_EVENTS = "/keystone/safety_events"  # std_msgs/String JSON, one per intervention
STATUS = "/keystone/status"  # std_msgs/String JSON from the policy node
# std_msgs/String JSON from the perception node, latched: {"stamp", "frame_id", "objects": [...]} or a "failure"
SCENE = "/keystone/scene"
PERCEPTION_STATUS = "/keystone/perception/status"  # std_msgs/String JSON, latched: frame counts, latency (ms)
# std_msgs/String JSON from sim_bridge, latched: task, seed, instruction, plan, true object poses, success.
# For scoring in tests only; no node of the stack may subscribe to it.
SIM_TRUTH = "/keystone/sim_truth"
GRIPPER_TRAJECTORY = "/gripper_controller/joint_trajectory"  # trajectory_msgs/JointTrajectory, finger opening (m)
SAFETY_STATE = "/keystone/safety_state"  # std_msgs/String "ok" | "estop", latched, from the safety node
DIAGNOSTICS = "/diagnostics"  # diagnostic_msgs/DiagnosticArray, 1 Hz from every Keystone node
TF_STATIC = "/tf_static"  # tf2_msgs/TFMessage, latched: camera (perception) and tool (policy) frames
SAFETY_RESET = "/keystone/safety/reset"  # std_srvs/Trigger: release a latched e-stop or controller fault
POLICY_CANCEL = "/keystone/policy/cancel"  # std_srvs/Trigger: stop the current instruction (the arm holds)


def controller_topics(controller: str) -> tuple[str, str]:
    """(trajectory topic, FollowJointTrajectory action) of a joint_trajectory_controller named `controller`."""
    from keystone_vla.errors import ConfigError

    name = controller.strip().strip("/")
    if not name or any(c in name for c in " \t~{}") or "//" in name:
        raise ConfigError(f"controller name {controller!r} is not a valid ROS name; use e.g. "
                          f"'{CONTROLLER}' or 'scaled_joint_trajectory_controller'")
    return f"/{name}/joint_trajectory", f"/{name}/follow_joint_trajectory"
