"""ROS 2 services and actions on plain Cyclone DDS (the DDS backend's half of `transport.Node`'s RPC calls).

The wire mapping (topic names, type names, request header) is in `keystone_vla.ros_nodes.interfaces`. Everything
here runs inside the owning `DdsNode`'s single-threaded executor: callbacks fire from `spin_once`, nothing blocks.

- `DdsServiceServer`: the callback returns the response, or None to answer later with `reply(header, response)`
  (an action's get_result waits for the goal to end).
- `DdsServiceClient`: `call(request, on_response)`; replies meant for other clients (same topic) are ignored.
- `DdsActionServer` (what joint_trajectory_controller is): `on_goal(goal_id, goal) -> bool` accepts or rejects,
  `on_cancel(goal_id) -> bool`; the owner then drives the goal with `publish_feedback` and ends it with `finish`.
  The status topic is republished on every change.
- `DdsActionClient` (what rclpy's ActionClient is): `send_goal(goal, on_accepted, on_feedback, on_result)`; the
  result is requested as soon as the goal is accepted; `cancel(goal_id)`; `status(goal_id)` from the status topic.

Goal ids are 16 random bytes (`bytes`), as rclpy's ActionClient makes them.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from keystone_vla.ros_nodes import interfaces as itf
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes.transport import LATCHED_QOS, QoS

SERVICE_QOS = QoS(reliable=True, depth=10)  # rmw_qos_profile_services_default
KEEP_GOALS = 64  # finished goals whose results stay available to get_result


def service_topics(name: str) -> tuple[str, str]:
    """ROS service name -> (request, reply) DDS topic names: ``/a/b`` -> ``rq/a/bRequest``, ``rr/a/bReply``."""
    from keystone_vla.ros_nodes.transport import dds_topic_name

    base = dds_topic_name(name)[3:]
    return f"rq/{base}Request", f"rr/{base}Reply"


def goal_uuid(goal_id: bytes) -> m.UUID:
    return m.UUID(list(goal_id))


def uuid_bytes(uuid: m.UUID) -> bytes:
    return bytes(uuid.uuid)


class DdsServiceServer:
    def __init__(self, node: Any, srv: itf.ServiceType, name: str,
                 callback: Callable[[Any], Any], header_callback: bool = False) -> None:
        self.srv, self.name, self.callback, self.header_callback = srv, name, callback, header_callback
        req_type, self._reply_type = itf.service_wire_types(srv)
        rq, rr = service_topics(name)
        self._writer = node.create_dds_writer(self._reply_type, rr, SERVICE_QOS)
        node.create_dds_reader(req_type, rq, self._on_request, SERVICE_QOS)

    def _on_request(self, sample: Any) -> None:
        response = self.callback(sample.header, sample.body) if self.header_callback else self.callback(sample.body)
        if response is not None:
            self.reply(sample.header, response)

    def reply(self, header: itf.RequestHeader, response: Any) -> None:
        self._writer.write(self._reply_type(header, response))


class DdsServiceClient:
    def __init__(self, node: Any, srv: itf.ServiceType, name: str) -> None:
        self.srv, self.name = srv, name
        self._req_type, reply_type = itf.service_wire_types(srv)
        rq, rr = service_topics(name)
        self._writer = node.create_dds_writer(self._req_type, rq, SERVICE_QOS)
        self._reader = node.create_dds_reader(reply_type, rr, self._on_reply, SERVICE_QOS)
        self.guid = int.from_bytes(os.urandom(8), "little")
        self._seq = 0
        self._pending: dict[int, Callable[[Any], None]] = {}

    def service_is_ready(self) -> bool:
        return bool(self._writer.get_matched_subscriptions()) and bool(self._reader.get_matched_publications())

    def call(self, request: Any, on_response: Callable[[Any], None]) -> int:
        self._seq += 1
        self._pending[self._seq] = on_response
        self._writer.write(self._req_type(itf.RequestHeader(self.guid, self._seq), request))
        return self._seq

    def _on_reply(self, sample: Any) -> None:
        if sample.header.guid != self.guid:
            return  # another client's reply
        callback = self._pending.pop(sample.header.seq, None)
        if callback is not None:
            callback(sample.body)


class DdsActionServer:
    def __init__(self, node: Any, action: itf.ActionType, name: str, on_goal: Callable[[bytes, Any], bool],
                 on_cancel: Callable[[bytes], bool]) -> None:
        self.action, self.name, self.node = action, name, node
        self.on_goal, self.on_cancel = on_goal, on_cancel
        ends = itf.action_endpoints(name)
        self.goals: OrderedDict[bytes, list] = OrderedDict()  # id -> [status, stamp Time, result]
        self._waiting: dict[bytes, list[itf.RequestHeader]] = {}
        self._send_goal = DdsServiceServer(node, action.send_goal, ends["send_goal"], self._on_send_goal)
        self._get_result = DdsServiceServer(node, action.get_result, ends["get_result"], self._on_get_result,
                                            header_callback=True)
        self._cancel = DdsServiceServer(node, itf.CANCEL_GOAL, ends["cancel_goal"], self._on_cancel_goal)
        self._feedback = node.create_publisher(action.feedback_message, ends["feedback"])
        self._status = node.create_publisher(m.GoalStatusArray, ends["status"], LATCHED_QOS)
        self.publish_status()

    # ---- protocol ----
    def _on_send_goal(self, request: Any) -> Any:
        goal_id = uuid_bytes(request.goal_id)
        stamp = m.Time.from_seconds(time.time())
        accepted = bool(self.on_goal(goal_id, request.goal))
        if accepted:
            self.goals[goal_id] = [itf.STATUS_EXECUTING, stamp, None]
            while len(self.goals) > KEEP_GOALS:
                old, (status, _, _) = next(iter(self.goals.items()))
                if status not in itf.TERMINAL:
                    break
                self.goals.pop(old)
            self.publish_status()
        return self.action.send_goal.response(accepted, stamp)

    def _on_get_result(self, header: itf.RequestHeader, request: Any) -> Any:
        goal_id = uuid_bytes(request.goal_id)
        entry = self.goals.get(goal_id)
        if entry is None:
            return self.action.get_result.response(itf.STATUS_UNKNOWN, self.action.result())
        if entry[0] in itf.TERMINAL:
            return self.action.get_result.response(entry[0], entry[2])
        self._waiting.setdefault(goal_id, []).append(header)
        return None

    def _on_cancel_goal(self, request: Any) -> Any:
        goal_id = uuid_bytes(request.goal_info.goal_id)
        everything = not any(goal_id)
        targets = [g for g, e in self.goals.items() if e[0] not in itf.TERMINAL and (everything or g == goal_id)]
        if not targets:
            code = 2 if not everything and goal_id not in self.goals else 3  # UNKNOWN_GOAL_ID / GOAL_TERMINATED
            return itf.CancelGoal_Response(code if not everything else 0, [])
        canceling = []
        for g in targets:
            if self.on_cancel(g):
                if self.goals[g][0] not in itf.TERMINAL:
                    self.goals[g][0] = itf.STATUS_CANCELING
                canceling.append(m.GoalInfo(goal_uuid(g), self.goals[g][1]))
        self.publish_status()
        return itf.CancelGoal_Response(0 if canceling else 1, canceling)

    # ---- the owner's calls ----
    def publish_feedback(self, goal_id: bytes, feedback: Any) -> None:
        self._feedback.publish(self.action.feedback_message(goal_uuid(goal_id), feedback))

    def finish(self, goal_id: bytes, status: int, result: Any) -> None:
        """End a goal (SUCCEEDED, CANCELED or ABORTED) with its result; answers waiting get_result calls."""
        entry = self.goals.get(goal_id)
        if entry is None or entry[0] in itf.TERMINAL:
            return
        entry[0], entry[2] = status, result
        for header in self._waiting.pop(goal_id, []):
            self._get_result.reply(header, self.action.get_result.response(status, result))
        self.publish_status()

    def is_active(self, goal_id: bytes) -> bool:
        entry = self.goals.get(goal_id)
        return entry is not None and entry[0] not in itf.TERMINAL

    def publish_status(self) -> None:
        self._status.publish(m.GoalStatusArray([m.GoalStatus(m.GoalInfo(goal_uuid(g), e[1]), e[0])
                                                for g, e in self.goals.items()]))


class DdsActionClient:
    def __init__(self, node: Any, action: itf.ActionType, name: str) -> None:
        self.action, self.name = action, name
        ends = itf.action_endpoints(name)
        self._send_goal = DdsServiceClient(node, action.send_goal, ends["send_goal"])
        self._get_result = DdsServiceClient(node, action.get_result, ends["get_result"])
        self._cancel = DdsServiceClient(node, itf.CANCEL_GOAL, ends["cancel_goal"])
        self._feedback_cb: dict[bytes, Callable[[bytes, Any], None]] = {}
        self.statuses: dict[bytes, int] = {}
        node.create_subscription(action.feedback_message, ends["feedback"], self._on_feedback)
        node.create_subscription(m.GoalStatusArray, ends["status"], self._on_status, LATCHED_QOS)

    def server_is_ready(self) -> bool:
        return all(c.service_is_ready() for c in (self._send_goal, self._get_result, self._cancel))

    def send_goal(self, goal: Any, on_accepted: Callable[[bytes, bool], None],
                  on_feedback: Callable[[bytes, Any], None] | None = None,
                  on_result: Callable[[bytes, int, Any], None] | None = None) -> bytes:
        goal_id = os.urandom(16)
        if on_feedback is not None:
            self._feedback_cb[goal_id] = on_feedback

        def accepted(response: Any) -> None:
            on_accepted(goal_id, bool(response.accepted))
            if not response.accepted:
                self._feedback_cb.pop(goal_id, None)
                return
            if on_result is not None:
                def done(res: Any) -> None:
                    self._feedback_cb.pop(goal_id, None)
                    on_result(goal_id, int(res.status), res.result)

                self._get_result.call(self.action.get_result.request(goal_uuid(goal_id)), done)

        self._send_goal.call(self.action.send_goal.request(goal_uuid(goal_id), goal), accepted)
        return goal_id

    def cancel(self, goal_id: bytes, on_response: Callable[[Any], None] | None = None) -> None:
        self._cancel.call(itf.CancelGoal_Request(m.GoalInfo(goal_uuid(goal_id), m.Time())),
                          on_response or (lambda _r: None))

    def status(self, goal_id: bytes) -> int:
        return self.statuses.get(goal_id, itf.STATUS_UNKNOWN)

    def _on_feedback(self, msg: Any) -> None:
        goal_id = uuid_bytes(msg.goal_id)
        callback = self._feedback_cb.get(goal_id)
        if callback is not None:
            callback(goal_id, msg.feedback)

    def _on_status(self, msg: m.GoalStatusArray) -> None:
        for s in msg.status_list:
            self.statuses[uuid_bytes(s.goal_info.goal_id)] = int(s.status)
        while len(self.statuses) > 4 * KEEP_GOALS:
            self.statuses.pop(next(iter(self.statuses)))
