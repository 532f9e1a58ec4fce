"""The rclpy backend's action server against a double of rclpy's action API (rclpy cannot be installed here).

The double follows rclpy's documented flow (``rclpy/action/server.py``): ``goal_callback(goal_request.goal)`` ->
``GoalResponse``; when accepted, a ``ServerGoalHandle`` whose ``request`` is that same goal message goes to
``handle_accepted_callback``, whose ``execute()`` runs the (async) execute callback; ``cancel_callback(handle)``
-> ``CancelResponse``. It checks what Keystone does with that flow: a goal its owner refuses is REJECTED and never
reaches execution, an accepted one is driven by the owner's key and ends as the owner says. Whether the same calls
behave so on a real ROS 2 install is not checked here (the module docstring lists what has run).
"""

from __future__ import annotations

import enum
import importlib
import sys
import types

import pytest

from keystone_vla.ros_nodes import interfaces as itf


class _Future:
    def __init__(self) -> None:
        self._done, self._result = False, None

    def done(self) -> bool:
        return self._done

    def set_result(self, result) -> None:
        self._done, self._result = True, result

    def __await__(self):
        while not self._done:
            yield
        return self._result


class GoalResponse(enum.Enum):
    REJECT, ACCEPT = 1, 2


class CancelResponse(enum.Enum):
    REJECT, ACCEPT = 1, 2


class _Handle:
    def __init__(self, server: _Server, uuid: bytes, request) -> None:
        self.goal_id = types.SimpleNamespace(uuid=list(uuid))
        self.request, self.server, self.is_active, self.status = request, server, True, "accepted"
        self.coroutine, self.result = None, None

    def execute(self) -> None:
        self.status = "executing"
        self.coroutine = self.server.execute_callback(self)

    def succeed(self) -> None:
        self.status, self.is_active = "succeeded", False

    def abort(self) -> None:
        self.status, self.is_active = "aborted", False

    def canceled(self) -> None:
        self.status, self.is_active = "canceled", False


class _Server:
    """``rclpy.action.ActionServer``'s goal flow, driven by the test as the executor would."""

    last: _Server | None = None

    def __init__(self, node, action_type, name, execute_callback, goal_callback, handle_accepted_callback,
                 cancel_callback) -> None:
        self.execute_callback, self.goal_callback = execute_callback, goal_callback
        self.accepted_callback, self.cancel_callback = handle_accepted_callback, cancel_callback
        self.action_type, self.name = action_type, name
        _Server.last = self

    def send_goal(self, uuid: bytes, goal) -> _Handle | None:
        if self.goal_callback(goal) != GoalResponse.ACCEPT:
            return None  # the client's future resolves with accepted=False: REJECTED
        handle = _Handle(self, uuid, goal)
        self.accepted_callback(handle)
        return handle

    @staticmethod
    def spin(handle: _Handle):
        """Run the handle's execute callback until it awaits something not done; its return value once finished."""
        if handle.coroutine is None:
            return handle.result
        try:
            handle.coroutine.send(None)
        except StopIteration as stop:
            handle.coroutine, handle.result = None, stop.value
            return stop.value
        return None


@pytest.fixture()
def backend(monkeypatch):
    """`keystone_vla.ros_nodes.rclpy_backend` imported over the double (and dropped again after the test)."""
    rclpy = types.ModuleType("rclpy")
    rclpy.ok, rclpy.init = (lambda: True), (lambda: None)
    node = types.ModuleType("rclpy.node")
    node.Node = object
    qos = types.ModuleType("rclpy.qos")
    for name in ("DurabilityPolicy", "HistoryPolicy", "QoSProfile", "ReliabilityPolicy"):
        setattr(qos, name, types.SimpleNamespace)
    action = types.ModuleType("rclpy.action")
    action.ActionServer, action.GoalResponse, action.CancelResponse = _Server, GoalResponse, CancelResponse
    task = types.ModuleType("rclpy.task")
    task.Future = _Future
    control = types.ModuleType("control_msgs.action")
    # the generated classes stand in as Keystone's own (same field names and order by construction)
    control.FollowJointTrajectory = types.SimpleNamespace(Goal=itf.FollowJointTrajectory_Goal,
                                                          Result=itf.FollowJointTrajectory_Result,
                                                          Feedback=itf.FollowJointTrajectory_Feedback)
    for name, module in {"rclpy": rclpy, "rclpy.node": node, "rclpy.qos": qos, "rclpy.action": action,
                         "rclpy.task": task, "control_msgs": types.ModuleType("control_msgs"),
                         "control_msgs.action": control}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "keystone_vla.ros_nodes.rclpy_backend", raising=False)
    module = importlib.import_module("keystone_vla.ros_nodes.rclpy_backend")
    yield module
    sys.modules.pop("keystone_vla.ros_nodes.rclpy_backend", None)


class _Owner:
    """What sim_bridge is to the server: decides goals by key, finishes them later."""

    def __init__(self, accept: bool) -> None:
        self.accept, self.goals, self.cancels = accept, [], []

    def on_goal(self, key: bytes, goal) -> bool:
        self.goals.append((key, goal))
        return self.accept

    def on_cancel(self, key: bytes) -> bool:
        self.cancels.append(key)
        return True


def test_a_goal_the_owner_refuses_is_rejected_and_never_executes(backend) -> None:
    owner = _Owner(accept=False)
    server = backend._ActionServer(object(), itf.FOLLOW_JOINT_TRAJECTORY, "/arm/follow_joint_trajectory",
                                   owner.on_goal, owner.on_cancel)
    assert _Server.last.action_type is sys.modules["control_msgs.action"].FollowJointTrajectory
    assert _Server.send_goal(_Server.last, b"\x01" * 16, itf.FollowJointTrajectory_Goal()) is None
    assert len(owner.goals) == 1 and isinstance(owner.goals[0][1], itf.FollowJointTrajectory_Goal)
    assert not server._handles and not server._pending, "a rejected goal leaves nothing behind"


def test_an_accepted_goal_runs_under_the_owners_key_until_the_owner_finishes_it(backend) -> None:
    owner = _Owner(accept=True)
    server = backend._ActionServer(object(), itf.FOLLOW_JOINT_TRAJECTORY, "/arm/follow_joint_trajectory",
                                   owner.on_goal, owner.on_cancel)
    wire = b"\x07" * 16
    handle = _Server.last.send_goal(wire, itf.FollowJointTrajectory_Goal())
    key = owner.goals[0][0]
    assert handle is not None and handle.status == "executing" and key != wire
    assert server.is_active(key) and not server.is_active(wire)
    assert _Server.spin(handle) is None and handle.is_active, "the goal runs until the owner ends it"
    # a cancel arrives with the wire id: the owner hears its own key
    assert server._cancel(handle) == CancelResponse.ACCEPT and owner.cancels == [key]
    server.finish(key, itf.STATUS_ABORTED, itf.FollowJointTrajectory_Result(itf.PATH_TOLERANCE_VIOLATED, "path"))
    result = _Server.spin(handle)
    assert handle.status == "aborted" and result.error_code == itf.PATH_TOLERANCE_VIOLATED
    assert not server.is_active(key) and not server._keys and not server._handles
    # two goals in flight keep their own keys
    a = _Server.last.send_goal(b"\x0a" * 16, itf.FollowJointTrajectory_Goal())
    b = _Server.last.send_goal(b"\x0b" * 16, itf.FollowJointTrajectory_Goal())
    key_a, key_b = owner.goals[1][0], owner.goals[2][0]
    server.finish(key_b, itf.STATUS_SUCCEEDED, itf.FollowJointTrajectory_Result())
    _Server.spin(a), _Server.spin(b)
    assert b.status == "succeeded" and a.is_active
    server.finish(key_a, itf.STATUS_CANCELED, itf.FollowJointTrajectory_Result())
    _Server.spin(a)
    assert a.status == "canceled"
