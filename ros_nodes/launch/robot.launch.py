"""ROS 2 launch file: Keystone on a real arm driven by ros2_control (perception + safety + policy, optional speech).

    ros2 launch keystone_vla robot.launch.py arm:=panda policy:=keystone-base \\
        controller:=scaled_joint_trajectory_controller

Start the robot driver (it publishes /joint_states and runs the trajectory controller) and the RGB-D camera driver
first (colour, 32FC1 or 16UC1 depth and camera_info, remapped to /camera/front/... if needed). The perception node
needs the camera's calibrated pose: set `camera_pose` in config/robot.yaml (it refuses to start without it). The
safety node is the controller's only client: FollowJointTrajectory goals on /<controller>/follow_joint_trajectory
when the controller offers the action, else /<controller>/joint_trajectory (controller_interface in
config/robot.yaml). Reset a latched e-stop or controller fault with the /keystone/safety/reset service
(std_srvs/Trigger); cancel an instruction with /keystone/policy/cancel.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def config_path(name: str) -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return os.path.join(get_package_share_directory("keystone_vla"), "config", name)
    except Exception:  # running from the source tree
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", name)


def generate_launch_description() -> LaunchDescription:
    params = LaunchConfiguration("params_file")
    arm = LaunchConfiguration("arm")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=config_path("robot.yaml")),
        DeclareLaunchArgument("arm", default_value="panda"),
        DeclareLaunchArgument("policy", default_value="keystone-base"),
        DeclareLaunchArgument("controller", default_value="joint_trajectory_controller"),
        DeclareLaunchArgument("speech", default_value="false"),
        DeclareLaunchArgument("wav_dir", default_value=""),
        Node(package="keystone_vla", executable="perception", name="perception", output="screen",
             parameters=[params]),
        Node(package="keystone_vla", executable="safety", name="safety", output="screen",
             parameters=[params, {"arm": arm, "controller": LaunchConfiguration("controller")}]),
        Node(package="keystone_vla", executable="policy", name="policy", output="screen",
             parameters=[params, {"policy": LaunchConfiguration("policy"), "arm": arm}]),
        Node(package="keystone_vla", executable="speech", name="speech", output="screen",
             condition=IfCondition(LaunchConfiguration("speech")),
             parameters=[params, {"wav_dir": LaunchConfiguration("wav_dir")}]),
    ])
