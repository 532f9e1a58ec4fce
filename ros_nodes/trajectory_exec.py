"""Time interpolation of a JointTrajectory, as ros2_control's joint_trajectory_controller does for position-only
points ("splines" with positions only = linear interpolation between waypoints).

A new trajectory replaces the active one and starts from the currently commanded position (no jump); an empty
trajectory stops and holds the current command; after the last point the last position is held.
Pure arithmetic on numpy arrays (positions float64 [P, dof], times float64 [P]); never talks to a simulator.
"""

from __future__ import annotations

import numpy as np


class TrajectoryInterpolator:
    def __init__(self, q_initial: np.ndarray) -> None:
        self._hold = np.asarray(q_initial, dtype=np.float64).copy()
        self._t0 = 0.0
        self._times = np.zeros(0)
        self._points = np.zeros((0, self._hold.size))

    @property
    def active(self) -> bool:
        """True while the trajectory still has points to reach."""
        return len(self._times) > 0

    def set(self, positions: np.ndarray, times: np.ndarray, now: float) -> None:
        """Start a trajectory at `now` (seconds, any monotonic clock) from the current command."""
        start = self.sample(now)
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, self._hold.size)
        if len(positions) == 0:
            self.stop(now)
            return
        self._hold, self._t0 = start, now
        self._times = np.asarray(times, dtype=np.float64).reshape(-1)
        self._points = positions

    def stop(self, now: float) -> None:
        """Hold the position commanded at `now`."""
        self._hold = self.sample(now)
        self._times = np.zeros(0)
        self._points = np.zeros((0, self._hold.size))

    def sample(self, now: float) -> np.ndarray:
        """Commanded joint positions at `now`."""
        if not len(self._times):
            return self._hold.copy()
        t = now - self._t0
        if t >= self._times[-1]:
            end = self._points[-1].copy()
            self._hold, self._times, self._points = end, np.zeros(0), np.zeros((0, self._hold.size))
            return end.copy()
        knots_t = np.concatenate([[0.0], self._times])
        knots_q = np.vstack([self._hold, self._points])
        i = int(np.searchsorted(knots_t, t, side="right")) - 1
        i = max(0, min(i, len(knots_t) - 2))
        span = knots_t[i + 1] - knots_t[i]
        alpha = 0.0 if span <= 0 else (t - knots_t[i]) / span
        return knots_q[i] + np.clip(alpha, 0.0, 1.0) * (knots_q[i + 1] - knots_q[i])
