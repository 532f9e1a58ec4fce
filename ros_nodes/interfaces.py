"""ROS 2 services and actions Keystone speaks, as Cyclone DDS IDL types wire-compatible with rmw_cyclonedds_cpp.

- `TRIGGER`: ``std_srvs/srv/Trigger`` (e-stop reset, cancel the current instruction).
- `FOLLOW_JOINT_TRAJECTORY`: ``control_msgs/action/FollowJointTrajectory`` (Humble / Jazzy definition, control_msgs
  4.x / 5.x; 6.x adds `index` fields to the feedback and is not wire-compatible), what ros2_control's
  joint_trajectory_controller serves on ``/<controller>/follow_joint_trajectory``.

How ROS 2 maps them onto DDS (rmw_cyclonedds_cpp; names checked in tests/test_ros_msgs.py):

- a service ``/s`` of type ``pkg/srv/S`` is a request topic ``rq/sRequest`` of type ``pkg::srv::dds_::S_Request_``
  and a reply topic ``rr/sReply`` of type ``pkg::srv::dds_::S_Response_``; every sample starts with the 16-byte
  request header (`RequestHeader`: the client's 64-bit id and a sequence number) before the message fields, and
  the reply carries the request's header back (clients keep only replies with their own id);
- an action ``/a`` of type ``pkg/action/A`` is three services, ``/a/_action/send_goal``
  (``pkg/action/A_SendGoal``: goal id + goal -> accepted + stamp), ``/a/_action/get_result``
  (``pkg/action/A_GetResult``: goal id -> status + result, answered when the goal ends) and
  ``/a/_action/cancel_goal`` (``action_msgs/srv/CancelGoal``), plus two topics, ``/a/_action/feedback``
  (``pkg/action/A_FeedbackMessage``: goal id + feedback) and ``/a/_action/status``
  (``action_msgs/msg/GoalStatusArray``, transient local, depth 1).

`ServiceType` and `ActionType` hold the classes; `service_wire_types` builds the DDS sample types (header + body).
Field order is the ROS contract: never reorder or add fields.
"""

import types as _types
from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import float64, int8, int32, int64, sequence, uint8, uint16, uint64

from keystone_vla.ros_nodes import msgs as m

# ---- the rmw request header ---------------------------------------------------------------------------------


@dataclass
@final
class RequestHeader(IdlStruct, typename="keystone.rmw_cyclonedds.RequestHeader"):
    """What rmw_cyclonedds_cpp writes before a request's / reply's fields (``cdds_request_header_t``)."""

    guid: uint64 = 0
    seq: int64 = 0


# ---- std_srvs/srv/Trigger -----------------------------------------------------------------------------------


@dataclass
@final
class Trigger_Request(IdlStruct, typename="std_srvs.srv.Trigger_Request"):
    structure_needs_at_least_one_member: uint8 = 0  # what rosidl generates for an empty request


@dataclass
@final
class Trigger_Response(IdlStruct, typename="std_srvs.srv.Trigger_Response"):
    success: bool = False
    message: str = ""


# ---- action_msgs/srv/CancelGoal -----------------------------------------------------------------------------


@dataclass
@final
class CancelGoal_Request(IdlStruct, typename="action_msgs.srv.CancelGoal_Request"):
    """A zero goal id and zero stamp cancel every goal (ROS semantics); a goal id cancels that goal."""

    goal_info: m.GoalInfo = field(default_factory=m.GoalInfo)


@dataclass
@final
class CancelGoal_Response(IdlStruct, typename="action_msgs.srv.CancelGoal_Response"):
    """`return_code`: NONE 0, REJECTED 1, UNKNOWN_GOAL_ID 2, GOAL_TERMINATED 3."""

    return_code: int8 = 0
    goals_canceling: sequence[m.GoalInfo] = field(default_factory=list)


# ---- control_msgs/action/FollowJointTrajectory --------------------------------------------------------------


@dataclass
@final
class JointTolerance(IdlStruct, typename="control_msgs.msg.dds_.JointTolerance_"):
    """0: the server's default; -1: no limit."""

    name: str = ""
    position: float64 = 0.0
    velocity: float64 = 0.0
    acceleration: float64 = 0.0


@dataclass
@final
class JointComponentTolerance(IdlStruct, typename="control_msgs.msg.dds_.JointComponentTolerance_"):
    joint_name: str = ""
    component: uint16 = 0
    position: float64 = 0.0
    velocity: float64 = 0.0
    acceleration: float64 = 0.0


@dataclass
@final
class MultiDOFJointTrajectoryPoint(IdlStruct, typename="trajectory_msgs.msg.dds_.MultiDOFJointTrajectoryPoint_"):
    transforms: sequence[m.Transform] = field(default_factory=list)
    velocities: sequence[m.Twist] = field(default_factory=list)
    accelerations: sequence[m.Twist] = field(default_factory=list)
    time_from_start: m.Duration = field(default_factory=m.Duration)


@dataclass
@final
class MultiDOFJointTrajectory(IdlStruct, typename="trajectory_msgs.msg.dds_.MultiDOFJointTrajectory_"):
    header: m.Header = field(default_factory=m.Header)
    joint_names: sequence[str] = field(default_factory=list)
    points: sequence[MultiDOFJointTrajectoryPoint] = field(default_factory=list)


@dataclass
@final
class FollowJointTrajectory_Goal(IdlStruct, typename="control_msgs.action.dds_.FollowJointTrajectory_Goal_"):
    trajectory: m.JointTrajectory = field(default_factory=m.JointTrajectory)
    multi_dof_trajectory: MultiDOFJointTrajectory = field(default_factory=MultiDOFJointTrajectory)
    path_tolerance: sequence[JointTolerance] = field(default_factory=list)
    component_path_tolerance: sequence[JointComponentTolerance] = field(default_factory=list)
    goal_tolerance: sequence[JointTolerance] = field(default_factory=list)
    component_goal_tolerance: sequence[JointComponentTolerance] = field(default_factory=list)
    goal_time_tolerance: m.Duration = field(default_factory=m.Duration)


@dataclass
@final
class FollowJointTrajectory_Result(IdlStruct, typename="control_msgs.action.dds_.FollowJointTrajectory_Result_"):
    error_code: int32 = 0
    error_string: str = ""


#: FollowJointTrajectory result codes (control_msgs)
SUCCESSFUL, INVALID_GOAL, INVALID_JOINTS, OLD_HEADER_TIMESTAMP = 0, -1, -2, -3
PATH_TOLERANCE_VIOLATED, GOAL_TOLERANCE_VIOLATED = -4, -5
ERROR_NAMES = {0: "SUCCESSFUL", -1: "INVALID_GOAL", -2: "INVALID_JOINTS", -3: "OLD_HEADER_TIMESTAMP",
               -4: "PATH_TOLERANCE_VIOLATED", -5: "GOAL_TOLERANCE_VIOLATED"}


@dataclass
@final
class FollowJointTrajectory_Feedback(IdlStruct,
                                     typename="control_msgs.action.dds_.FollowJointTrajectory_Feedback_"):
    header: m.Header = field(default_factory=m.Header)
    joint_names: sequence[str] = field(default_factory=list)
    desired: m.JointTrajectoryPoint = field(default_factory=m.JointTrajectoryPoint)
    actual: m.JointTrajectoryPoint = field(default_factory=m.JointTrajectoryPoint)
    error: m.JointTrajectoryPoint = field(default_factory=m.JointTrajectoryPoint)
    multi_dof_joint_names: sequence[str] = field(default_factory=list)
    multi_dof_desired: MultiDOFJointTrajectoryPoint = field(default_factory=MultiDOFJointTrajectoryPoint)
    multi_dof_actual: MultiDOFJointTrajectoryPoint = field(default_factory=MultiDOFJointTrajectoryPoint)
    multi_dof_error: MultiDOFJointTrajectoryPoint = field(default_factory=MultiDOFJointTrajectoryPoint)


# ---- the generated action parts (rosidl: <Action>_SendGoal, _GetResult, _FeedbackMessage) -----------------


@dataclass
@final
class FollowJointTrajectory_SendGoal_Request(IdlStruct,
                                             typename="control_msgs.action.FollowJointTrajectory_SendGoal_Request"):
    goal_id: m.UUID = field(default_factory=m.UUID)
    goal: FollowJointTrajectory_Goal = field(default_factory=FollowJointTrajectory_Goal)


@dataclass
@final
class FollowJointTrajectory_SendGoal_Response(
        IdlStruct, typename="control_msgs.action.FollowJointTrajectory_SendGoal_Response"):
    accepted: bool = False
    stamp: m.Time = field(default_factory=m.Time)


@dataclass
@final
class FollowJointTrajectory_GetResult_Request(
        IdlStruct, typename="control_msgs.action.FollowJointTrajectory_GetResult_Request"):
    goal_id: m.UUID = field(default_factory=m.UUID)


@dataclass
@final
class FollowJointTrajectory_GetResult_Response(
        IdlStruct, typename="control_msgs.action.FollowJointTrajectory_GetResult_Response"):
    status: int8 = 0
    result: FollowJointTrajectory_Result = field(default_factory=FollowJointTrajectory_Result)


@dataclass
@final
class FollowJointTrajectory_FeedbackMessage(
        IdlStruct, typename="control_msgs.action.dds_.FollowJointTrajectory_FeedbackMessage_"):
    goal_id: m.UUID = field(default_factory=m.UUID)
    feedback: FollowJointTrajectory_Feedback = field(default_factory=FollowJointTrajectory_Feedback)


# ---- descriptors --------------------------------------------------------------------------------------------

#: GoalStatus.status values
STATUS_UNKNOWN, STATUS_ACCEPTED, STATUS_EXECUTING, STATUS_CANCELING = 0, 1, 2, 3
STATUS_SUCCEEDED, STATUS_CANCELED, STATUS_ABORTED = 4, 5, 6
TERMINAL = (STATUS_SUCCEEDED, STATUS_CANCELED, STATUS_ABORTED)


@dataclass(frozen=True)
class ServiceType:
    name: str  # pkg/srv/Name (or pkg/action/Name_SendGoal for an action's parts)
    request: type
    response: type

    @property
    def dds_request_name(self) -> str:
        pkg, kind, name = self.name.split("/")
        return f"{pkg}::{kind}::dds_::{name}_Request_"

    @property
    def dds_response_name(self) -> str:
        pkg, kind, name = self.name.split("/")
        return f"{pkg}::{kind}::dds_::{name}_Response_"


@dataclass(frozen=True)
class ActionType:
    name: str  # pkg/action/Name
    goal: type
    result: type
    feedback: type
    send_goal: ServiceType
    get_result: ServiceType
    feedback_message: type


TRIGGER = ServiceType("std_srvs/srv/Trigger", Trigger_Request, Trigger_Response)
CANCEL_GOAL = ServiceType("action_msgs/srv/CancelGoal", CancelGoal_Request, CancelGoal_Response)
FOLLOW_JOINT_TRAJECTORY = ActionType(
    "control_msgs/action/FollowJointTrajectory", FollowJointTrajectory_Goal, FollowJointTrajectory_Result,
    FollowJointTrajectory_Feedback,
    ServiceType("control_msgs/action/FollowJointTrajectory_SendGoal", FollowJointTrajectory_SendGoal_Request,
                FollowJointTrajectory_SendGoal_Response),
    ServiceType("control_msgs/action/FollowJointTrajectory_GetResult", FollowJointTrajectory_GetResult_Request,
                FollowJointTrajectory_GetResult_Response),
    FollowJointTrajectory_FeedbackMessage)

_WIRE: dict[str, tuple[type, type]] = {}


def _wrapper(cls_name: str, typename: str, body: type) -> type:
    ns = {"__annotations__": {"header": RequestHeader, "body": body},
          "header": field(default_factory=RequestHeader), "body": field(default_factory=body)}
    cls = _types.new_class(cls_name, (IdlStruct,), {"typename": typename.replace("::", ".")},
                           lambda d: d.update(ns))
    return dataclass(final(cls))


def service_wire_types(srv: ServiceType) -> tuple[type, type]:
    """The DDS sample types (request, reply) of `srv`: `RequestHeader` then the message fields, under the
    ``pkg::srv::dds_::Name_Request_`` / ``_Response_`` type names."""
    if srv.name not in _WIRE:
        short = srv.name.split("/")[-1]
        _WIRE[srv.name] = (_wrapper(f"{short}_Request_", srv.dds_request_name, srv.request),
                           _wrapper(f"{short}_Response_", srv.dds_response_name, srv.response))
    return _WIRE[srv.name]


def action_endpoints(name: str) -> dict[str, str]:
    """ROS names of an action's services and topics: ``/a`` -> ``/a/_action/send_goal``, ..."""
    base = name.rstrip("/")
    return {part: f"{base}/_action/{part}" for part in ("send_goal", "get_result", "cancel_goal", "feedback", "status")}
