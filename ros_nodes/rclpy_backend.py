"""rclpy backend of the transport interface: Keystone nodes as real ROS 2 nodes where ROS 2 is sourced.

Nodes keep using `keystone_vla.ros_nodes.msgs` / `interfaces` classes; this module converts them field by field to
and from the generated rclpy classes (same field names and order by construction). Parameters are declared on
the rclpy node with a `ParameterDescriptor` (description, `FloatingPointRange` / `IntegerRange`), so launch files
and ``--ros-args -p`` set them and ``ros2 param describe`` shows them; overrides passed to `make_node` win, and
every value is checked by `transport.check_parameter` as on the DDS backend.

Calls made, checked against rclpy's published API (docs.ros.org, rclpy for Humble / Jazzy):
``rclpy.init / ok / spin_once(node, timeout_sec=)``; ``Node(name)``; ``create_publisher(msg_type, topic,
QoSProfile)`` and ``create_subscription(msg_type, topic, callback, QoSProfile)`` with ``QoSProfile(history=,
depth=, reliability=, durability=)``; ``create_timer(period_s, callback)``; ``declare_parameter(name, value,
descriptor)`` with ``rcl_interfaces.msg.ParameterDescriptor(description=, floating_point_range=[...],
integer_range=[...])``; ``create_service(srv_type, name, callback(request, response))``; ``create_client(srv_type,
name)`` with ``service_is_ready()`` and ``call_async(request)`` (a Future, ``add_done_callback``);
``rclpy.action.ActionServer(node, action_type, name, execute_callback, goal_callback=, handle_accepted_callback=,
cancel_callback=)`` with ``GoalResponse`` / ``CancelResponse`` and ``ServerGoalHandle.execute / publish_feedback /
succeed / abort / canceled / is_active``; ``rclpy.action.ActionClient(node, action_type, name)`` with
``server_is_ready()``, ``send_goal_async(goal, feedback_callback=)`` -> ClientGoalHandle (``accepted``,
``goal_id.uuid``, ``get_result_async()``, ``cancel_goal_async()``).

What has run: nothing in this module has run on a real ROS 2 install (rclpy cannot be installed where Keystone is
developed); it is checked only against that documentation. The DDS backend, which every test exercises over real
Cyclone DDS, speaks the same wire protocol (topic and type names, CDR bytes checked against rosbags), but whether
rmw_cyclonedds_cpp matches its services and actions (request header, type hashes on Iron and later) has not been
tried against a real ROS 2 node either. Not done here: parameter callbacks (values are read once at start),
multi-threaded executors (one node, `rclpy.spin_once`). rclpy's goal callback does not see the goal id, so the
action server decides on a key of its own and ties it to the wire id when rclpy hands over the accepted goal
(see `_ActionServer`): a goal the owner refuses is REJECTED, as on the DDS backend.

Only imported when rclpy is importable; this module must never be imported by code that runs without ROS.
"""

from __future__ import annotations

import array
import dataclasses
import importlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import rclpy
from rclpy.node import Node as _RosNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from keystone_vla.ros_nodes import interfaces as itf
from keystone_vla.ros_nodes.msgs import to_ros_type_name
from keystone_vla.ros_nodes.transport import DEFAULT_QOS, QoS, check_parameter


def ros_qos(qos: QoS) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=qos.depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if qos.transient_local else DurabilityPolicy.VOLATILE,
    )


#: Keystone service / action part classes -> (module, attribute path) of the generated rclpy class
_INTERFACE_CLASSES: dict[type, tuple[str, str]] = {
    itf.Trigger_Request: ("std_srvs.srv", "Trigger.Request"),
    itf.Trigger_Response: ("std_srvs.srv", "Trigger.Response"),
    itf.FollowJointTrajectory_Goal: ("control_msgs.action", "FollowJointTrajectory.Goal"),
    itf.FollowJointTrajectory_Result: ("control_msgs.action", "FollowJointTrajectory.Result"),
    itf.FollowJointTrajectory_Feedback: ("control_msgs.action", "FollowJointTrajectory.Feedback"),
    itf.JointTolerance: ("control_msgs.msg", "JointTolerance"),
    itf.JointComponentTolerance: ("control_msgs.msg", "JointComponentTolerance"),
    itf.MultiDOFJointTrajectory: ("trajectory_msgs.msg", "MultiDOFJointTrajectory"),
    itf.MultiDOFJointTrajectoryPoint: ("trajectory_msgs.msg", "MultiDOFJointTrajectoryPoint"),
}


def ros_class(msg_type: type) -> type:
    if msg_type in _INTERFACE_CLASSES:
        module, attr = _INTERFACE_CLASSES[msg_type]
        out: Any = importlib.import_module(module)
        for part in attr.split("."):
            out = getattr(out, part)
        return out
    pkg, _, name = to_ros_type_name(msg_type).split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def ros_srv_class(kind: Any) -> type:
    """The rclpy service / action class of an `interfaces.ServiceType` / `ActionType` (``pkg/srv/Name``)."""
    pkg, sub, name = kind.name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


def to_ros(msg: Any) -> Any:
    """Keystone message -> rclpy message (recursive)."""
    out = ros_class(type(msg))()
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_ros(value)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [to_ros(v) for v in value]
        elif isinstance(value, (bytes, bytearray)):
            value = array.array("B", value)  # uint8[]: rclpy's setter would check 49k ints one by one
        setattr(out, f.name, value)
    return out


def from_ros(ros_msg: Any, msg_type: type) -> Any:
    """rclpy message -> Keystone message of `msg_type` (recursive; arrays become lists, uint8[] bytes)."""
    hints = {f.name: f for f in dataclasses.fields(msg_type)}
    kwargs = {}
    defaults = msg_type()
    for name in hints:
        value = getattr(ros_msg, name)
        template = getattr(defaults, name)
        if dataclasses.is_dataclass(template):
            value = from_ros(value, type(template))
        elif isinstance(template, (bytes, bytearray)):
            value = bytes(value)
        elif isinstance(template, list):
            items = list(value)
            nested = _element_type(msg_type, name)
            value = [from_ros(v, nested) for v in items] if nested else [
                v if isinstance(v, str) else float(v) for v in items]
        kwargs[name] = value
    return msg_type(**kwargs)


def _element_type(msg_type: type, field_name: str) -> type | None:
    """The message class of a ``sequence[Message]`` field, from its IDL annotation (None for plain values)."""
    import typing

    ann = msg_type.__annotations__.get(field_name)
    for arg in typing.get_args(ann):
        for inner in typing.get_args(arg):
            if dataclasses.is_dataclass(inner):
                return inner
    return None


class _Pub:
    def __init__(self, pub: Any) -> None:
        self._pub = pub

    def publish(self, msg: Any) -> None:
        self._pub.publish(to_ros(msg))

    def matched_subscriptions(self) -> int:
        return int(self._pub.get_subscription_count())


class RclpyNode:
    """A Keystone node backed by an rclpy Node."""

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        if not rclpy.ok():
            rclpy.init()
        self.name = name
        self._node = _RosNode(name)
        self._overrides = dict(parameters or {})
        self.parameters: dict[str, Any] = {}
        self.log = logging.getLogger(f"keystone.ros.{name}")
        self.log.addHandler(_RosLogHandler(self._node.get_logger()))
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self._stopped = False

    def create_publisher(self, msg_type: type, topic: str, qos: QoS = DEFAULT_QOS) -> _Pub:
        return _Pub(self._node.create_publisher(ros_class(msg_type), topic, ros_qos(qos)))

    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos: QoS = DEFAULT_QOS) -> Any:
        return self._node.create_subscription(ros_class(msg_type), topic,
                                              lambda m: callback(from_ros(m, msg_type)), ros_qos(qos))

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> Any:
        return self._node.create_timer(period_s, callback)

    def declare_parameter(self, name: str, default: Any, description: str = "",
                          range: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None) -> Any:
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        text = description + (f" (one of: {', '.join(choices)})" if choices else "")
        descriptor = ParameterDescriptor(description=text)
        if range is not None and isinstance(default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(range[0]),
                                                                  to_value=float(range[1]), step=0.0)]
        elif range is not None and isinstance(default, int) and not isinstance(default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(range[0]), to_value=int(range[1]), step=0)]
        value = self._node.declare_parameter(name, default, descriptor).value
        value = check_parameter(self.name, name, self._overrides.get(name, value), default, range, choices)
        self.parameters[name] = value
        return value

    def create_service(self, srv: Any, name: str, callback: Callable[[Any], Any]) -> Any:
        def handle(request: Any, response: Any) -> Any:
            ours = callback(from_ros(request, srv.request))
            for f in dataclasses.fields(ours):
                setattr(response, f.name, getattr(to_ros(ours), f.name))
            return response

        return self._node.create_service(ros_srv_class(srv), name, handle)

    def create_client(self, srv: Any, name: str) -> Any:
        return _Client(self._node.create_client(ros_srv_class(srv), name), srv)

    def create_action_server(self, action: Any, name: str, on_goal: Callable[[bytes, Any], bool],
                             on_cancel: Callable[[bytes], bool]) -> Any:
        return _ActionServer(self._node, action, name, on_goal, on_cancel)

    def create_action_client(self, action: Any, name: str) -> Any:
        return _ActionClient(self._node, action, name)

    def unknown_overrides(self) -> list[str]:
        return sorted(set(self._overrides) - set(self.parameters))

    def spin_once(self, timeout_s: float = 0.1) -> None:
        rclpy.spin_once(self._node, timeout_sec=timeout_s)

    def spin(self, until: Callable[[], bool] | None = None) -> None:
        while rclpy.ok() and not self._stopped and not (until and until()):
            rclpy.spin_once(self._node, timeout_sec=0.1)

    def shutdown(self) -> None:
        self._stopped = True

    def destroy(self) -> None:
        self._stopped = True
        self._node.destroy_node()

    def now(self) -> float:
        return time.time()


class _Client:
    def __init__(self, client: Any, srv: Any) -> None:
        self._client, self._srv = client, srv

    def service_is_ready(self) -> bool:
        return bool(self._client.service_is_ready())

    def call(self, request: Any, on_response: Callable[[Any], None]) -> None:
        future = self._client.call_async(to_ros(request))
        future.add_done_callback(lambda f: on_response(from_ros(f.result(), self._srv.response)))


class _ActionServer:
    """Goals are decided in `goal_callback` (ACCEPT or REJECT, as the owner says), executed by an async execute
    callback that waits until the owner ends them with `finish` (the owner's timers drive the motion, as on the
    DDS backend).

    rclpy's goal callback gets the goal message without its goal id, and the owner keys goals by id. So the owner
    decides on a key made here (a fresh UUID's bytes) and keeps using it; `handle_accepted_callback` then receives
    a handle whose ``request`` is that same goal message (rclpy builds ``ServerGoalHandle(..., goal_request.goal)``
    from the object it passed to the goal callback), which ties the wire goal id to the key. Feedback, results and
    cancels translate between the two here."""

    def __init__(self, node: Any, action: Any, name: str, on_goal: Callable[[bytes, Any], bool],
                 on_cancel: Callable[[bytes], bool]) -> None:
        from rclpy.action import ActionServer, CancelResponse, GoalResponse

        self._action, self._on_goal, self._on_cancel = action, on_goal, on_cancel
        self._GoalResponse, self._CancelResponse = GoalResponse, CancelResponse
        self._handles: dict[bytes, Any] = {}  # owner's key -> rclpy ServerGoalHandle
        self._keys: dict[bytes, bytes] = {}  # wire goal id -> owner's key
        self._pending: dict[int, tuple[bytes, Any]] = {}  # id(goal message) -> (key, the message: keeps id unique)
        self._done: dict[bytes, Any] = {}  # owner's key -> rclpy Future resolved by `finish`
        self._node = node
        self._server = ActionServer(node, ros_srv_class(action), name, self._execute, goal_callback=self._goal,
                                    handle_accepted_callback=self._accepted, cancel_callback=self._cancel)

    def _goal(self, request: Any) -> Any:
        key = uuid.uuid4().bytes
        if not self._on_goal(key, from_ros(request, self._action.goal)):
            return self._GoalResponse.REJECT  # the client sees REJECTED; nothing was started
        self._pending[id(request)] = (key, request)
        return self._GoalResponse.ACCEPT

    def _accepted(self, handle: Any) -> None:
        key, _ = self._pending.pop(id(handle.request))
        self._keys[bytes(handle.goal_id.uuid)] = key
        self._handles[key] = handle
        handle.execute()

    def _cancel(self, handle: Any) -> Any:
        key = self._keys.get(bytes(handle.goal_id.uuid))
        ok = key is not None and self._on_cancel(key)
        return self._CancelResponse.ACCEPT if ok else self._CancelResponse.REJECT

    async def _execute(self, handle: Any) -> Any:
        from rclpy.task import Future

        goal_id = self._keys[bytes(handle.goal_id.uuid)]
        future = self._done.setdefault(goal_id, Future())
        status, result = await future
        if status == itf.STATUS_SUCCEEDED:
            handle.succeed()
        elif status == itf.STATUS_CANCELED:
            handle.canceled()
        else:
            handle.abort()
        self._handles.pop(goal_id, None)
        self._done.pop(goal_id, None)
        self._keys.pop(bytes(handle.goal_id.uuid), None)
        return to_ros(result)

    def publish_feedback(self, goal_id: bytes, feedback: Any) -> None:
        handle = self._handles.get(goal_id)
        if handle is not None and handle.is_active:
            handle.publish_feedback(to_ros(feedback))

    def finish(self, goal_id: bytes, status: int, result: Any) -> None:
        from rclpy.task import Future

        future = self._done.setdefault(goal_id, Future())
        if not future.done():
            future.set_result((status, result))

    def is_active(self, goal_id: bytes) -> bool:
        handle = self._handles.get(goal_id)
        return handle is not None and handle.is_active


class _ActionClient:
    def __init__(self, node: Any, action: Any, name: str) -> None:
        from rclpy.action import ActionClient

        self._action = action
        self._client = ActionClient(node, ros_srv_class(action), name)
        self._handles: dict[bytes, Any] = {}
        self.statuses: dict[bytes, int] = {}

    def server_is_ready(self) -> bool:
        return bool(self._client.server_is_ready())

    def send_goal(self, goal: Any, on_accepted: Callable[[bytes, bool], None],
                  on_feedback: Callable[[bytes, Any], None] | None = None,
                  on_result: Callable[[bytes, int, Any], None] | None = None) -> bytes:
        import uuid as _uuid

        from unique_identifier_msgs.msg import UUID

        goal_id = _uuid.uuid4().bytes
        feedback_cb = None
        if on_feedback is not None:
            def feedback_cb(msg: Any) -> None:
                on_feedback(goal_id, from_ros(msg.feedback, self._action.feedback))
        future = self._client.send_goal_async(to_ros(goal), feedback_callback=feedback_cb,
                                              goal_uuid=UUID(uuid=list(goal_id)))

        def accepted(f: Any) -> None:
            handle = f.result()
            on_accepted(goal_id, bool(handle.accepted))
            if handle.accepted:
                self._handles[goal_id] = handle
                if on_result is not None:
                    handle.get_result_async().add_done_callback(lambda r: on_result(
                        goal_id, int(r.result().status), from_ros(r.result().result, self._action.result)))

        future.add_done_callback(accepted)
        return goal_id

    def cancel(self, goal_id: bytes, on_response: Callable[[Any], None] | None = None) -> None:
        handle = self._handles.pop(goal_id, None)
        if handle is not None:
            handle.cancel_goal_async()

    def status(self, goal_id: bytes) -> int:
        handle = self._handles.get(goal_id)
        return int(handle.status) if handle is not None else itf.STATUS_UNKNOWN


class _RosLogHandler(logging.Handler):
    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self._ros.error(text)
        elif record.levelno >= logging.WARNING:
            self._ros.warning(text)
        else:
            self._ros.info(text)
