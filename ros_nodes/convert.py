"""Conversions between ROS messages (`msgs`) and the numpy arrays Keystone computes with.

Shapes: positions float64 [P, dof], times_from_start float64 [P] (seconds), joint vectors float64 [dof], poses
float [7] (x y z metres, quaternion qx qy qz qw), transforms float64 [4, 4].
Pure functions; never publish or hold state here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from keystone_vla.ros_nodes import msgs as m


def trajectory_points(msg: m.JointTrajectory) -> list[tuple[list[float], float]]:
    """[(positions, time_from_start s)] as sent (no validation: that is the shield's job)."""
    return [(list(p.positions), p.time_from_start.to_seconds()) for p in msg.points]


def make_trajectory(joint_names: Sequence[str], positions: np.ndarray, times: np.ndarray,
                    frame_id: str = "", stamp_now: bool = False) -> m.JointTrajectory:
    """Build a JointTrajectory. A zero header stamp means "start now" to ros2_control's trajectory controller."""
    header = m.Header.now(frame_id) if stamp_now else m.Header(m.Time(), frame_id)
    points = [m.JointTrajectoryPoint([float(v) for v in q], [], [], [], m.Duration.from_seconds(float(t)))
              for q, t in zip(np.asarray(positions, dtype=np.float64), np.asarray(times, dtype=np.float64))]
    return m.JointTrajectory(header, list(joint_names), points)


def hold_trajectory(joint_names: Sequence[str], q: np.ndarray | None, hold_time: float = 0.05) -> m.JointTrajectory:
    """A hold: one point at the measured position `q`; with `q` None an empty trajectory (the controller stops
    and holds wherever it is, ros2_control semantics)."""
    if q is None:
        return m.JointTrajectory(m.Header(), list(joint_names), [])
    return make_trajectory(joint_names, np.asarray(q, dtype=np.float64)[None], np.array([hold_time]))


def joint_vector(msg: m.JointState, names: Sequence[str], field: str = "position") -> np.ndarray | None:
    """Values of `field` for `names` in that order; None when a joint is missing or the field is short."""
    values = getattr(msg, field)
    index = {n: i for i, n in enumerate(msg.name)}
    if any(n not in index or index[n] >= len(values) for n in names):
        return None
    return np.array([values[index[n]] for n in names], dtype=np.float64)


def event_json(source: str, code: str, detail: str = "", **extra: Any) -> m.String:
    """A safety/status event as the JSON String the nodes publish."""
    return m.String(json.dumps({"t": time.time(), "source": source, "event": code, "detail": detail, **extra},
                               default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def camera_info_mapping(msg: m.CameraInfo) -> dict[str, Any]:
    """The CameraInfo fields `keystone_vla.perception.cameras.PinholeCamera.from_camera_info` reads."""
    return {"width": int(msg.width), "height": int(msg.height), "k": [float(v) for v in msg.k],
            "distortion_model": msg.distortion_model, "d": [float(v) for v in msg.d]}


def matrix_to_pose(transform: np.ndarray) -> list[float]:
    """A rigid transform float [4, 4] -> [x, y, z, qx, qy, qz, qw] (unit quaternion, qw >= 0). The inverse is
    `keystone_vla.perception.tracker.pose_matrix`."""
    t = np.asarray(transform, dtype=np.float64)
    r = t[:3, :3]
    trace = float(np.trace(r))
    if trace > 0:  # Shepperd: divide by the largest of w, x, y, z for accuracy
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    quat = np.asarray(q) / np.linalg.norm(q)
    if quat[3] < 0:
        quat = -quat
    return [float(v) for v in (*t[:3, 3], *quat)]
