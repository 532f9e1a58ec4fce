"""ROS 2 message types as Cyclone DDS IDL structs, wire-compatible with ROS 2 (rmw_cyclonedds_cpp).

Each class mirrors the ROS 2 Humble definition field for field, is ``@final`` (plain XCDR1, as the ROS 2 RMW
uses) and carries the ROS DDS type name ``pkg::msg::dds_::Type_`` (written with dots, which Cyclone turns into
``::``). The CDR bytes are checked against rosbags' ROS 2 typestore in tests/test_ros_msgs.py.

Nodes use these classes on both backends; the rclpy backend converts them field by field (`to_ros_type_name`).

Never add fields or reorder them: the byte layout is the ROS contract. (No `from __future__ import annotations`:
Cyclone resolves the field annotations at class creation.)
"""

import time
from dataclasses import dataclass, field

import numpy as np
from cyclonedds.idl import IdlStruct
from cyclonedds.idl._machinery import BytesMachine
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import array, float64, int8, int32, sequence, uint8, uint32


@dataclass
@final
class Time(IdlStruct, typename="builtin_interfaces.msg.dds_.Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0

    @classmethod
    def from_seconds(cls, t: float) -> "Time":
        sec = int(t // 1)
        return cls(sec, min(int(round((t - sec) * 1e9)), 999_999_999))

    def to_seconds(self) -> float:
        return self.sec + self.nanosec * 1e-9


@dataclass
@final
class Duration(IdlStruct, typename="builtin_interfaces.msg.dds_.Duration_"):
    sec: int32 = 0
    nanosec: uint32 = 0

    @classmethod
    def from_seconds(cls, t: float) -> "Duration":
        sec = int(t // 1)
        return cls(sec, min(int(round((t - sec) * 1e9)), 999_999_999))

    def to_seconds(self) -> float:
        return self.sec + self.nanosec * 1e-9


@dataclass
@final
class Header(IdlStruct, typename="std_msgs.msg.dds_.Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""

    @classmethod
    def now(cls, frame_id: str = "") -> "Header":
        """A header stamped with the wall clock (ROS time without a simulated clock)."""
        return cls(Time.from_seconds(time.time()), frame_id)


@dataclass
@final
class String(IdlStruct, typename="std_msgs.msg.dds_.String_"):
    data: str = ""


@dataclass
@final
class Bool(IdlStruct, typename="std_msgs.msg.dds_.Bool_"):
    data: bool = False


@dataclass
@final
class JointState(IdlStruct, typename="sensor_msgs.msg.dds_.JointState_"):
    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
@final
class Image(IdlStruct, typename="sensor_msgs.msg.dds_.Image_"):
    """`data` is row-major bytes (`bytes` on receive); build from an array with `Image.from_rgb` (colour) or
    `Image.from_depth` (metric depth)."""

    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    encoding: str = ""
    is_bigendian: uint8 = 0
    step: uint32 = 0
    data: sequence[uint8] = field(default_factory=bytes)

    @classmethod
    def from_rgb(cls, rgb: np.ndarray, header: "Header | None" = None) -> "Image":
        """rgb: uint8 [H, W, 3] -> an ``rgb8`` Image."""
        h, w = rgb.shape[:2]
        return cls(header or Header.now(), h, w, "rgb8", 0, w * 3, np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())

    def to_rgb(self) -> np.ndarray:
        """-> uint8 [H, W, 3] (``rgb8`` only)."""
        if self.encoding != "rgb8":
            from keystone_vla.errors import ConfigError

            raise ConfigError(f"image encoding {self.encoding!r} is not supported; publish rgb8")
        return np.frombuffer(bytes(self.data), dtype=np.uint8).reshape(self.height, self.width, 3)

    @classmethod
    def from_depth(cls, depth: np.ndarray, header: "Header | None" = None) -> "Image":
        """depth: float32 [H, W] metres along the optical axis (NaN: no return, REP 118) -> a ``32FC1`` Image."""
        h, w = depth.shape[:2]
        data = np.ascontiguousarray(depth, dtype="<f4").tobytes()
        return cls(header or Header.now(), h, w, "32FC1", 0, w * 4, data)

    def to_depth(self) -> np.ndarray:
        """-> float32 [H, W] metres: ``32FC1`` as sent, ``16UC1`` millimetres (as RGB-D drivers publish) scaled,
        their 0 ("no return") as NaN."""
        if self.encoding == "32FC1":
            dtype = ">f4" if self.is_bigendian else "<f4"
            rows = np.frombuffer(bytes(self.data), dtype=dtype).reshape(self.height, self.step // 4)
            return rows[:, : self.width].astype(np.float32)
        if self.encoding == "16UC1":
            dtype = ">u2" if self.is_bigendian else "<u2"
            mm = np.frombuffer(bytes(self.data), dtype=dtype).reshape(self.height, self.step // 2)[:, : self.width]
            return np.where(mm > 0, mm.astype(np.float32) / 1000.0, np.float32(np.nan)).astype(np.float32)
        from keystone_vla.errors import ConfigError

        raise ConfigError(f"depth image encoding {self.encoding!r} is not supported; publish 32FC1 (metres) or "
                          "16UC1 (millimetres)")


@dataclass
@final
class RegionOfInterest(IdlStruct, typename="sensor_msgs.msg.dds_.RegionOfInterest_"):
    x_offset: uint32 = 0
    y_offset: uint32 = 0
    height: uint32 = 0
    width: uint32 = 0
    do_rectify: bool = False


@dataclass
@final
class CameraInfo(IdlStruct, typename="sensor_msgs.msg.dds_.CameraInfo_"):
    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    distortion_model: str = ""
    d: sequence[float64] = field(default_factory=list)
    k: array[float64, 9] = field(default_factory=lambda: [0.0] * 9)
    r: array[float64, 9] = field(default_factory=lambda: [0.0] * 9)
    p: array[float64, 12] = field(default_factory=lambda: [0.0] * 12)
    binning_x: uint32 = 0
    binning_y: uint32 = 0
    roi: RegionOfInterest = field(default_factory=RegionOfInterest)


@dataclass
@final
class JointTrajectoryPoint(IdlStruct, typename="trajectory_msgs.msg.dds_.JointTrajectoryPoint_"):
    positions: sequence[float64] = field(default_factory=list)
    velocities: sequence[float64] = field(default_factory=list)
    accelerations: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
@final
class JointTrajectory(IdlStruct, typename="trajectory_msgs.msg.dds_.JointTrajectory_"):
    header: Header = field(default_factory=Header)
    joint_names: sequence[str] = field(default_factory=list)
    points: sequence[JointTrajectoryPoint] = field(default_factory=list)


@dataclass
@final
class Vector3(IdlStruct, typename="geometry_msgs.msg.dds_.Vector3_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
@final
class Quaternion(IdlStruct, typename="geometry_msgs.msg.dds_.Quaternion_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0


@dataclass
@final
class Transform(IdlStruct, typename="geometry_msgs.msg.dds_.Transform_"):
    translation: Vector3 = field(default_factory=Vector3)
    rotation: Quaternion = field(default_factory=Quaternion)

    @classmethod
    def from_pose(cls, pose: "list[float]") -> "Transform":
        """x y z qx qy qz qw -> Transform."""
        x, y, z, qx, qy, qz, qw = (float(v) for v in pose)
        return cls(Vector3(x, y, z), Quaternion(qx, qy, qz, qw))


@dataclass
@final
class TransformStamped(IdlStruct, typename="geometry_msgs.msg.dds_.TransformStamped_"):
    header: Header = field(default_factory=Header)
    child_frame_id: str = ""
    transform: Transform = field(default_factory=Transform)


@dataclass
@final
class Twist(IdlStruct, typename="geometry_msgs.msg.dds_.Twist_"):
    linear: Vector3 = field(default_factory=Vector3)
    angular: Vector3 = field(default_factory=Vector3)


@dataclass
@final
class TFMessage(IdlStruct, typename="tf2_msgs.msg.dds_.TFMessage_"):
    transforms: sequence[TransformStamped] = field(default_factory=list)


@dataclass
@final
class KeyValue(IdlStruct, typename="diagnostic_msgs.msg.dds_.KeyValue_"):
    key: str = ""
    value: str = ""


@dataclass
@final
class DiagnosticStatus(IdlStruct, typename="diagnostic_msgs.msg.dds_.DiagnosticStatus_"):
    """`level`: OK 0, WARN 1, ERROR 2, STALE 3 (ROS `byte`, one octet on the wire)."""

    level: uint8 = 0
    name: str = ""
    message: str = ""
    hardware_id: str = ""
    values: sequence[KeyValue] = field(default_factory=list)


@dataclass
@final
class DiagnosticArray(IdlStruct, typename="diagnostic_msgs.msg.dds_.DiagnosticArray_"):
    header: Header = field(default_factory=Header)
    status: sequence[DiagnosticStatus] = field(default_factory=list)


@dataclass
@final
class UUID(IdlStruct, typename="unique_identifier_msgs.msg.dds_.UUID_"):
    uuid: array[uint8, 16] = field(default_factory=lambda: [0] * 16)


@dataclass
@final
class GoalInfo(IdlStruct, typename="action_msgs.msg.dds_.GoalInfo_"):
    goal_id: UUID = field(default_factory=UUID)
    stamp: Time = field(default_factory=Time)


@dataclass
@final
class GoalStatus(IdlStruct, typename="action_msgs.msg.dds_.GoalStatus_"):
    """`status`: UNKNOWN 0, ACCEPTED 1, EXECUTING 2, CANCELING 3, SUCCEEDED 4, CANCELED 5, ABORTED 6."""

    goal_info: GoalInfo = field(default_factory=GoalInfo)
    status: int8 = 0


@dataclass
@final
class GoalStatusArray(IdlStruct, typename="action_msgs.msg.dds_.GoalStatusArray_"):
    status_list: sequence[GoalStatus] = field(default_factory=list)


#: every message class, keyed by its ROS 2 type name (``pkg/msg/Type``)
MESSAGES: dict[str, type[IdlStruct]] = {
    "builtin_interfaces/msg/Time": Time,
    "builtin_interfaces/msg/Duration": Duration,
    "std_msgs/msg/Header": Header,
    "std_msgs/msg/String": String,
    "std_msgs/msg/Bool": Bool,
    "sensor_msgs/msg/JointState": JointState,
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/RegionOfInterest": RegionOfInterest,
    "sensor_msgs/msg/CameraInfo": CameraInfo,
    "trajectory_msgs/msg/JointTrajectoryPoint": JointTrajectoryPoint,
    "trajectory_msgs/msg/JointTrajectory": JointTrajectory,
    "geometry_msgs/msg/Vector3": Vector3,
    "geometry_msgs/msg/Quaternion": Quaternion,
    "geometry_msgs/msg/Transform": Transform,
    "geometry_msgs/msg/TransformStamped": TransformStamped,
    "geometry_msgs/msg/Twist": Twist,
    "tf2_msgs/msg/TFMessage": TFMessage,
    "diagnostic_msgs/msg/KeyValue": KeyValue,
    "diagnostic_msgs/msg/DiagnosticStatus": DiagnosticStatus,
    "diagnostic_msgs/msg/DiagnosticArray": DiagnosticArray,
    "unique_identifier_msgs/msg/UUID": UUID,
    "action_msgs/msg/GoalInfo": GoalInfo,
    "action_msgs/msg/GoalStatus": GoalStatus,
    "action_msgs/msg/GoalStatusArray": GoalStatusArray,
}


def to_ros_type_name(msg_type: type[IdlStruct]) -> str:
    """``sensor_msgs/msg/JointState`` for `JointState` (the name rosbags and rclpy use)."""
    for name, cls in MESSAGES.items():
        if cls is msg_type:
            return name
    raise KeyError(f"{msg_type.__name__} is not a Keystone ROS message type")


def _fast_image_bytes() -> None:
    # sequence<uint8> is CDR "uint32 length + raw bytes" (alignment 1), exactly what BytesMachine writes; the
    # generic machine packs/unpacks one Python int per byte (2 ms per 128x128 frame). The type object stays
    # sequence<uint8>, so discovery and matching are unchanged; the byte-identity test covers this swap.
    Image.__idl__.populate()
    for machine in (Image.__idl__.v1_machine, Image.__idl__.v2_machine):
        machine.members_machines["data"] = BytesMachine()


_fast_image_bytes()
