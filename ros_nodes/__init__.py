"""Keystone as a ROS 2 citizen: message types, the transport (rclpy | Cyclone DDS), nodes and launch files.

Nodes (`keystone ros node NAME`, or `ros2 run keystone_vla NAME` where ROS 2 is installed): `sim_bridge`,
`policy`, `safety`, `speech`. Only the safety node may publish on the trajectory controller's topic.
Importing this package must stay cheap: no DDS participant, simulator or model is created at import time.
"""
