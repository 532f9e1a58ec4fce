"""Scene graph from one RGB-D frame: table removal, object clustering, colour, coarse shape, size and pose.

Pipeline (research/feasibility-sim.md §3-4): depth -> base-frame points (`cameras`) -> RANSAC table plane (Open3D)
-> points between `min_height` and `max_height` above it (drops the table and the arm above the work area) -> voxel
grid -> DBSCAN clusters -> per cluster: colour by HSV vote (OpenCV) over `keystone_vla.vocab.COLOURS`, footprint and yaw from
the top face's minimum-area rectangle, coarse shape from footprint fill, height and hollowness.

Output: `DetectedObject`s `{id, colour, shape, position, yaw, size, confidence}`; `position` is the centre of the
object's box (top-face centroid in xy, half the height in z), `size` its full extents (length >= width, height).
This module must never import the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keystone_vla.vocab import COLOURS

from .cameras import PinholeCamera
from .objects import DetectedObject

_UNCOLOURED = "grey"  # low saturation, not white: fixtures, kits, the arm
PLANE_SAMPLE = 3000  # points the table plane is fitted on
RANSAC_ITERATIONS = 60  # the table is most of the view (>80 % inliers): 60 draws miss it with p < 1e-5
WHITE_V = 200  # 90th-percentile HSV value of an achromatic object's pixels above which it is white, not grey


@dataclass(frozen=True)
class SceneGraphConfig:
    voxel: float = 0.004
    plane_threshold: float = 0.004
    min_height: float = 0.004  # above the table plane (m)
    max_height: float = 0.12
    cluster_eps: float = 0.012
    min_points: int = 15
    top_band: float = 0.006  # points within this of a cluster's top form its top face
    base_exclusion_radius: float = 0.15  # the arm's own base sits at the origin of the base frame: not an object


def _reference_hues() -> dict[str, tuple[float, float, float]]:
    import cv2

    out = {}
    for name, rgba in COLOURS.items():
        px = np.uint8([[[round(c * 255) for c in rgba[:3]]]])
        h, s, v = cv2.cvtColor(px, cv2.COLOR_RGB2HSV)[0, 0]
        out[name] = (float(h), float(s), float(v))
    return out


def classify_colours(rgb: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per-pixel colour names for RGB uint8 [N, 3]: index into the returned names (vocab colours + 'grey')."""
    import cv2

    refs = _reference_hues()
    names = [*COLOURS, _UNCOLOURED]
    hsv = cv2.cvtColor(np.asarray(rgb, dtype=np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    h, s, v = hsv[:, 0].astype(np.float64), hsv[:, 1].astype(np.float64), hsv[:, 2].astype(np.float64)
    chromatic = [n for n in COLOURS if refs[n][1] > 80]
    hue_ref = np.array([refs[n][0] for n in chromatic])
    d = np.abs(h[:, None] - hue_ref[None, :])
    d = np.minimum(d, 180 - d)  # OpenCV hue wraps at 180
    best = np.array([names.index(chromatic[i]) for i in np.argmin(d, axis=1)])
    achromatic = s < 70
    white = achromatic & (v > 200)
    best[achromatic] = names.index(_UNCOLOURED)
    if "white" in COLOURS:
        best[white] = names.index("white")
    return best, names


def segment_objects(rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera,
                    config: SceneGraphConfig = SceneGraphConfig()) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The point-cloud pipeline: one (points [N, 3], colours [N, 3] in 0..1, height above table [N]) per object.

    The table plane is fitted by RANSAC on a fixed random subsample (the table is most of the view, so a few
    thousand points pin it down); only the points above it go through the voxel grid and DBSCAN.
    """
    import open3d as o3d

    pts, mask = camera.depth_to_points(depth)
    if len(pts) < 3 * config.min_points:
        return []
    cols = np.asarray(rgb)[mask].astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    sample = pts if len(pts) <= PLANE_SAMPLE else pts[rng.choice(len(pts), PLANE_SAMPLE, replace=False)]
    fit = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(sample))
    plane, _ = fit.segment_plane(distance_threshold=config.plane_threshold, ransac_n=3,
                                 num_iterations=RANSAC_ITERATIONS)
    plane = np.asarray(plane, dtype=np.float64)
    if plane[2] < 0:
        plane = -plane
    height = pts @ plane[:3] + plane[3]
    keep = (height > config.min_height) & (height < config.max_height)
    keep &= np.hypot(pts[:, 0], pts[:, 1]) > config.base_exclusion_radius
    if keep.sum() < config.min_points:
        return []
    obj = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts[keep]))
    obj.colors = o3d.utility.Vector3dVector(cols[keep])
    obj = obj.voxel_down_sample(config.voxel)
    opts, ocols = np.asarray(obj.points), np.asarray(obj.colors)
    oh = opts @ plane[:3] + plane[3]
    labels = np.asarray(obj.cluster_dbscan(eps=config.cluster_eps, min_points=5))
    clusters = []
    for label in range(labels.max() + 1 if len(labels) else 0):
        idx = labels == label
        if idx.sum() >= config.min_points:
            clusters.append((opts[idx], ocols[idx], oh[idx]))
    return clusters


def build_scene_graph(rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera,
                      config: SceneGraphConfig = SceneGraphConfig()) -> list[DetectedObject]:
    """Objects on the table seen in one RGB-D frame (rgb uint8 [H, W, 3], metric depth float32 [H, W])."""
    found = [det for pts, cols, h in segment_objects(rgb, depth, camera, config)
             if (det := _describe(pts, cols, h, config)) is not None]
    return _assign_ids(found)


def _describe(pts: np.ndarray, cols: np.ndarray, h: np.ndarray, cfg: SceneGraphConfig) -> DetectedObject | None:
    import cv2

    top = float(h.max())
    top_face = h > top - cfg.top_band
    rgb = np.clip(np.round(cols * 255), 0, 255).astype(np.uint8)
    labels, names = classify_colours(rgb)
    achromatic = np.isin(labels, [names.index(_UNCOLOURED), names.index("white")] if "white" in names else
                         [names.index(_UNCOLOURED)])
    if "white" in names and achromatic.any():
        # shaded sides of a white part look grey: decide white vs grey once per object, from its brightest pixels
        import cv2

        v = cv2.cvtColor(rgb[achromatic].reshape(-1, 1, 3), cv2.COLOR_RGB2HSV)[:, 0, 2]
        labels[achromatic] = names.index("white" if np.percentile(v, 90) > WHITE_V else _UNCOLOURED)
    votes = np.bincount(labels, minlength=len(names))
    colour_i = int(np.argmax(votes))
    colour = names[colour_i]
    confidence = float(votes[colour_i] / votes.sum())
    colour_out = None if colour == _UNCOLOURED else colour
    xy_top = pts[top_face, :2]
    rect = cv2.minAreaRect(pts[:, :2].astype(np.float32))
    (w, l_), angle = sorted(rect[1]), rect[2]
    length, width = float(l_), float(w)
    top_rect = cv2.minAreaRect(xy_top.astype(np.float32)) if len(xy_top) >= 3 else rect
    yaw = _rect_yaw(top_rect)
    centre_xy = np.asarray(top_rect[0], dtype=np.float64) if len(xy_top) >= 3 else xy_top.mean(axis=0)
    shape = _coarse_shape(pts[:, :2], xy_top, length, width, top, rect)
    if shape in ("bowl", "plate", "hole"):
        centre_xy = np.asarray(rect[0], dtype=np.float64)  # a hollow object's top face is its rim
        yaw = _rect_yaw(rect)
    del angle
    position = np.array([centre_xy[0], centre_xy[1], top / 2])
    return DetectedObject("", colour_out, shape, position, yaw, np.array([length, width, top]), confidence)


def _rect_yaw(rect) -> float:
    """Yaw of a cv2.minAreaRect's first side, folded into (-pi/2, pi/2]."""
    box = cv2_box(rect)
    e = box[1] - box[0]
    yaw = float(np.arctan2(e[1], e[0]))
    return float((yaw + np.pi / 2) % np.pi - np.pi / 2)


def cv2_box(rect) -> np.ndarray:
    import cv2

    return cv2.boxPoints(rect).astype(np.float64)


def _coarse_shape(xy: np.ndarray, xy_top: np.ndarray, length: float, width: float, top: float, rect) -> str:
    """Coarse class from the top face's fill of its bounding rectangle (disc ~0.8, box ~1), aspect, height,
    and an empty centre (containers, the hole fixture: their floor is removed with the table)."""
    import cv2

    if length > 0.2 and top < 0.02:
        return "kit"
    centre = np.asarray(rect[0])
    r_in = 0.1 * width
    inner = float(np.mean(np.linalg.norm(xy - centre, axis=1) < r_in))
    expected = np.pi * r_in**2 / max(length * width, 1e-6)
    if length > 0.06 and inner < 0.3 * expected:
        if top >= 0.035:
            return "hole"
        return "bowl" if top >= 0.02 else "plate"
    if top > 1.6 * length:
        return "peg"
    fill = 1.0
    if len(xy_top) >= 5:
        pts32 = xy_top.astype(np.float32)
        top_rect = cv2.minAreaRect(pts32)
        hull = cv2.convexHull(pts32)
        fill = float(cv2.contourArea(hull) / max(top_rect[1][0] * top_rect[1][1], 1e-9))
    aspect = length / max(width, 1e-6)
    round_ = fill < 0.88 and aspect < 1.25
    if top >= 0.032:
        return "cylinder" if round_ else "block"
    if round_:
        return "disc"
    if aspect > 2.2:
        return "bar"
    if fill < 0.8:
        return "ell" if aspect < 1.6 else "tee"
    return "square"


def _assign_ids(objects: list[DetectedObject]) -> list[DetectedObject]:
    """`<colour>_<shape>` (or `<shape>`), numbered left to right (+y first) when several share a name."""
    objects.sort(key=lambda o: -o.position[1])
    counts: dict[str, int] = {}
    for o in objects:
        base = f"{o.colour}_{o.shape}" if o.colour else o.shape
        counts[base] = counts.get(base, 0) + 1
    seen: dict[str, int] = {}
    for o in objects:
        base = f"{o.colour}_{o.shape}" if o.colour else o.shape
        seen[base] = seen.get(base, 0) + 1
        o.id = base if counts[base] == 1 else f"{base}_{seen[base]}"
    return objects
