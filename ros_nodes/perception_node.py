"""perception node: RGB-D frames in, the scene graph out on `/keystone/scene`.

Subscribes the front camera's colour (`/camera/front/image_raw`, rgb8), depth (`/camera/front/depth/image_raw`,
32FC1 metres or 16UC1 millimetres) and `camera_info`. Colour and depth frames are paired by header stamp (within
`pair_slop` s; a camera driver stamps both with the capture time); each pair goes through
`keystone_vla.perception.scene_source.perceive_objects` (the scene graph `keystone eval` measures with: the same
height band, the arm reaching into it dropped) with the camera model built from the latest CameraInfo and the
`camera_pose` calibration. When the node falls behind, only the newest pair is processed and older ones
are dropped (counted): a scene graph is useful only while it is fresh.

Each frame yields one latched JSON message on `/keystone/scene`:
``{"stamp": <colour header stamp, s>, "frame_id": "base_link", "objects": [DetectedObject.to_dict(), ...]}``,
or the same with ``"objects": []`` and a ``"failure"`` saying why there is no scene this time ("no depth frame
...", "empty scene ...", "no camera_info ...", or the error the pipeline raised). `/keystone/perception/status`
(latched JSON, 1 Hz) and the log report frame counts and the measured per-frame latency: `compute_ms` (decoding +
scene graph) and `age_ms` (from the frame's stamp to publication).

`camera_pose` is the camera's optical frame (x right, y down, z forward) in ``base_link`` as x y z qx qy qz qw,
from the cell's hand-eye calibration (config/sim.yaml holds the simulator's). All zeros (the default) means "not
calibrated" and the node refuses to start: a wrong pose would put every object in the wrong place. The node
publishes the calibration as the static transform ``base_link`` -> `camera_frame` on `/tf_static` (it does not
read TF), and `/diagnostics` at 1 Hz.

This node never sees the simulator: it works from the camera topics alone.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.convert import camera_info_mapping
from keystone_vla.ros_nodes.diagnostics import Diagnostics
from keystone_vla.ros_nodes.transport import LATCHED_QOS, SENSOR_QOS, Node

BASE_FRAME = "base_link"
BUFFERED_FRAMES = 8  # colour / depth frames kept while waiting for their partner


def parse_camera_pose(values: Any) -> np.ndarray:
    """`camera_pose` (x y z qx qy qz qw) -> camera_to_base float64 [4, 4]; raises ConfigError naming the fix."""
    from keystone_vla.perception.tracker import pose_matrix

    pose = np.asarray(values, dtype=np.float64).reshape(-1) if values is not None else np.zeros(0)
    if pose.shape != (7,) or not np.all(np.isfinite(pose)):
        raise ConfigError(f"perception: camera_pose must be 7 numbers x y z qx qy qz qw (the camera's optical frame "
                          f"in {BASE_FRAME}, metres), got {values!r}")
    norm = float(np.linalg.norm(pose[3:]))
    if norm < 1e-6:
        raise ConfigError("perception: camera_pose is not set (its quaternion is zero); give the camera's optical "
                          f"frame in {BASE_FRAME} from your hand-eye calibration as x y z qx qy qz qw")
    if abs(norm - 1.0) > 1e-3:
        raise ConfigError(f"perception: camera_pose's quaternion has norm {norm:.4f}, not 1; check the calibration")
    return pose_matrix(pose)


def stamp_seconds(header: m.Header) -> float:
    return header.stamp.to_seconds()


class PerceptionNode:
    def __init__(self, node: Node) -> None:
        self.node = node
        pose = node.declare_parameter("camera_pose", [0.0] * 7, f"the camera's optical frame in {BASE_FRAME} "
                                      "(x y z qx qy qz qw) from the hand-eye calibration")
        self.camera_to_base = parse_camera_pose(pose)
        self.camera_frame = str(node.declare_parameter("camera_frame", "front_camera_optical",
                                                       "the camera's optical frame id (TF child frame)"))
        self.pair_slop = float(node.declare_parameter("pair_slop", 0.005, "largest colour/depth stamp difference (s)",
                                                      range=(0.0, 0.5)))
        self.depth_timeout = float(node.declare_parameter("depth_timeout", 0.5, "how long a colour frame waits for "
                                                          "its depth frame (s)", range=(0.01, 10.0)))
        self.log_every = int(node.declare_parameter("log_every", 50, "frames between latency log lines; 0: never",
                                                    range=(0, 100000)))
        self.colour: deque[tuple[float, m.Image, float]] = deque(maxlen=BUFFERED_FRAMES)  # (stamp, msg, received)
        self.depth: deque[tuple[float, m.Image]] = deque(maxlen=BUFFERED_FRAMES)
        self.pending: tuple[m.Image, m.Image] | None = None
        self.info: m.CameraInfo | None = None
        self._camera: Any = None
        self._camera_key: tuple | None = None
        self.frames = self.failures = self.dropped = 0
        self.compute_ms: deque[float] = deque(maxlen=200)
        self.age_ms: deque[float] = deque(maxlen=200)
        self.last_objects = 0
        self.scene_pub = node.create_publisher(m.String, topics.SCENE, LATCHED_QOS)
        self.status_pub = node.create_publisher(m.String, topics.PERCEPTION_STATUS, LATCHED_QOS)
        node.create_subscription(m.Image, topics.CAMERA_IMAGE, self.on_colour, SENSOR_QOS)
        node.create_subscription(m.Image, topics.CAMERA_DEPTH, self.on_depth, SENSOR_QOS)
        node.create_subscription(m.CameraInfo, topics.CAMERA_INFO, self.on_info, SENSOR_QOS)
        node.create_timer(0.01, self.process)
        node.create_timer(1.0, self.publish_status)
        self.diag = Diagnostics(node, "perception", lambda: "ok" if self.frames else "waiting for camera frames")
        self.diag.values = lambda: {"frames": self.frames, "failures": self.failures, "dropped": self.dropped,
                                    "objects": self.last_objects}
        # the calibration as static TF, so the cell's tools (RViz, a MoveIt planning scene) see the camera too
        self.tf_pub = node.create_publisher(m.TFMessage, topics.TF_STATIC, LATCHED_QOS)
        self.tf_pub.publish(m.TFMessage([m.TransformStamped(m.Header.now(BASE_FRAME), self.camera_frame,
                                                            m.Transform.from_pose([float(v) for v in pose]))]))

    # ---- inputs: buffer and pair; the work happens in `process` -------------------------------------------
    def on_info(self, msg: m.CameraInfo) -> None:
        self.info = msg

    def on_colour(self, msg: m.Image) -> None:
        self.colour.append((stamp_seconds(msg.header), msg, time.monotonic()))
        self._pair()

    def on_depth(self, msg: m.Image) -> None:
        self.depth.append((stamp_seconds(msg.header), msg))
        self._pair()

    def _pair(self) -> None:
        """Make the newest colour/depth pair with matching stamps pending; frames older than it are dropped."""
        for ci in range(len(self.colour) - 1, -1, -1):
            stamp, colour, _ = self.colour[ci]
            match = next((di for di in range(len(self.depth) - 1, -1, -1)
                          if abs(self.depth[di][0] - stamp) <= self.pair_slop), None)
            if match is None:
                continue
            if self.pending is not None:
                self.dropped += 1  # a newer pair replaces one not yet processed
            self.pending = (colour, self.depth[match][1])
            for _ in range(ci + 1):
                self.colour.popleft()
            for _ in range(match + 1):
                self.depth.popleft()
            return

    # ---- the scene graph ----------------------------------------------------------------------------------
    def process(self) -> None:
        if self.pending is not None:
            colour, depth = self.pending
            self.pending = None
            self.publish_frame(colour, depth)
            return
        # a colour frame whose depth never came: say so (once per frame), never guess without depth
        while self.colour and time.monotonic() - self.colour[0][2] > self.depth_timeout:
            stamp, _, _ = self.colour.popleft()
            self.publish_failure(stamp, f"no depth frame on {topics.CAMERA_DEPTH} within {self.pair_slop * 1e3:.0f} ms "
                                        f"of the colour frame's stamp (waited {self.depth_timeout} s)")

    def camera(self) -> Any:
        """The camera model for the latest CameraInfo (rebuilt only when the intrinsics change)."""
        from keystone_vla.perception.cameras import PinholeCamera

        info = self.info
        key = (info.width, info.height, tuple(info.k))
        if key != self._camera_key:
            self._camera = PinholeCamera.from_camera_info(camera_info_mapping(info), camera_to_world=self.camera_to_base)
            self._camera_key = key
        return self._camera

    def publish_frame(self, colour: m.Image, depth: m.Image) -> None:
        from keystone_vla.perception.scene_source import perceive_objects

        stamp = stamp_seconds(colour.header)
        if self.info is None:
            self.publish_failure(stamp, f"no camera_info received on {topics.CAMERA_INFO}; cannot project depth")
            return
        t0 = time.perf_counter()
        try:
            objects = perceive_objects(colour.to_rgb(), depth.to_depth(), self.camera())
        except ConfigError as exc:  # wrong encoding, sizes that disagree with camera_info, ...
            self.publish_failure(stamp, str(exc))
            return
        compute = (time.perf_counter() - t0) * 1e3
        msg: dict[str, Any] = {"stamp": stamp, "frame_id": BASE_FRAME, "objects": [o.to_dict() for o in objects]}
        if not objects:
            msg["failure"] = "empty scene: the camera sees no objects on the table"
            self.failures += 1
        self.scene_pub.publish(m.String(json.dumps(msg)))
        self.frames += 1
        self.diag.tick("scenes")
        self.last_objects = len(objects)
        self.compute_ms.append(compute)
        self.age_ms.append((time.time() - stamp) * 1e3)  # stamps are wall-clock ROS time
        if self.log_every > 0 and self.frames % self.log_every == 0:
            s = self.latency()
            self.node.log.info(f"{self.frames} frames: latency p50 {s['compute_ms']['p50']} ms, p95 "
                               f"{s['compute_ms']['p95']} ms (age at publication p50 {s['age_ms']['p50']} ms); "
                               f"{self.dropped} dropped, {self.failures} failures")

    def publish_failure(self, stamp: float, reason: str) -> None:
        self.failures += 1
        self.diag.error(reason)
        self.scene_pub.publish(m.String(json.dumps({"stamp": stamp, "frame_id": BASE_FRAME, "objects": [],
                                                    "failure": reason})))
        self.node.log.warning(f"no scene for the frame at {stamp:.3f}: {reason}")

    # ---- status -------------------------------------------------------------------------------------------
    def latency(self) -> dict[str, Any]:
        def stats(values: deque[float]) -> dict[str, float | None]:
            if not values:
                return {"last": None, "p50": None, "p95": None, "max": None}
            a = np.asarray(values)
            return {"last": round(float(a[-1]), 2), "p50": round(float(np.percentile(a, 50)), 2),
                    "p95": round(float(np.percentile(a, 95)), 2), "max": round(float(a.max()), 2)}

        return {"compute_ms": stats(self.compute_ms), "age_ms": stats(self.age_ms)}

    def publish_status(self) -> None:
        self.status_pub.publish(m.String(json.dumps({
            "t": time.time(), "frames": self.frames, "failures": self.failures, "dropped": self.dropped,
            "objects": self.last_objects, "camera_info": self.info is not None, **self.latency()})))
