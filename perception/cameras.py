"""Pinhole cameras and depth -> point clouds in the robot base frame.

`PinholeCamera` holds the intrinsics `K` (float64 [3, 3]) and the extrinsics `world_to_camera` (float64 [4, 4],
OpenCV camera frame: x right, y down, z forward; world = robot base frame). Build it from PyBullet's view/projection
matrices (`from_pybullet`) or from a ROS ``sensor_msgs/CameraInfo``-like mapping (`from_camera_info`: width,
height, K / k as 9 numbers) plus the camera pose.

`pixel_offset` says where pixel (col, row) sits in continuous image coordinates. A real camera (ROS) uses pixel
centres (0, 0); PyBullet's TinyRenderer puts pixel (col, row) at (col, row + 1) (research/feasibility-sim.md §3:
the +0.5 convention biases object centroids by ~4.5 mm at 128 px).

This module must never import the simulator: it works on any RGB-D camera.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError

#: TinyRenderer's pixel convention (continuous coordinates of pixel (col, row) = (col + 0, row + 1))
TINY_RENDERER_OFFSET = (0.0, 1.0)
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera (y up, z back) -> OpenCV camera (y down, z forward)


@dataclass(frozen=True)
class PinholeCamera:
    width: int
    height: int
    K: np.ndarray  # noqa: N815 - the standard name
    world_to_camera: np.ndarray
    pixel_offset: tuple[float, float] = (0.0, 0.0)
    near: float = 0.0
    far: float = float("inf")

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)  # noqa: N806
        T = np.asarray(self.world_to_camera, dtype=np.float64)  # noqa: N806
        if K.shape != (3, 3) or T.shape != (4, 4):
            raise ConfigError(f"camera needs K [3, 3] and world_to_camera [4, 4], got {K.shape} and {T.shape}")
        if self.width <= 0 or self.height <= 0 or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ConfigError(f"camera size {self.width}x{self.height} and focal lengths {K[0, 0]}, {K[1, 1]} "
                              "must be positive")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "world_to_camera", T)

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_pybullet(cls, view_matrix: Sequence[float], projection_matrix: Sequence[float], width: int,
                      height: int, pixel_offset: tuple[float, float] = TINY_RENDERER_OFFSET) -> PinholeCamera:
        """From PyBullet's column-major 16-element view and projection matrices (near/far read from the projection)."""
        P = np.asarray(projection_matrix, dtype=np.float64).reshape(4, 4, order="F")  # noqa: N806
        V = np.asarray(view_matrix, dtype=np.float64).reshape(4, 4, order="F")  # noqa: N806
        fx, fy = P[0, 0] * width / 2, P[1, 1] * height / 2
        cx, cy = width * (1 - P[0, 2]) / 2, height * (1 + P[1, 2]) / 2
        a, b = P[2, 2], P[2, 3]  # OpenGL: a = -(f+n)/(f-n), b = -2fn/(f-n)
        near, far = b / (a - 1), b / (a + 1)
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])  # noqa: N806
        return cls(width, height, K, _GL_TO_CV @ V, pixel_offset, float(near), float(far))

    @classmethod
    def from_camera_info(cls, info: Mapping[str, Any], world_to_camera: np.ndarray | None = None,
                         camera_to_world: np.ndarray | None = None) -> PinholeCamera:
        """From a ROS CameraInfo-like mapping: `width`, `height`, `K` (or ROS 2's `k`) as 9 numbers or [3, 3].

        The pose comes from TF in ROS; give either `world_to_camera` or `camera_to_world` (identity if neither).
        """
        missing = [k for k in ("width", "height") if k not in info]
        k = info.get("K", info.get("k"))
        if k is None:
            missing.append("K")
        if missing:
            raise ConfigError(f"CameraInfo lacks {', '.join(missing)}; expected width, height and K (row-major 3x3)")
        K = np.asarray(k, dtype=np.float64).reshape(3, 3)  # noqa: N806
        if world_to_camera is None:
            world_to_camera = np.linalg.inv(camera_to_world) if camera_to_world is not None else np.eye(4)
        return cls(int(info["width"]), int(info["height"]), K, np.asarray(world_to_camera, dtype=np.float64))

    # -- geometry --------------------------------------------------------------------------------------------------
    @property
    def camera_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_camera)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points float [N, 3] -> pixel (col, row) float [N, 2] in this camera's pixel convention."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        cam = (self.world_to_camera[:3, :3] @ pts.T + self.world_to_camera[:3, 3:4]).T
        uv = (self.K @ (cam / cam[:, 2:3]).T).T[:, :2]
        return uv - np.asarray(self.pixel_offset)

    def depth_to_points(self, depth: np.ndarray, max_depth: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Metric depth float [H, W] (m along the optical axis) -> (world points float64 [N, 3], mask bool [H, W]).

        Pixels at or beyond `max_depth` (default: 99.9 % of `far`, i.e. background) or non-finite are dropped.
        """
        z = np.asarray(depth, dtype=np.float64)
        if z.shape != (self.height, self.width):
            raise ConfigError(f"depth has shape {list(z.shape)}; this camera is {self.height}x{self.width}")
        limit = max_depth if max_depth is not None else (self.far * 0.999 if np.isfinite(self.far) else np.inf)
        mask = np.isfinite(z) & (z > 0) & (z < limit)
        rows, cols = np.nonzero(mask)
        zs = z[rows, cols]
        u = cols + self.pixel_offset[0]
        v = rows + self.pixel_offset[1]
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        cam = np.stack([(u - cx) * zs / fx, (v - cy) * zs / fy, zs], axis=1)
        c2w = self.camera_to_world
        return cam @ c2w[:3, :3].T + c2w[:3, 3], mask


def depth_buffer_to_metric(buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """OpenGL depth buffer values in [0, 1] -> metric depth float32 [H, W] (m along the optical axis)."""
    b = np.asarray(buffer, dtype=np.float64)
    if near <= 0 or far <= near:
        raise ConfigError(f"need 0 < near < far, got near={near}, far={far}")
    return (far * near / (far - (far - near) * b)).astype(np.float32)


def point_cloud(rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera, max_depth: float | None = None) -> Any:
    """RGB uint8 [H, W, 3] + metric depth float32 [H, W] -> open3d PointCloud in the robot base frame (colours 0..1)."""
    import open3d as o3d

    rgb = np.asarray(rgb)
    if rgb.shape != (camera.height, camera.width, 3):
        raise ConfigError(f"rgb has shape {list(rgb.shape)}; expected [{camera.height}, {camera.width}, 3]")
    pts, mask = camera.depth_to_points(depth, max_depth)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.colors = o3d.utility.Vector3dVector(rgb[mask].astype(np.float64) / 255.0)
    return pcd
