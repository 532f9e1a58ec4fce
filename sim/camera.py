"""Cameras: `front` (fixed, looking at the table from the operator's side) and `wrist` (on the gripper).

Rendering uses PyBullet's TinyRenderer. The arm's visual meshes cost ~20 ms per frame even out of view
(research/feasibility-sim.md §2b), so the default `fast` mode hides the meshes and draws the arm as a few box proxies
that follow the links (`ArmProxies`); `full` renders the original meshes (the naive baseline in `scripts/bench_sim.py`).
Frames are rendered only when asked for (control ticks), never per physics step.

Conventions: `K` is the pinhole matrix; `world_to_camera` maps world (= robot base) points to the OpenCV camera frame
(x right, y down, z forward). TinyRenderer pixel (col, row) sits at continuous image coordinates (col, row + 1), see
`PIXEL_OFFSET`; perception corrects for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

PIXEL_OFFSET = (0.0, 1.0)


@dataclass
class CameraFrame:
    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W], metres along the optical axis
    seg: np.ndarray  # int32 [H, W], body id (-1 background)


@dataclass(frozen=True)
class CameraConfig:
    name: str
    eye: tuple[float, float, float] = (0.0, 0.0, 0.0)
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fov_deg: float = 55.0
    near: float = 0.03
    far: float = 2.0
    mounted: bool = False  # True: pose follows the end effector


CAMERA_CONFIGS: dict[str, CameraConfig] = {
    "front": CameraConfig("front", eye=(0.92, 0.0, 0.52), target=(0.48, 0.0, 0.0), up=(-1.0, 0.0, 0.0), fov_deg=50.0),
    "wrist": CameraConfig("wrist", fov_deg=75.0, near=0.02, far=1.2, mounted=True),
}


class Camera:
    """One camera in a `SimWorld`; `render()` returns an RGB-D + segmentation frame."""

    def __init__(self, config: CameraConfig, client: int, width: int, height: int, pose_fn=None) -> None:
        self.config = config
        self.name = config.name
        self.client = client
        self.width = width
        self.height = height
        self.near = config.near
        self.far = config.far
        self._pose_fn = pose_fn  # () -> (eye, target, up) for mounted cameras
        self.projection_matrix = p.computeProjectionMatrixFOV(config.fov_deg, width / height, config.near, config.far)
        self.body_alias: dict[int, int] = {}  # proxy body id -> body id it stands for (segmentation)

    # -- geometry ---------------------------------------------------------------------------------------------------
    def _eye_target_up(self):
        if self._pose_fn is not None:
            return self._pose_fn()
        return self.config.eye, self.config.target, self.config.up

    @property
    def view_matrix(self) -> list[float]:
        eye, target, up = self._eye_target_up()
        return list(p.computeViewMatrix(eye, target, up))

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the standard name
        proj = np.array(self.projection_matrix).reshape(4, 4, order="F")
        fx = proj[0, 0] * self.width / 2
        fy = proj[1, 1] * self.height / 2
        cx = self.width * (1 - proj[0, 2]) / 2
        cy = self.height * (1 + proj[1, 2]) / 2
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])

    @property
    def world_to_camera(self) -> np.ndarray:
        view = np.array(self.view_matrix).reshape(4, 4, order="F")  # world -> OpenGL camera (y up, z back)
        return np.diag([1.0, -1.0, -1.0, 1.0]) @ view

    def depth_to_metric(self, buffer: np.ndarray) -> np.ndarray:
        return (self.far * self.near / (self.far - (self.far - self.near) * buffer)).astype(np.float32)

    # -- rendering --------------------------------------------------------------------------------------------------
    def render(self) -> CameraFrame:
        _, _, rgba, depth, seg = p.getCameraImage(
            self.width,
            self.height,
            viewMatrix=self.view_matrix,
            projectionMatrix=self.projection_matrix,
            renderer=p.ER_TINY_RENDERER,
            physicsClientId=self.client,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(self.height, self.width, 4)[:, :, :3]
        depth = self.depth_to_metric(np.asarray(depth, dtype=np.float32).reshape(self.height, self.width))
        seg = np.asarray(seg, dtype=np.int32).reshape(self.height, self.width)
        seg = np.where(seg >= 0, seg & ((1 << 24) - 1), -1).astype(np.int32)
        for proxy, real in self.body_alias.items():
            seg[seg == proxy] = real
        return CameraFrame(np.ascontiguousarray(rgb), depth, seg)


class ArmProxies:
    """Cheap stand-ins for the arm's visual meshes: one box per link segment, moved before each render.

    Distances between consecutive joint frames of a serial arm are constant, so each segment's box is sized once.
    """

    def __init__(self, client: int, robot_body: int, link_chain: list[int], finger_links: list[int]) -> None:
        self.client = client
        self.robot = robot_body
        self.fingers = finger_links
        pts = [np.array(self._link_pose(link)[0]) for link in link_chain]
        self.segments: list[tuple[int, int, int]] = []  # (proxy body, link a, link b)
        for a, b, pa, pb in zip(link_chain[:-1], link_chain[1:], pts[:-1], pts[1:]):
            length = float(np.linalg.norm(pb - pa))
            if length < 0.01:
                continue
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[0.04, 0.04, length / 2 + 0.02],
                                      rgbaColor=(0.92, 0.92, 0.94, 1.0), physicsClientId=client)
            self.segments.append((p.createMultiBody(0, -1, vis, physicsClientId=client), a, b))
        self.hand_link = link_chain[-1]
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[0.025, 0.07, 0.03], rgbaColor=(0.3, 0.3, 0.32, 1),
                                  physicsClientId=client)
        self.hand = p.createMultiBody(0, -1, vis, physicsClientId=client)
        self.finger_bodies = []
        for _ in finger_links:
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[0.01, 0.006, 0.025], rgbaColor=(0.15, 0.15, 0.15, 1),
                                      physicsClientId=client)
            self.finger_bodies.append(p.createMultiBody(0, -1, vis, physicsClientId=client))
        # hide the real meshes (alpha 0 makes TinyRenderer skip them)
        for link in range(-1, p.getNumJoints(robot_body, physicsClientId=client)):
            p.changeVisualShape(robot_body, link, rgbaColor=[1, 1, 1, 0], physicsClientId=client)

    @property
    def all_bodies(self) -> list[int]:
        return [s[0] for s in self.segments] + [self.hand, *self.finger_bodies]

    def _link_pose(self, link: int):
        if link == -1:
            return p.getBasePositionAndOrientation(self.robot, physicsClientId=self.client)
        st = p.getLinkState(self.robot, link, computeForwardKinematics=True, physicsClientId=self.client)
        return st[4], st[5]

    def update(self) -> None:
        for body, a, b in self.segments:
            pa, pb = np.array(self._link_pose(a)[0]), np.array(self._link_pose(b)[0])
            d = pb - pa
            z = d / max(float(np.linalg.norm(d)), 1e-9)
            axis = np.cross([0.0, 0.0, 1.0], z)
            s = float(np.linalg.norm(axis))
            if s < 1e-9:
                q = [0, 0, 0, 1] if z[2] > 0 else [1, 0, 0, 0]
            else:
                ang = np.arctan2(s, z[2])
                q = [*(axis / s * np.sin(ang / 2)), np.cos(ang / 2)]
            p.resetBasePositionAndOrientation(body, (pa + pb) / 2, q, physicsClientId=self.client)
        hp, hq = self._link_pose(self.hand_link)
        p.resetBasePositionAndOrientation(self.hand, hp, hq, physicsClientId=self.client)
        for body, link in zip(self.finger_bodies, self.fingers):
            fp, fq = self._link_pose(link)
            p.resetBasePositionAndOrientation(body, fp, fq, physicsClientId=self.client)
