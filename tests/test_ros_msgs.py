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
    covered = {c[0] for c in CASES} | {"geometry_msgs/msg/TransformStamped", "tf2_msgs/msg/TFMessage",
                                        "geometry_msgs/msg/Twist", "diagnostic_msgs/msg/DiagnosticArray",
                                        "action_msgs/msg/GoalStatusArray"}  # MSG_CASES, below
    nested = {"sensor_msgs/msg/RegionOfInterest", "trajectory_msgs/msg/JointTrajectoryPoint", "geometry_msgs/msg/Vector3",
              "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/Transform", "diagnostic_msgs/msg/KeyValue",
              "diagnostic_msgs/msg/DiagnosticStatus", "unique_identifier_msgs/msg/UUID", "action_msgs/msg/GoalInfo",
              "action_msgs/msg/GoalStatus"}  # inside the covered ones
    assert covered >= set(m.MESSAGES) - nested
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


# ---- services and actions: the definitions as upstream writes them (control_msgs 4.x/5.x = Humble/Jazzy, std_srvs,
# action_msgs), registered in a rosbags typestore; what rosidl generates for an action is spelled out
from rosbags.typesys import get_types_from_msg  # noqa: E402

from keystone_vla.ros_nodes import interfaces as itf  # noqa: E402

DEFS = {
    "control_msgs/msg/JointTolerance": "string name\nfloat64 position\nfloat64 velocity\nfloat64 acceleration\n",
    "control_msgs/msg/JointComponentTolerance": "uint16 X_AXIS=1\nuint16 Y_AXIS=2\nuint16 Z_AXIS=3\n"
    "uint16 TRANSLATION=4\nuint16 ROTATION=5\nstring joint_name\nuint16 component\nfloat64 position\n"
    "float64 velocity\nfloat64 acceleration\n",
    "control_msgs/msg/FollowJointTrajectory_Goal": "trajectory_msgs/JointTrajectory trajectory\n"
    "trajectory_msgs/MultiDOFJointTrajectory multi_dof_trajectory\nJointTolerance[] path_tolerance\n"
    "JointComponentTolerance[] component_path_tolerance\nJointTolerance[] goal_tolerance\n"
    "JointComponentTolerance[] component_goal_tolerance\nbuiltin_interfaces/Duration goal_time_tolerance\n",
    "control_msgs/msg/FollowJointTrajectory_Result": "int32 error_code\nint32 SUCCESSFUL = 0\n"
    "int32 INVALID_GOAL = -1\nint32 PATH_TOLERANCE_VIOLATED = -4\nstring error_string\n",
    "control_msgs/msg/FollowJointTrajectory_Feedback": "std_msgs/Header header\nstring[] joint_names\n"
    "trajectory_msgs/JointTrajectoryPoint desired\ntrajectory_msgs/JointTrajectoryPoint actual\n"
    "trajectory_msgs/JointTrajectoryPoint error\nstring[] multi_dof_joint_names\n"
    "trajectory_msgs/MultiDOFJointTrajectoryPoint multi_dof_desired\n"
    "trajectory_msgs/MultiDOFJointTrajectoryPoint multi_dof_actual\n"
    "trajectory_msgs/MultiDOFJointTrajectoryPoint multi_dof_error\n",
    "control_msgs/msg/FollowJointTrajectory_SendGoal_Request": "unique_identifier_msgs/UUID goal_id\n"
    "FollowJointTrajectory_Goal goal\n",
    "control_msgs/msg/FollowJointTrajectory_SendGoal_Response": "bool accepted\nbuiltin_interfaces/Time stamp\n",
    "control_msgs/msg/FollowJointTrajectory_GetResult_Request": "unique_identifier_msgs/UUID goal_id\n",
    "control_msgs/msg/FollowJointTrajectory_GetResult_Response": "int8 status\nFollowJointTrajectory_Result result\n",
    "control_msgs/msg/FollowJointTrajectory_FeedbackMessage": "unique_identifier_msgs/UUID goal_id\n"
    "FollowJointTrajectory_Feedback feedback\n",
    "std_srvs/msg/Trigger_Request": "uint8 structure_needs_at_least_one_member\n",
    "std_srvs/msg/Trigger_Response": "bool success\nstring message\n",
    "action_msgs/msg/CancelGoal_Request": "GoalInfo goal_info\n",
    "action_msgs/msg/CancelGoal_Response": "int8 ERROR_NONE=0\nint8 return_code\nGoalInfo[] goals_canceling\n",
}
SRV = get_typestore(Stores.ROS2_HUMBLE)
for _name, _text in DEFS.items():
    SRV.register(get_types_from_msg(_text, _name))


def _s(type_name: str, /, **kw):
    return SRV.types[type_name](**kw)


def _uuid(seed: int):
    return _s("unique_identifier_msgs/msg/UUID", uuid=(np.arange(16, dtype=np.uint8) + seed).astype(np.uint8))


def _point(q):
    empty = np.array([], dtype=np.float64)
    return _s("trajectory_msgs/msg/JointTrajectoryPoint", positions=np.array(q, dtype=np.float64), velocities=empty,
              accelerations=empty, effort=empty, time_from_start=_s("builtin_interfaces/msg/Duration", sec=0,
                                                                    nanosec=50_000_000))


def _mdof_point():
    return _s("trajectory_msgs/msg/MultiDOFJointTrajectoryPoint", transforms=[], velocities=[], accelerations=[],
              time_from_start=_s("builtin_interfaces/msg/Duration", sec=0, nanosec=0))


def _ours_point(q):
    return m.JointTrajectoryPoint(list(q), [], [], [], m.Duration(0, 50_000_000))


OUR_TRAJ = m.JointTrajectory(m.Header(m.Time(1, 2), "base_link"), ["a", "b"], [_ours_point([0.1, 0.2])])
OUR_GOAL = itf.FollowJointTrajectory_Goal(
    OUR_TRAJ, itf.MultiDOFJointTrajectory(), [itf.JointTolerance("a", 0.05), itf.JointTolerance("b", 0.1, 1.0, 2.0)],
    [itf.JointComponentTolerance("c", 4, 0.01)], [itf.JointTolerance("a", 0.02)], [], m.Duration(0, 500_000_000))
THEIR_GOAL = _s(
    "control_msgs/msg/FollowJointTrajectory_Goal",
    trajectory=_s("trajectory_msgs/msg/JointTrajectory", header=_r_header(1, 2, "base_link"), joint_names=["a", "b"],
                  points=[_point([0.1, 0.2])]),
    multi_dof_trajectory=_s("trajectory_msgs/msg/MultiDOFJointTrajectory", header=_r_header(0, 0, ""), joint_names=[],
                            points=[]),
    path_tolerance=[_s("control_msgs/msg/JointTolerance", name="a", position=0.05, velocity=0.0, acceleration=0.0),
                    _s("control_msgs/msg/JointTolerance", name="b", position=0.1, velocity=1.0, acceleration=2.0)],
    component_path_tolerance=[_s("control_msgs/msg/JointComponentTolerance", joint_name="c", component=4,
                                 position=0.01, velocity=0.0, acceleration=0.0)],
    goal_tolerance=[_s("control_msgs/msg/JointTolerance", name="a", position=0.02, velocity=0.0, acceleration=0.0)],
    component_goal_tolerance=[], goal_time_tolerance=_s("builtin_interfaces/msg/Duration", sec=0, nanosec=500_000_000))
OUR_FB = itf.FollowJointTrajectory_Feedback(m.Header(m.Time(3, 4), ""), ["a", "b"], _ours_point([1.0, 2.0]),
                                            _ours_point([1.5, 2.5]), _ours_point([-0.5, -0.5]))
THEIR_FB = _s("control_msgs/msg/FollowJointTrajectory_Feedback", header=_r_header(3, 4, ""), joint_names=["a", "b"],
              desired=_point([1.0, 2.0]), actual=_point([1.5, 2.5]), error=_point([-0.5, -0.5]),
              multi_dof_joint_names=[], multi_dof_desired=_mdof_point(), multi_dof_actual=_mdof_point(),
              multi_dof_error=_mdof_point())
_R_GOAL_INFO = _s("action_msgs/msg/GoalInfo", goal_id=_uuid(3), stamp=_r_time(5, 6))
OUR_GOAL_INFO = m.GoalInfo(m.UUID(list(range(3, 19))), m.Time(5, 6))
RPC_CASES = [
    ("control_msgs/msg/FollowJointTrajectory_Goal", OUR_GOAL, THEIR_GOAL),
    ("control_msgs/msg/FollowJointTrajectory_Result", itf.FollowJointTrajectory_Result(-4, "path tolerance"),
     _s("control_msgs/msg/FollowJointTrajectory_Result", error_code=-4, error_string="path tolerance")),
    ("control_msgs/msg/FollowJointTrajectory_Feedback", OUR_FB, THEIR_FB),
    ("control_msgs/msg/FollowJointTrajectory_SendGoal_Request",
     itf.FollowJointTrajectory_SendGoal_Request(m.UUID(list(range(1, 17))), OUR_GOAL),
     _s("control_msgs/msg/FollowJointTrajectory_SendGoal_Request", goal_id=_uuid(1), goal=THEIR_GOAL)),
    ("control_msgs/msg/FollowJointTrajectory_SendGoal_Response",
     itf.FollowJointTrajectory_SendGoal_Response(True, m.Time(7, 8)),
     _s("control_msgs/msg/FollowJointTrajectory_SendGoal_Response", accepted=True, stamp=_r_time(7, 8))),
    ("control_msgs/msg/FollowJointTrajectory_GetResult_Request",
     itf.FollowJointTrajectory_GetResult_Request(m.UUID(list(range(2, 18)))),
     _s("control_msgs/msg/FollowJointTrajectory_GetResult_Request", goal_id=_uuid(2))),
    ("control_msgs/msg/FollowJointTrajectory_GetResult_Response",
     itf.FollowJointTrajectory_GetResult_Response(6, itf.FollowJointTrajectory_Result(-5, "late")),
     _s("control_msgs/msg/FollowJointTrajectory_GetResult_Response", status=6, result=_s(
         "control_msgs/msg/FollowJointTrajectory_Result", error_code=-5, error_string="late"))),
    ("control_msgs/msg/FollowJointTrajectory_FeedbackMessage",
     itf.FollowJointTrajectory_FeedbackMessage(m.UUID(list(range(4, 20))), OUR_FB),
     _s("control_msgs/msg/FollowJointTrajectory_FeedbackMessage", goal_id=_uuid(4), feedback=THEIR_FB)),
    ("std_srvs/msg/Trigger_Request", itf.Trigger_Request(), _s("std_srvs/msg/Trigger_Request",
                                                               structure_needs_at_least_one_member=0)),
    ("std_srvs/msg/Trigger_Response", itf.Trigger_Response(True, "released: e-stop"),
     _s("std_srvs/msg/Trigger_Response", success=True, message="released: e-stop")),
    ("action_msgs/msg/CancelGoal_Request", itf.CancelGoal_Request(OUR_GOAL_INFO),
     _s("action_msgs/msg/CancelGoal_Request", goal_info=_R_GOAL_INFO)),
    ("action_msgs/msg/CancelGoal_Response", itf.CancelGoal_Response(0, [OUR_GOAL_INFO]),
     _s("action_msgs/msg/CancelGoal_Response", return_code=0, goals_canceling=[_R_GOAL_INFO])),
]
MSG_CASES = [
    ("geometry_msgs/msg/TransformStamped",
     m.TransformStamped(m.Header(m.Time(1, 2), "base_link"), "front_camera_optical",
                        m.Transform.from_pose([0.9, 0.0, 0.5, -0.66, -0.66, 0.24, 0.24])),
     _ros("geometry_msgs/msg/TransformStamped", header=_r_header(1, 2, "base_link"),
          child_frame_id="front_camera_optical", transform=_ros(
              "geometry_msgs/msg/Transform", translation=_ros("geometry_msgs/msg/Vector3", x=0.9, y=0.0, z=0.5),
              rotation=_ros("geometry_msgs/msg/Quaternion", x=-0.66, y=-0.66, z=0.24, w=0.24)))),
    ("tf2_msgs/msg/TFMessage", m.TFMessage([m.TransformStamped(m.Header(m.Time(1, 2), "a"), "b")]),
     _ros("tf2_msgs/msg/TFMessage", transforms=[_ros(
         "geometry_msgs/msg/TransformStamped", header=_r_header(1, 2, "a"), child_frame_id="b", transform=_ros(
             "geometry_msgs/msg/Transform", translation=_ros("geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0),
             rotation=_ros("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0)))])),
    ("geometry_msgs/msg/Twist", m.Twist(m.Vector3(1, 2, 3), m.Vector3(4, 5, 6)),
     _ros("geometry_msgs/msg/Twist", linear=_ros("geometry_msgs/msg/Vector3", x=1.0, y=2.0, z=3.0),
          angular=_ros("geometry_msgs/msg/Vector3", x=4.0, y=5.0, z=6.0))),
    ("diagnostic_msgs/msg/DiagnosticArray",
     m.DiagnosticArray(m.Header(m.Time(9, 1), ""), [m.DiagnosticStatus(2, "keystone/safety", "fault: aborted", "",
                                                                       [m.KeyValue("feedback_hz", "20.0")])]),
     _ros("diagnostic_msgs/msg/DiagnosticArray", header=_r_header(9, 1, ""), status=[_ros(
         "diagnostic_msgs/msg/DiagnosticStatus", level=2, name="keystone/safety", message="fault: aborted",
         hardware_id="", values=[_ros("diagnostic_msgs/msg/KeyValue", key="feedback_hz", value="20.0")])])),
    ("action_msgs/msg/GoalStatusArray", m.GoalStatusArray([m.GoalStatus(OUR_GOAL_INFO, 6)]),
     _ros("action_msgs/msg/GoalStatusArray", status_list=[_ros("action_msgs/msg/GoalStatus", goal_info=_ros(
         "action_msgs/msg/GoalInfo", goal_id=_ros("unique_identifier_msgs/msg/UUID",
                                                  uuid=np.arange(3, 19, dtype=np.uint8)), stamp=_r_time(5, 6)),
         status=6)])),
]


@pytest.mark.parametrize("name,ours,theirs", MSG_CASES + RPC_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MSG_CASES + RPC_CASES)])
def test_new_types_cdr_bytes_identical_to_rosbags(name, ours, theirs):
    store = TS if name in TS.types and not name.startswith(("control_msgs", "std_srvs", "action_msgs/msg/Cancel")) \
        else SRV
    ref = bytes(store.serialize_cdr(theirs, name))
    assert ours.serialize() == ref
    assert type(ours).deserialize(ref).serialize() == ref


def dds_type_name(cls) -> str:
    """The type name Cyclone announces in discovery (IDL module separators)."""
    return cls.__idl_typename__.replace(".", "::")


def test_service_samples_are_the_rmw_header_then_the_message():
    """rmw_cyclonedds_cpp: a request / reply sample is the 16-byte cdds_request_header_t (uint64 client id,
    int64 sequence number) followed by the message's fields, under pkg::srv::dds_::Name_Request_ / _Response_."""
    req_t, rep_t = itf.service_wire_types(itf.TRIGGER)
    assert (dds_type_name(req_t), dds_type_name(rep_t)) == ("std_srvs::srv::dds_::Trigger_Request_",
                                                                "std_srvs::srv::dds_::Trigger_Response_")
    body = itf.Trigger_Response(True, "ok")
    sample = rep_t(itf.RequestHeader(0x0102030405060708, 42), body).serialize()
    assert sample[:4] == b"\x00\x01\x00\x00"
    assert sample[4:20] == (0x0102030405060708).to_bytes(8, "little") + (42).to_bytes(8, "little")
    assert sample[20:] == bytes(SRV.serialize_cdr(_s("std_srvs/msg/Trigger_Response", success=True, message="ok"),
                                                  "std_srvs/msg/Trigger_Response"))[4:]
    a = itf.FOLLOW_JOINT_TRAJECTORY
    names = {s.name: itf.service_wire_types(s) for s in (a.send_goal, a.get_result, itf.CANCEL_GOAL)}
    assert {n: (dds_type_name(r), dds_type_name(p)) for n, (r, p) in names.items()} == {
        "control_msgs/action/FollowJointTrajectory_SendGoal": (
            "control_msgs::action::dds_::FollowJointTrajectory_SendGoal_Request_",
            "control_msgs::action::dds_::FollowJointTrajectory_SendGoal_Response_"),
        "control_msgs/action/FollowJointTrajectory_GetResult": (
            "control_msgs::action::dds_::FollowJointTrajectory_GetResult_Request_",
            "control_msgs::action::dds_::FollowJointTrajectory_GetResult_Response_"),
        "action_msgs/srv/CancelGoal": ("action_msgs::srv::dds_::CancelGoal_Request_",
                                       "action_msgs::srv::dds_::CancelGoal_Response_")}
    assert dds_type_name(a.feedback_message) == "control_msgs::action::dds_::FollowJointTrajectory_FeedbackMessage_"
    assert dds_type_name(m.GoalStatusArray) == "action_msgs::msg::dds_::GoalStatusArray_"


def test_action_and_service_dds_topic_names():
    from keystone_vla.ros_nodes.dds_rpc import service_topics

    ends = itf.action_endpoints("/joint_trajectory_controller/follow_joint_trajectory")
    assert [service_topics(ends[k]) for k in ("send_goal", "get_result", "cancel_goal")] == [
        (f"rq/joint_trajectory_controller/follow_joint_trajectory/_action/{k}Request",
         f"rr/joint_trajectory_controller/follow_joint_trajectory/_action/{k}Reply")
        for k in ("send_goal", "get_result", "cancel_goal")]
    assert ends["feedback"] == "/joint_trajectory_controller/follow_joint_trajectory/_action/feedback"
    assert ends["status"] == "/joint_trajectory_controller/follow_joint_trajectory/_action/status"
    assert service_topics("/keystone/safety/reset") == ("rq/keystone/safety/resetRequest",
                                                        "rr/keystone/safety/resetReply")
