"""Time interpolation of a JointTrajectory, as ros2_control's joint_trajectory_controller does for position-only
points ("splines" with positions only = linear interpolation between waypoints).

A new trajectory replaces the active one and starts from the currently commanded position (no jump); an empty
trajectory stops and holds the current command; after the last point the last position is held.
`GoalMonitor` applies a FollowJointTrajectory goal's path and goal tolerances the way the controller does.
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


class GoalMonitor:
    """The tolerance checks joint_trajectory_controller applies to a FollowJointTrajectory goal (positions only).

    `path` / `goal` tolerances are float64 [dof] in rad, 0 = not checked (the controller default) and -1 = erased;
    `goal_time` (s): how long after the trajectory's end the joints may take to come within `goal`, 0 = wait as
    long as it takes. `check` returns None while the goal runs, else (succeeded, error_code, error_string) with the
    control_msgs result codes (0 SUCCESSFUL, -4 PATH_TOLERANCE_VIOLATED, -5 GOAL_TOLERANCE_VIOLATED).
    """

    def __init__(self, joint_names: list[str], end_time: float, path: np.ndarray, goal: np.ndarray,
                 goal_time: float) -> None:
        self.names = list(joint_names)
        self.end_time = float(end_time)
        self.path, self.goal, self.goal_time = np.asarray(path, float), np.asarray(goal, float), float(goal_time)

    @staticmethod
    def _violations(error: np.ndarray, tol: np.ndarray) -> np.ndarray:
        return np.flatnonzero((tol > 0) & (np.abs(error) > tol))

    def check(self, now: float, desired: np.ndarray, actual: np.ndarray, final: np.ndarray) -> tuple | None:
        """`desired`: the commanded position now; `final`: the trajectory's last point (all float64 [dof])."""
        if now < self.end_time:
            bad = self._violations(actual - desired, self.path)
            if len(bad):
                i = int(bad[0])
                return (False, -4, f"path tolerance violated: {self.names[i]} is {abs(actual[i] - desired[i]):.4f} "
                                   f"rad from its setpoint (tolerance {self.path[i]:.4f})")
            return None
        bad = self._violations(actual - final, self.goal)
        if not len(bad):
            return True, 0, ""
        if self.goal_time > 0 and now > self.end_time + self.goal_time:
            i = int(bad[0])
            return (False, -5, f"goal tolerance violated: {self.names[i]} is {abs(actual[i] - final[i]):.4f} rad "
                               f"from its goal (tolerance {self.goal[i]:.4f}) {self.goal_time} s after the end")
        return None
