"""Cyclone DDS backend of the transport interface: a ROS-2-compatible node without ROS installed.

One DomainParticipant per node; a single-threaded executor (`spin_once`) waits on a WaitSet holding one
ReadCondition per subscription, dispatches callbacks for new samples, then fires due timers, like rclpy's
SingleThreadedExecutor. Writers and readers use XCDR1 data representation (as rmw_cyclonedds does) and the
ROS QoS mapping from `transport.QoS`.

Never call `wait_for_acks` without the wrapper below: cyclonedds 11.0.1 raises AttributeError on its timeout path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from cyclonedds.core import (
    GuardCondition,
    InstanceState,
    Policy,
    Qos,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import DomainParticipant
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from keystone_vla.ros_nodes.transport import (
    DEFAULT_QOS,
    QoS,
    check_parameter,
    dds_topic_name,
    domain_id,
    ensure_dds_config,
    node_logger,
)


def dds_qos(qos: QoS) -> Qos:
    """ROS-style QoS -> Cyclone Qos (keep-last history, XCDR1 representation)."""
    return Qos(
        Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)) if qos.reliable
        else Policy.Reliability.BestEffort,
        Policy.History.KeepLast(qos.depth),
        Policy.Durability.TransientLocal if qos.transient_local else Policy.Durability.Volatile,
        Policy.DataRepresentation(use_cdrv0_representation=True),
    )


class DdsPublisher:
    def __init__(self, writer: DataWriter, topic: str) -> None:
        self.writer, self.topic = writer, topic

    def publish(self, msg: Any) -> None:
        self.writer.write(msg)

    def matched_subscriptions(self) -> int:
        return len(self.writer.get_matched_subscriptions())

    def wait_for_acks(self, timeout_s: float) -> bool:
        """True when every reliable reader acknowledged; False on timeout (works around the 11.0.1 bug)."""
        try:
            return bool(self.writer.wait_for_acks(duration(seconds=timeout_s)))
        except AttributeError:  # cyclonedds 11.0.1: timeout path references a missing retcode constant
            return False


class DdsSubscription:
    def __init__(self, reader: DataReader, condition: ReadCondition, callback: Callable[[Any], None], topic: str):
        self.reader, self.condition, self.callback, self.topic = reader, condition, callback, topic

    def matched_publications(self) -> int:
        return len(self.reader.get_matched_publications())


class DdsTimer:
    def __init__(self, period_s: float, callback: Callable[[], None]) -> None:
        self.period, self.callback = period_s, callback
        self.next_due = time.monotonic() + period_s
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class DdsNode:
    """A Keystone node on plain Cyclone DDS (see module docstring)."""

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        ensure_dds_config()
        self.name = name
        self.log = node_logger(name)
        self._overrides = dict(parameters or {})
        self.parameters: dict[str, Any] = {}
        self.descriptions: dict[str, str] = {}
        self.participant = DomainParticipant(domain_id())
        self._waitset = WaitSet(self.participant)
        self._guard = GuardCondition(self.participant)
        self._waitset.attach(self._guard)
        self._topics: dict[str, Topic] = {}
        self._subs: list[DdsSubscription] = []
        self._timers: list[DdsTimer] = []
        self._stopped = False

    # ---- interface --------------------------------------------------------------------------------------
    def create_publisher(self, msg_type: type, topic: str, qos: QoS = DEFAULT_QOS) -> DdsPublisher:
        return DdsPublisher(self.create_dds_writer(msg_type, dds_topic_name(topic), qos), topic)

    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos: QoS = DEFAULT_QOS) -> DdsSubscription:
        reader = DataReader(self.participant, self._topic(msg_type, dds_topic_name(topic)), qos=dds_qos(qos))
        cond = ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
        self._waitset.attach(cond)
        sub = DdsSubscription(reader, cond, callback, topic)
        self._subs.append(sub)
        return sub

    def create_service(self, srv: Any, name: str, callback: Callable[[Any], Any]) -> Any:
        """A ROS 2 service server (`interfaces.ServiceType`); `callback(request) -> response`."""
        from keystone_vla.ros_nodes.dds_rpc import DdsServiceServer

        return DdsServiceServer(self, srv, name, callback)

    def create_client(self, srv: Any, name: str) -> Any:
        from keystone_vla.ros_nodes.dds_rpc import DdsServiceClient

        return DdsServiceClient(self, srv, name)

    def create_action_server(self, action: Any, name: str, on_goal: Callable[[bytes, Any], bool],
                             on_cancel: Callable[[bytes], bool]) -> Any:
        from keystone_vla.ros_nodes.dds_rpc import DdsActionServer

        return DdsActionServer(self, action, name, on_goal, on_cancel)

    def create_action_client(self, action: Any, name: str) -> Any:
        from keystone_vla.ros_nodes.dds_rpc import DdsActionClient

        return DdsActionClient(self, action, name)

    # ---- raw DDS endpoints (services and actions use ROS's rq/rr topic names) ----------------------------------
    def create_dds_writer(self, msg_type: type, dds_name: str, qos: QoS = DEFAULT_QOS) -> DataWriter:
        return DataWriter(self.participant, self._topic(msg_type, dds_name), qos=dds_qos(qos))

    def create_dds_reader(self, msg_type: type, dds_name: str, callback: Callable[[Any], None],
                          qos: QoS = DEFAULT_QOS) -> DataReader:
        reader = DataReader(self.participant, self._topic(msg_type, dds_name), qos=dds_qos(qos))
        cond = ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
        self._waitset.attach(cond)
        self._subs.append(DdsSubscription(reader, cond, callback, dds_name))
        return reader

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> DdsTimer:
        timer = DdsTimer(float(period_s), callback)
        self._timers.append(timer)
        return timer

    def declare_parameter(self, name: str, default: Any, description: str = "",
                          range: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None) -> Any:
        value = check_parameter(self.name, name, self._overrides.get(name, default), default, range, choices)
        self.parameters[name] = value
        self.descriptions[name] = description
        return value

    def unknown_overrides(self) -> list[str]:
        """Parameter overrides that no `declare_parameter` call consumed (typos)."""
        return sorted(set(self._overrides) - set(self.parameters))

    def spin_once(self, timeout_s: float = 0.1) -> None:
        """Wait up to `timeout_s` (less if a timer is due), then run ready callbacks and due timers."""
        now = time.monotonic()
        live = [t for t in self._timers if not t.cancelled]
        wait = timeout_s if not live else max(0.0, min(timeout_s, min(t.next_due for t in live) - now))
        if wait > 0:
            self._waitset.wait(duration(seconds=wait))
        for sub in list(self._subs):
            for sample in sub.reader.take(N=64):
                if not isinstance(sample, InvalidSample):  # instance-state notices (a writer left), not data
                    sub.callback(sample)
        now = time.monotonic()
        for timer in live:
            if not timer.cancelled and now >= timer.next_due:
                # keep the rate: schedule from the previous deadline, but never fall behind by many periods
                timer.next_due = max(timer.next_due + timer.period, now)
                timer.callback()

    def spin(self, until: Callable[[], bool] | None = None) -> None:
        """Run callbacks until `until()` is true or `shutdown()` is called."""
        while not self._stopped and not (until and until()):
            self.spin_once(0.1)

    def shutdown(self) -> None:
        """Make `spin` return (callable from a signal handler or another thread)."""
        self._stopped = True
        self._guard.set(True)

    def destroy(self) -> None:
        self.shutdown()
        for sub in self._subs:
            self._waitset.detach(sub.condition)
        self._subs, self._timers = [], []

    def now(self) -> float:
        """Wall-clock seconds (ROS time without a simulated clock)."""
        return time.time()

    # ---- helpers ------------------------------------------------------------------------------------------
    def _topic(self, msg_type: type, name: str) -> Topic:
        existing = self._topics.get(name)
        if existing is None:
            existing = self._topics[name] = Topic(self.participant, name, msg_type)
        elif existing.data_type is not msg_type:
            from keystone_vla.errors import ConfigError

            raise ConfigError(f"DDS topic {name} is already used with type {existing.data_type.__name__} in node "
                              f"{self.name}, not {msg_type.__name__}")
        return existing
