"""Our Cyclone DDS message types serialise to exactly the CDR bytes of rosbags' ROS 2 Humble typestore."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from keystone_vla.ros_nodes import msgs as m

TS = get_typestore(Stores.ROS2_HUMBLE)


def _ros(type_name: str, /, **kw):
    return TS.types[type_name](**kw)


def _r_time(sec=0, nanosec=0):
    return _ros("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def _r_header(sec, nanosec, frame):
    return _ros("std_msgs/msg/Header", stamp=_r_time(sec, nanosec), frame_id=frame)


rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
metres = np.linspace(0.3, 1.5, 4 * 5, dtype=np.float32).reshape(4, 5)
CASES = [
    ("std_msgs/msg/String", m.String("place the red block on the blue block"),
     _ros("std_msgs/msg/String", data="place the red block on the blue block")),
    ("std_msgs/msg/String", m.String(""), _ros("std_msgs/msg/String", data="")),
    ("std_msgs/msg/Bool", m.Bool(True), _ros("std_msgs/msg/Bool", data=True)),
    ("builtin_interfaces/msg/Time", m.Time(1700000000, 123456789), _r_time(1700000000, 123456789)),
    ("builtin_interfaces/msg/Duration", m.Duration(-2, 5), _ros("builtin_interfaces/msg/Duration", sec=-2, nanosec=5)),
    ("std_msgs/msg/Header", m.Header(m.Time(3, 4), "base_link"), _r_header(3, 4, "base_link")),
    ("sensor_msgs/msg/JointState",
     m.JointState(m.Header(m.Time(1, 2), "base"), ["j1", "joint_two"], [0.5, -1.25], [0.1], []),
     _ros("sensor_msgs/msg/JointState", header=_r_header(1, 2, "base"), name=["j1", "joint_two"],
          position=np.array([0.5, -1.25]), velocity=np.array([0.1]), effort=np.array([], dtype=np.float64))),
    ("sensor_msgs/msg/Image", m.Image.from_rgb(rgb, m.Header(m.Time(7, 8), "front")),
     _ros("sensor_msgs/msg/Image", header=_r_header(7, 8, "front"), height=4, width=5, encoding="rgb8",
          is_bigendian=0, step=15, data=rgb.reshape(-1).copy())),
    ("sensor_msgs/msg/Image", m.Image.from_depth(metres, m.Header(m.Time(7, 8), "front_depth")),
     _ros("sensor_msgs/msg/Image", header=_r_header(7, 8, "front_depth"), height=4, width=5, encoding="32FC1",
          is_bigendian=0, step=20, data=np.frombuffer(metres.astype("<f4").tobytes(), np.uint8).copy())),
    ("sensor_msgs/msg/CameraInfo",
     m.CameraInfo(m.Header(m.Time(9, 10), "front_optical"), 128, 96, "plumb_bob", [0.0] * 5,
                  [100.0, 0, 64, 0, 100.0, 48, 0, 0, 1], [1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                  [100.0, 0, 64, 0, 0, 100.0, 48, 0, 0, 0, 1, 0], 1, 2, m.RegionOfInterest(1, 2, 3, 4, True)),
     _ros("sensor_msgs/msg/CameraInfo", header=_r_header(9, 10, "front_optical"), height=128, width=96,
          distortion_model="plumb_bob", d=np.zeros(5), k=np.array([100.0, 0, 64, 0, 100.0, 48, 0, 0, 1]),
          r=np.eye(3).reshape(-1), p=np.array([100.0, 0, 64, 0, 0, 100.0, 48, 0, 0, 0, 1, 0]), binning_x=1,
          binning_y=2, roi=_ros("sensor_msgs/msg/RegionOfInterest", x_offset=1, y_offset=2, height=3, width=4,
                                do_rectify=True))),
    ("trajectory_msgs/msg/JointTrajectory",
     m.JointTrajectory(m.Header(m.Time(5, 6), ""), ["a", "b"],
                       [m.JointTrajectoryPoint([0.1, 0.2], [], [], [], m.Duration(0, 100_000_000)),
                        m.JointTrajectoryPoint([0.3, 0.4], [1.0, 2.0], [], [], m.Duration(1, 0))]),
     _ros("trajectory_msgs/msg/JointTrajectory", header=_r_header(5, 6, ""), joint_names=["a", "b"], points=[
         _ros("trajectory_msgs/msg/JointTrajectoryPoint", positions=np.array([0.1, 0.2]),
              velocities=np.array([], dtype=np.float64), accelerations=np.array([], dtype=np.float64),
              effort=np.array([], dtype=np.float64),
              time_from_start=_ros("builtin_interfaces/msg/Duration", sec=0, nanosec=100_000_000)),
         _ros("trajectory_msgs/msg/JointTrajectoryPoint", positions=np.array([0.3, 0.4]),
              velocities=np.array([1.0, 2.0]), accelerations=np.array([], dtype=np.float64),
              effort=np.array([], dtype=np.float64),
              time_from_start=_ros("builtin_interfaces/msg/Duration", sec=1, nanosec=0))])),
    ("trajectory_msgs/msg/JointTrajectory", m.JointTrajectory(),
     _ros("trajectory_msgs/msg/JointTrajectory", header=_r_header(0, 0, ""), joint_names=[], points=[])),
]


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_cdr_bytes_identical_to_rosbags(name, ours, theirs):
    mine = ours.serialize()
    ref = bytes(TS.serialize_cdr(theirs, name))
    assert mine == ref
    assert mine[:4] == b"\x00\x01\x00\x00"  # CDR little endian, XCDR1 (what rmw_cyclonedds uses)
    back = type(ours).deserialize(ref)  # and we read what ROS writes
    assert back.serialize() == ref


def test_every_ros_message_type_is_covered():
    assert {c[0] for c in CASES} >= set(m.MESSAGES) - {"sensor_msgs/msg/RegionOfInterest",
                                                       "trajectory_msgs/msg/JointTrajectoryPoint"}
    for name, cls in m.MESSAGES.items():
        pkg, _, typ = name.split("/")
        assert cls.__idl_typename__ == f"{pkg}.msg.dds_.{typ}_"
        assert m.to_ros_type_name(cls) == name


def test_image_round_trip_returns_pixels():
    img = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    msg = m.Image.deserialize(m.Image.from_rgb(img).serialize())
    assert (msg.height, msg.width, msg.step, msg.encoding) == (128, 128, 384, "rgb8")
    np.testing.assert_array_equal(msg.to_rgb(), img)


def test_depth_images_carry_metres():
    depth = np.array([[0.5, np.nan, 1.25], [2.0, 0.75, 0.3]], dtype=np.float32)
    msg = m.Image.deserialize(m.Image.from_depth(depth, m.Header(m.Time(7, 8), "front")).serialize())
    assert (msg.height, msg.width, msg.step, msg.encoding) == (2, 3, 12, "32FC1")
    np.testing.assert_array_equal(msg.to_depth(), depth)
    mm = np.array([[500, 0], [1250, 65535]], dtype="<u2")  # RGB-D drivers: millimetres, 0 = no return
    raw = m.Image(m.Header(), 2, 2, "16UC1", 0, 4, mm.tobytes())
    np.testing.assert_allclose(raw.to_depth(), [[0.5, np.nan], [1.25, 65.535]], rtol=1e-6)
    with pytest.raises(Exception, match="32FC1"):
        m.Image.from_rgb(np.zeros((2, 2, 3), np.uint8)).to_depth()


def test_time_from_seconds():
    t = m.Time.from_seconds(12.25)
    assert (t.sec, t.nanosec) == (12, 250_000_000)
    assert m.Duration.from_seconds(0.1).to_seconds() == pytest.approx(0.1)
