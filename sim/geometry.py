"""Small rotation helpers (quaternions are xyzw, as in PyBullet). Pure numpy; no simulator state."""

from __future__ import annotations

import math

import numpy as np


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b of xyzw quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    return np.array([-q[0], -q[1], -q[2], q[3]])


def quat_from_axis_angle(rotvec: np.ndarray) -> np.ndarray:
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    axis = rotvec / angle
    s = math.sin(angle / 2)
    return np.array([axis[0] * s, axis[1] * s, axis[2] * s, math.cos(angle / 2)])


def axis_angle_from_quat(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    s = math.sqrt(max(0.0, 1.0 - q[3] * q[3]))
    angle = 2 * math.atan2(s, q[3])
    if s < 1e-9:
        return np.zeros(3)
    return q[:3] / s * angle


def yaw_of(q: np.ndarray) -> float:
    """Rotation about world z of a quaternion (xyzw)."""
    x, y, z, w = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def wrap_angle(a: float, period: float = 2 * math.pi) -> float:
    """Wrap `a` into [-period/2, period/2)."""
    return (a + period / 2) % period - period / 2


def yaw_error(a: float, b: float, symmetry: int) -> float:
    """Smallest |a - b| given an object's yaw symmetry order (0 = round: always 0)."""
    if symmetry == 0:
        return 0.0
    return abs(wrap_angle(a - b, 2 * math.pi / symmetry))


def top_down_quat(yaw: float) -> np.ndarray:
    """Gripper pointing straight down (grasp-frame z = -world z), rotated by `yaw` about world z."""
    # roll pi about x gives z down; then yaw about world z
    c, s = math.cos(yaw / 2), math.sin(yaw / 2)
    q_yaw = np.array([0.0, 0.0, s, c])
    return quat_multiply(q_yaw, np.array([1.0, 0.0, 0.0, 0.0]))


def gripper_yaw(q: np.ndarray) -> float:
    """Yaw of a top-down gripper orientation (inverse of `top_down_quat`)."""
    return yaw_of(quat_multiply(q, np.array([-1.0, 0.0, 0.0, 0.0])))
