"""Topic names of the Keystone ROS graph (one place, so nodes, launch files and tests agree).

Never publish on `CONTROLLER_TRAJECTORY` from anything but the safety node.
"""

JOINT_STATES = "/joint_states"  # sensor_msgs/JointState, sim_bridge / robot driver, 100 Hz
CAMERA_IMAGE = "/camera/front/image_raw"  # sensor_msgs/Image rgb8
CAMERA_INFO = "/camera/front/camera_info"  # sensor_msgs/CameraInfo
CONTROLLER_TRAJECTORY = "/joint_trajectory_controller/joint_trajectory"  # trajectory_msgs/JointTrajectory
PROPOSED_TRAJECTORY = "/keystone/proposed_trajectory"  # policy -> safety
INSTRUCTION = "/keystone/instruction"  # std_msgs/String
ESTOP = "/keystone/estop"  # std_msgs/Bool, true latches a stop
ESTOP_RESET = "/keystone/estop_reset"  # std_msgs/Bool, true releases the latch
SAFETY_EVENTS = "/keystone/safety_events"  # std_msgs/String JSON, one per intervention
STATUS = "/keystone/status"  # std_msgs/String JSON from the policy node
SCENE = "/keystone/scene"  # std_msgs/String JSON (task, seed, object poses) from sim_bridge, latched
GRIPPER_TRAJECTORY = "/gripper_controller/joint_trajectory"  # trajectory_msgs/JointTrajectory, finger opening (m)
SAFETY_STATE = "/keystone/safety_state"  # std_msgs/String "ok" | "estop", latched, from the safety node
