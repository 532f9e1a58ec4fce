"""`/diagnostics` (diagnostic_msgs/DiagnosticArray) for a Keystone node: its state, last error and message rates.

One `DiagnosticStatus` named ``keystone/<node>`` at 1 Hz: level from the node's state (OK, WARN for an e-stop, a
hold or a refusal, ERROR for a fault or a failure), message = the state, values = ``last_error`` (and when), one
``<name>_hz`` rate per counter the node ticks (measured over the last period) and whatever `values()` adds.
What a cell's diagnostic aggregator / HMI reads; never used for control.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics

OK, WARN, ERROR, STALE = 0, 1, 2, 3
WARN_STATES = ("estop", "refused", "halted", "cancelled", "hold")
ERROR_STATES = ("fault", "failed", "error")


def level_of(state: str) -> int:
    head = state.split(":", 1)[0].strip()
    if head in ERROR_STATES:
        return ERROR
    return WARN if head in WARN_STATES else OK


class Diagnostics:
    def __init__(self, node: Any, name: str, state: Callable[[], str], period: float = 1.0) -> None:
        self.name = f"keystone/{name}"
        self.state = state
        self.values: Callable[[], dict[str, Any]] = dict
        self.counts: dict[str, int] = {}
        self._last_counts: dict[str, int] = {}
        self._last_t = time.monotonic()
        self.last_error = ""
        self.last_error_t: float | None = None
        self.pub = node.create_publisher(m.DiagnosticArray, topics.DIAGNOSTICS)
        node.create_timer(period, self.publish)

    def tick(self, counter: str, n: int = 1) -> None:
        self.counts[counter] = self.counts.get(counter, 0) + n

    def error(self, text: str) -> None:
        self.last_error, self.last_error_t = text, time.time()

    def status(self) -> m.DiagnosticStatus:
        now = time.monotonic()
        dt = max(now - self._last_t, 1e-6)
        rates = {f"{k}_hz": round((v - self._last_counts.get(k, 0)) / dt, 2) for k, v in self.counts.items()}
        self._last_counts, self._last_t = dict(self.counts), now
        state = self.state()
        values = {"last_error": self.last_error,
                  "last_error_age_s": "" if self.last_error_t is None else f"{time.time() - self.last_error_t:.1f}",
                  **rates, **self.values()}
        return m.DiagnosticStatus(level_of(state), self.name, state, "",
                                  [m.KeyValue(str(k), str(v)) for k, v in values.items()])

    def publish(self) -> None:
        self.pub.publish(m.DiagnosticArray(m.Header.now(), [self.status()]))
