"""ROS 2 launch file: the simulated Keystone graph (sim_bridge + perception + safety + policy, optional speech).

    ros2 launch keystone_vla sim.launch.py task:=stack seed:=3 policy:=keystone-base

sim_bridge stands in for the robot driver and the RGB-D camera; perception turns the camera topics into the scene
graph the policy grounds and acts on (the camera pose is its `camera_pose` parameter in config/sim.yaml). Simulator
truth goes only to /keystone/sim_truth, which no node subscribes to. Parameters come from config/sim.yaml
(override with params_file:=...). Without ROS 2, `keystone ros up --sim` starts the same graph as processes over
Cyclone DDS. Only the safety node publishes on the controller topic.
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
        DeclareLaunchArgument("params_file", default_value=config_path("sim.yaml")),
        DeclareLaunchArgument("task", default_value="pick_place"),
        DeclareLaunchArgument("seed", default_value="0"),
        DeclareLaunchArgument("arm", default_value="panda"),
        DeclareLaunchArgument("policy", default_value="keystone-base"),
        DeclareLaunchArgument("speech", default_value="false"),
        DeclareLaunchArgument("wav_dir", default_value=""),
        Node(package="keystone_vla", executable="sim_bridge", name="sim_bridge", output="screen",
             parameters=[params, {"task": LaunchConfiguration("task"), "seed": LaunchConfiguration("seed"),
                                  "arm": arm}]),
        Node(package="keystone_vla", executable="perception", name="perception", output="screen",
             parameters=[params]),
        Node(package="keystone_vla", executable="safety", name="safety", output="screen",
             parameters=[params, {"arm": arm}]),
        Node(package="keystone_vla", executable="policy", name="policy", output="screen",
             parameters=[params, {"policy": LaunchConfiguration("policy"), "arm": arm}]),
        Node(package="keystone_vla", executable="speech", name="speech", output="screen",
             condition=IfCondition(LaunchConfiguration("speech")),
             parameters=[{"wav_dir": LaunchConfiguration("wav_dir")}]),
    ])
