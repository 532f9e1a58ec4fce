"""Scene graph from one RGB-D frame: table removal, object clustering, colour, coarse shape, size and pose, and the
pockets of a kit tray.

Pipeline (research/feasibility-sim.md §3-4): depth -> base-frame points (`cameras`) -> RANSAC table plane (Open3D)
-> points between `min_height` and `max_height` above it (drops the table and the arm above the work area) -> colour
per pixel (OpenCV HSV vote over `keystone_vla.vocab.COLOURS`) -> voxel grid -> DBSCAN clusters of one colour family
each (every chromatic colour alone, white and grey together), so a part in a grey kit or a peg in a grey fixture is
not merged into it -> per cluster: colour vote, coarse shape, size and pose from the top face.

The top face is measured pixel by pixel: each pixel stands for its footprint on the face's plane, so the face's area,
centroid and moments are unbiased at 128 px, where a pixel covers 4-6 mm. A kit tray (a large grey cluster whose
dominant height is a flat top face) is handled apart: anything standing above its top face is split off and described
as objects of its own, and its pockets are the pixels that look below the top face inside the tray's outline; each
such pixel's ray is cut with the top face's plane, which recovers the pocket's opening where the floor itself is
partly hidden behind the rim.

Output: `DetectedObject`s `{id, colour, shape, position, yaw, size, confidence, detail}` in the base frame, named as the
simulator and plans name objects: `<colour>_<shape>` for movable objects and containers, the bare kind for the
one-of-a-kind fixtures (`peg`, keeping its colour attribute; `hole`; `kit`), and `<part shape>_slot` for a pocket
(shape `slot`, `detail` its part shape). `position` is the centre of the object's box (in xy: a kit part's origin as
the catalogue below defines it, else the top face's centre; in z: half way between its top and what it stands on, the
table, a block, or a kit's top face), `yaw` follows the same conventions (a bar along its length, the kit across its length, an ell or tee by its catalogue frame), `size`
its full extents (length >= width, height). This module must never import the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from keystone_vla.vocab import COLOURS

from .cameras import PinholeCamera
from .objects import DetectedObject

_UNCOLOURED = "grey"  # low saturation, not white: fixtures, kits, the arm
PLANE_SAMPLE = 3000  # points the table plane is fitted on
RANSAC_ITERATIONS = 60  # the table is most of the view (>80 % inliers): 60 draws miss it with p < 1e-5
WHITE_V = 200  # 90th-percentile HSV value of an achromatic object's pixels above which it is white, not grey
_FAMILY_OFFSET = 10.0  # m added to x per colour family before DBSCAN: families never share a cluster
_ON_TABLE = 0.008  # a cluster whose lowest point is within this of the table stands on it; else on something
_STACK_GAP = 0.006  # an object lifted off the table stands on one whose top is within this of its lowest point
_NOT_SUPPORTS = ("bowl", "plate", "hole")  # what sits in these is seen over their rims, not standing on them

#: Kit parts' footprints in their own frame, (x0, x1, y0, y1) rectangles (m), origin at the grasp point: the catalogue
#: of the parts a kit holds (the simulator builds its parts and pockets from the same numbers). Perception reads an
#: ell's or tee's origin and yaw by fitting these; the disc is a circle of DISC_RADIUS.
PART_OUTLINES: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "square": ((-0.02, 0.02, -0.02, 0.02),),
    "bar": ((-0.04, 0.04, -0.0125, 0.0125),),
    "ell": ((-0.03, 0.03, -0.0125, 0.0125), (0.03, 0.055, -0.0125, 0.0475)),
    "tee": ((-0.03, 0.03, -0.0125, 0.0125), (0.03, 0.055, -0.045, 0.045)),
}
DISC_RADIUS = 0.022


@dataclass(frozen=True)
class SceneGraphConfig:
    voxel: float = 0.004
    plane_threshold: float = 0.004
    min_height: float = 0.004  # above the table plane (m)
    max_height: float = 0.12
    cluster_eps: float = 0.012
    min_points: int = 15
    top_band: float = 0.0015  # points within this of a cluster's top form its top face (flat in simulation; raise it
    # for a noisy depth camera)
    base_exclusion_radius: float = 0.15  # the arm's own base sits at the origin of the base frame: not an object
    kit_min_length: float = 0.2  # a grey cluster this long whose top face is lower than kit_max_height is a kit tray
    kit_max_height: float = 0.03
    pocket_step: float = 0.002  # a kit pixel this far below the tray's top face looks into a pocket
    min_pocket_pixels: int = 8


# -- colours ------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
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
    best = np.array([names.index(n) for n in chromatic])[np.argmin(d, axis=1)]
    achromatic = s < 70
    white = achromatic & (v > 200)
    best[achromatic] = names.index(_UNCOLOURED)
    if "white" in COLOURS:
        best[white] = names.index("white")
    return best, names


def _families(labels: np.ndarray, names: list[str]) -> np.ndarray:
    """Colour family per pixel: its chromatic colour's index, or one shared family for white and grey (a white
    object's shaded faces read grey)."""
    fam = labels.copy()
    fam[np.isin(labels, [names.index(n) for n in ("white", _UNCOLOURED) if n in names])] = len(names)
    return fam


# -- the frame in the base frame ----------------------------------------------------------------------------------------
@dataclass
class _Frame:
    """The pixels of one frame that lie in the object band above the table, as base-frame points."""

    camera: PinholeCamera
    shape: tuple[int, int]
    plane: np.ndarray  # [4]: unit normal and offset; height of X = plane[:3] @ X + plane[3]
    pts: np.ndarray  # float64 [N, 3]
    rows: np.ndarray  # int [N]
    cols: np.ndarray
    height: np.ndarray  # float64 [N] above the table
    rgb: np.ndarray  # uint8 [N, 3]
    labels: np.ndarray  # int [N] index into `names`
    names: list[str]
    camera_to_world: np.ndarray  # [4, 4]

    def to_plane(self, idx: np.ndarray, height: float, du: float = 0.0, dv: float = 0.0) -> np.ndarray:
        """float [n, 3]: where the rays of pixels `idx` (shifted by du, dv pixels) meet the plane `height` above
        the table."""
        cam = self.camera
        u = self.cols[idx] + cam.pixel_offset[0] + du
        v = self.rows[idx] + cam.pixel_offset[1] + dv
        d_cam = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones(len(u))], axis=1)
        c2w = self.camera_to_world
        d = d_cam @ c2w[:3, :3].T
        origin = c2w[:3, 3]
        n = self.plane[:3]
        t = (height - self.plane[3] - n @ origin) / (d @ n)
        return origin + t[:, None] * d

    def footprints(self, idx: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
        """(xy [n, 2], area [n]) of pixels `idx` on the plane `height` above the table: where each pixel's centre
        ray meets it, and the area the pixel covers there."""
        p0 = self.to_plane(idx, height)[:, :2]
        ju = self.to_plane(idx, height, du=1.0)[:, :2] - p0
        jv = self.to_plane(idx, height, dv=1.0)[:, :2] - p0
        return p0, np.abs(ju[:, 0] * jv[:, 1] - ju[:, 1] * jv[:, 0])


def _lift(rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera, config: SceneGraphConfig) -> _Frame | None:
    """Depth -> points; RANSAC table plane on a fixed random subsample (the table is most of the view, so a few
    thousand points pin it down); keep the points in the object band, outside the arm's base."""
    import open3d as o3d

    pts, mask = camera.depth_to_points(depth)
    if len(pts) < 3 * config.min_points:
        return None
    rng = np.random.default_rng(0)
    sample = pts if len(pts) <= PLANE_SAMPLE else pts[rng.choice(len(pts), PLANE_SAMPLE, replace=False)]
    fit = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(sample))
    plane, _ = fit.segment_plane(distance_threshold=config.plane_threshold, ransac_n=3,
                                 num_iterations=RANSAC_ITERATIONS)
    plane = np.asarray(plane, dtype=np.float64)
    plane /= np.linalg.norm(plane[:3])
    if plane[2] < 0:
        plane = -plane
    height = pts @ plane[:3] + plane[3]
    keep = (height > config.min_height) & (height < config.max_height)
    keep &= np.hypot(pts[:, 0], pts[:, 1]) > config.base_exclusion_radius
    if keep.sum() < config.min_points:
        return None
    rows, cols = np.nonzero(mask)
    colours = np.asarray(rgb)[rows[keep], cols[keep]]
    labels, names = classify_colours(colours)
    return _Frame(camera, depth.shape, plane, pts[keep], rows[keep], cols[keep], height[keep], colours, labels, names,
                  camera.camera_to_world)


def _clusters(frame: _Frame, idx: np.ndarray, config: SceneGraphConfig) -> list[np.ndarray]:
    """Connected groups of pixels `idx` of one colour family each: a voxel grid over the points (one voxel per
    family and cell), DBSCAN on the voxel centres, and every pixel in its voxel's cluster."""
    import open3d as o3d

    if len(idx) < config.min_points:
        return []
    pts = frame.pts[idx].copy()
    pts[:, 0] += _FAMILY_OFFSET * _families(frame.labels[idx], frame.names)
    cell = np.floor(pts / config.voxel).astype(np.int64)
    cell -= cell.min(axis=0)
    span = cell.max(axis=0) + 1
    key = (cell[:, 0] * span[1] + cell[:, 1]) * span[2] + cell[:, 2]
    _, voxel, counts = np.unique(key, return_inverse=True, return_counts=True)
    centres = np.stack([np.bincount(voxel, pts[:, k]) for k in range(3)], axis=1) / counts[:, None]
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(centres))
    labels = np.asarray(cloud.cluster_dbscan(eps=config.cluster_eps, min_points=5))
    if not len(labels) or labels.max() < 0:
        return []
    sizes = np.bincount(labels[labels >= 0])
    pixel_labels = labels[voxel]
    return [idx[pixel_labels == k] for k in range(len(sizes)) if sizes[k] >= config.min_points]


def segment_objects(rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera,
                    config: SceneGraphConfig = SceneGraphConfig()) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The point-cloud pipeline: one (points [N, 3], colours [N, 3] in 0..1, height above table [N]) per cluster."""
    frame = _lift(rgb, depth, camera, config)
    if frame is None:
        return []
    return [(frame.pts[c], frame.rgb[c] / 255.0, frame.height[c])
            for c in _clusters(frame, np.arange(len(frame.pts)), config)]


def build_scene_graph(rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera,
                      config: SceneGraphConfig = SceneGraphConfig()) -> list[DetectedObject]:
    """Objects on the table seen in one RGB-D frame (rgb uint8 [H, W, 3], metric depth float32 [H, W])."""
    frame = _lift(rgb, depth, camera, config)
    if frame is None:
        return []
    found: list[DetectedObject] = []
    loose: list[tuple[np.ndarray, float]] = []  # clusters to describe, each with the height it stands on
    for idx in _clusters(frame, np.arange(len(frame.pts)), config):
        kit = _kit_tray(frame, idx, config)
        if kit is None:
            loose.append((idx, 0.0))
            continue
        tray, pockets, standing = kit
        found.extend([tray, *pockets])
        loose.extend((c, float(tray.size[2])) for c in _clusters(frame, standing, config))
    described = [(idx, _describe(frame, idx, config, support)) for idx, support in loose]
    supports = [d for d in found if d.shape == "kit"] + [d for _, d in described if d.shape not in _NOT_SUPPORTS]
    for i, (idx, det) in enumerate(described):
        bottom = float(np.percentile(frame.height[idx], 5))  # a few pixels may see further down, past a rim
        if bottom < _ON_TABLE or det.size[2] < float(frame.height[idx].max()) - 1e-9:
            continue  # on the table, or its support is known
        # lifted off the table: on another object whose top is where its visible sides end (a block on a block, a
        # part in a kit pocket); a block merely hidden low down by one in front is not, as the front one's top is
        # higher
        for other in supports:
            other_top = other.position[2] + other.size[2] / 2
            if other is not det and abs(other_top - bottom) < _STACK_GAP and _over(det.position, other):
                described[i] = (idx, _describe(frame, idx, config, other_top))
                break
    found.extend(d for _, d in described)
    return _assign_ids(found)


def _over(point: np.ndarray, obj: DetectedObject) -> bool:
    """Whether `point` lies over `obj`'s footprint (a kit's rectangle, with its length along its own y; any other
    object's circle of half its length)."""
    d = np.asarray(point[:2]) - obj.position[:2]
    if obj.shape != "kit":
        return bool(np.linalg.norm(d) < obj.size[0] / 2)
    across, along = np.abs(d @ _rot(obj.yaw))
    return bool(across < obj.size[1] / 2 and along < obj.size[0] / 2)


# -- regions: area, centroid and moments of a planar patch seen pixel by pixel ------------------------------------------
@dataclass(frozen=True)
class _Region:
    xy: np.ndarray  # [n, 2] pixel centres on the patch's plane
    area: np.ndarray  # [n] each pixel's footprint there

    @property
    def total(self) -> float:
        return float(self.area.sum())

    @property
    def centroid(self) -> np.ndarray:
        return self.area @ self.xy / self.total

    def covariance(self) -> np.ndarray:
        d = self.xy - self.centroid
        return (d * self.area[:, None]).T @ d / self.total

    def features(self) -> tuple[float, float, float]:
        """(elongation: sqrt(l1 / l2) of the second moments; compactness: area / (12 sqrt(l1 l2)), 1 for any
        rectangle, pi/3 for a disc, 0.6-0.8 for an ell or tee; four-foldness: |fourth-order complex moment| /
        area^3, 1/60 for a square, 0 for a disc)."""
        lo, hi = np.maximum(np.linalg.eigvalsh(self.covariance()), 1e-12)
        return math.sqrt(hi / lo), self.total / (12 * math.sqrt(hi * lo)), abs(self._c4()) / self.total**3

    def _c4(self) -> complex:
        d = self.xy - self.centroid
        return complex(np.sum(self.area * (d[:, 0] + 1j * d[:, 1]) ** 4))

    def major_axis(self) -> float:
        """Angle of the principal axis of largest spread, folded into (-pi/2, pi/2]."""
        w, v = np.linalg.eigh(self.covariance())
        return _fold(math.atan2(v[1, 1], v[0, 1]), math.pi)

    def fourfold_axis(self) -> float:
        """Angle of a square's sides, folded into (-pi/4, pi/4], from the fourth-order complex moment (a square's
        is negative along its sides)."""
        c4 = self._c4()
        return _fold((math.atan2(c4.imag, c4.real) - math.pi) / 4, math.pi / 2)


def _fold(angle: float, period: float) -> float:
    return float((angle + period / 2) % period - period / 2)


def _rot(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s], [s, c]])


@cache
def _template(shape: str) -> tuple[np.ndarray, float]:
    """A catalogue part's (centroid [2], major-axis angle) in its own frame."""
    step = 0.0005
    axis = np.arange(-0.1, 0.1, step) + step / 2
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    inside = np.zeros(gx.shape, bool)
    for x0, x1, y0, y1 in PART_OUTLINES[shape]:
        inside |= (gx > x0) & (gx < x1) & (gy > y0) & (gy < y1)
    region = _Region(np.stack([gx[inside], gy[inside]], axis=1), np.full(int(inside.sum()), step * step))
    return region.centroid, region.major_axis()


def _misfit(shape: str, region: _Region, yaws: np.ndarray) -> np.ndarray:
    """For each yaw [m]: area-weighted mean squared distance (m^2) of the region's pixels outside the catalogue
    outline placed at that yaw with its centroid on the region's. A pocket is the outline grown by a clearance, so
    its misfit is smallest, not zero, when it is centred and aligned."""
    t_centroid, _ = _template(shape)
    c, s = np.cos(yaws), np.sin(yaws)
    d = region.xy - region.centroid  # [n, 2]
    # the pixels in each candidate's part frame: R(-yaw) d + t_centroid
    x = c[:, None] * d[None, :, 0] + s[:, None] * d[None, :, 1] + t_centroid[0]
    y = -s[:, None] * d[None, :, 0] + c[:, None] * d[None, :, 1] + t_centroid[1]
    dist = np.full(x.shape, np.inf)
    for x0, x1, y0, y1 in PART_OUTLINES[shape]:
        dx = np.maximum(np.maximum(x0 - x, x - x1), 0.0)
        dy = np.maximum(np.maximum(y0 - y, y - y1), 0.0)
        dist = np.minimum(dist, dx * dx + dy * dy)
    return dist @ region.area / region.total


def _part_shape(region: _Region) -> str:
    """Coarse part shape of a flat top face or a pocket opening (see `_Region.features` for the numbers; measured
    at 128 px on simulator scenes: ell and tee compactness <= 0.81, every other shape's >= 0.97; ell elongation >= 1.8,
    tee's <= 1.22; bars' >= 2.4, squares' and discs' <= 1.2; four-foldness >= 0.011 for squares, <= 0.005 for discs)."""
    elongation, compact, fourfold = region.features()
    if compact < 0.88:
        return "ell" if elongation > 1.5 else "tee"
    if elongation > 1.8:
        return "bar"
    return "square" if fourfold > 0.008 else "disc"


def _part_pose(shape: str, region: _Region) -> tuple[np.ndarray, float]:
    """(origin xy, yaw) of a part shape seen as `region`, in the simulator's conventions: a bar along its length,
    a square by its sides, an ell or tee by the catalogue frame (origin at its grasp point)."""
    centroid = region.centroid
    if shape == "disc":
        return centroid, 0.0
    if shape == "square":
        return centroid, region.fourfold_axis()
    if shape == "bar":
        return centroid, region.major_axis()
    # an ell's or tee's yaw: the best fit of its outline, searched around the yaws that put the region's principal
    # axes on the outline's (either way round; a tee's axes are nearly equal in spread, so each of its four)
    t_centroid, t_axis = _template(shape)
    yaw0 = region.major_axis() - t_axis
    turns = np.arange(0, 4, 1 if shape == "tee" else 2)[:, None] * math.pi / 2
    coarse = (yaw0 + turns + np.radians(np.arange(-20, 21, 2.5))[None, :]).ravel()
    best = coarse[int(np.argmin(_misfit(shape, region, coarse)))]
    fine = best + np.radians(np.arange(-2.5, 2.51, 0.25))
    yaw = float(fine[int(np.argmin(_misfit(shape, region, fine)))])
    return centroid - _rot(yaw) @ t_centroid, _fold(yaw, 2 * math.pi)


# -- one cluster --------------------------------------------------------------------------------------------------------
def _describe(frame: _Frame, idx: np.ndarray, cfg: SceneGraphConfig, support: float = 0.0) -> DetectedObject:
    """One object from cluster `idx` standing at height `support` above the table (0: on the table)."""
    import cv2

    h = frame.height[idx]
    top = float(h.max())
    height = top - support
    colour, confidence = _colour(frame, idx)
    face = idx[h > top - cfg.top_band]
    xy_face, area = frame.footprints(face, top)
    region = _Region(xy_face, area)
    pts_xy = frame.pts[idx, :2].astype(np.float32)
    rect = cv2.minAreaRect(pts_xy)
    length, width = (float(v) for v in sorted(rect[1], reverse=True))
    shape = _coarse_shape(pts_xy, region, length, width, height, rect)
    if shape in ("bowl", "plate", "hole"):
        centre_xy, yaw = np.asarray(rect[0], dtype=np.float64), _rect_yaw(rect)  # a hollow object's top face is its rim
    elif shape == "block":
        centre_xy, yaw = region.centroid, region.fourfold_axis()
    elif shape == "peg":  # a top face of a few pixels; the tall sides outline its square sharply
        centre_xy, yaw = region.centroid, _fold(_rect_yaw(rect), math.pi / 2)
    elif shape == "cylinder":
        centre_xy, yaw = region.centroid, 0.0
    else:
        centre_xy, yaw = _part_pose(shape, region)
    position = np.array([centre_xy[0], centre_xy[1], top - height / 2])
    return DetectedObject("", colour, shape, position, yaw, np.array([length, width, height]), confidence)


def _colour(frame: _Frame, idx: np.ndarray) -> tuple[str | None, float]:
    """The cluster's colour by vote (None for grey) and the share of its pixels that voted for it."""
    import cv2

    labels, names = frame.labels[idx].copy(), frame.names
    achromatic = np.isin(labels, [names.index(n) for n in ("white", _UNCOLOURED) if n in names])
    if "white" in names and achromatic.any():
        # shaded sides of a white part look grey: decide white vs grey once per object, from its brightest pixels
        v = cv2.cvtColor(frame.rgb[idx][achromatic].reshape(-1, 1, 3), cv2.COLOR_RGB2HSV)[:, 0, 2]
        labels[achromatic] = names.index("white" if np.percentile(v, 90) > WHITE_V else _UNCOLOURED)
    votes = np.bincount(labels, minlength=len(names))
    best = int(np.argmax(votes))
    return (None if names[best] == _UNCOLOURED else names[best]), float(votes[best] / votes.sum())


def _rect_yaw(rect) -> float:
    """Yaw of a cv2.minAreaRect's first side, folded into (-pi/2, pi/2]."""
    import cv2

    box = cv2.boxPoints(rect).astype(np.float64)
    e = box[1] - box[0]
    return _fold(float(np.arctan2(e[1], e[0])), math.pi)


def _coarse_shape(xy: np.ndarray, face: _Region, length: float, width: float, height: float, rect) -> str:
    """Coarse class: containers and the hole fixture by their empty centre (their floor is removed with the table),
    the peg by its height, blocks and cylinders (4 cm) apart from kit parts (2.5 cm) by height, then the top face's
    shape (`_part_shape`)."""
    centre = np.asarray(rect[0])
    r_in = 0.1 * width
    inner = float(np.mean(np.linalg.norm(xy - centre, axis=1) < r_in))
    expected = np.pi * r_in**2 / max(length * width, 1e-6)
    if length > 0.105 and inner < 0.3 * expected:  # longer than any kit part (a tee: 9 cm)
        if height >= 0.035:
            return "hole"
        return "bowl" if height >= 0.02 else "plate"
    if height > 1.6 * length:
        return "peg"
    shape = _part_shape(face)
    if height >= 0.032:
        return "cylinder" if shape == "disc" else "block"
    return shape


# -- the kit tray -------------------------------------------------------------------------------------------------------
def _kit_tray(frame: _Frame, idx: np.ndarray,
              cfg: SceneGraphConfig) -> tuple[DetectedObject, list[DetectedObject], np.ndarray] | None:
    """(kit, its pockets as slots, the pixels standing above its top face) if cluster `idx` is a kit tray, else
    None. A tray is grey, long, and mostly one flat top face lower than `kit_max_height`."""
    import cv2

    if _colour(frame, idx)[0] is not None:
        return None
    h = frame.height[idx]
    hist, edges = np.histogram(h, bins=np.arange(0.0, cfg.max_height + 0.001, 0.001))
    level = int(np.argmax(hist))
    near = np.abs(h - (edges[level] + 0.0005)) < 0.0015
    top = float(np.median(h[near]))
    if top > cfg.kit_max_height:
        return None
    face = idx[np.abs(h - top) < cfg.pocket_step]
    rect = cv2.minAreaRect(frame.pts[face, :2].astype(np.float32))
    length, width = sorted(rect[1], reverse=True)
    if length < cfg.kit_min_length:
        return None
    standing = idx[h > top + cfg.top_band]
    centre = np.asarray(rect[0], dtype=np.float64)
    yaw = _fold(_long_side(rect) - math.pi / 2, math.pi)  # the kit's own frame has its length along y
    kit = DetectedObject("", None, "kit", np.array([*centre, top / 2]), yaw, np.array([length, width, top]))

    low = idx[h < top - cfg.pocket_step]
    xy, area = frame.footprints(low, top)
    local = (xy - centre) @ _rot(yaw)  # tray frame: width along x, length along y
    inside = np.all(np.abs(local) < np.array([width, length]) / 2 - 0.003, axis=1)
    low, xy, area = low[inside], xy[inside], area[inside]
    image = np.zeros(frame.shape, np.uint8)
    image[frame.rows[low], frame.cols[low]] = 1
    n, labels = cv2.connectedComponents(image, connectivity=8)
    component = labels[frame.rows[low], frame.cols[low]]
    pockets = []
    for k in range(1, n):
        sel = component == k
        if sel.sum() < cfg.min_pocket_pixels:
            continue
        region = _Region(xy[sel], area[sel])
        shape = _part_shape(region)
        origin, pocket_yaw = _part_pose(shape, region)
        floor = float(np.percentile(frame.height[low[sel]], 10))
        extent = _extent(region, pocket_yaw)
        pockets.append(DetectedObject("", None, "slot", np.array([*origin, (floor + top) / 2]), pocket_yaw,
                                      np.array([*extent, top - floor]), 1.0, shape))
    return kit, pockets, standing


def _long_side(rect) -> float:
    """Angle of a cv2.minAreaRect's longer side."""
    import cv2

    box = cv2.boxPoints(rect).astype(np.float64)
    e1, e2 = box[1] - box[0], box[2] - box[1]
    e = e1 if np.linalg.norm(e1) >= np.linalg.norm(e2) else e2
    return float(np.arctan2(e[1], e[0]))


def _extent(region: _Region, yaw: float) -> tuple[float, float]:
    """(length, width) of `region`'s pixel footprints along its own axes, length >= width."""
    d = region.xy @ _rot(yaw)
    half_pixel = math.sqrt(float(np.mean(region.area))) / 2
    ext = sorted((float(np.ptp(d[:, 0])) + 2 * half_pixel, float(np.ptp(d[:, 1])) + 2 * half_pixel), reverse=True)
    return ext[0], ext[1]


# -- ids ----------------------------------------------------------------------------------------------------------------
_BARE_NAMES = ("peg", "hole", "kit")  # one of a kind in a scene: named by kind alone, as plans name them


def _base_id(o: DetectedObject) -> str:
    if o.shape == "slot":
        return f"{o.detail}_slot"
    if o.shape in _BARE_NAMES or not o.colour:
        return o.shape
    return f"{o.colour}_{o.shape}"


def _assign_ids(objects: list[DetectedObject]) -> list[DetectedObject]:
    """Ids as the simulator names objects (see the module docstring), numbered left to right (+y first) when several
    share one."""
    objects.sort(key=lambda o: -o.position[1])
    counts: dict[str, int] = {}
    for o in objects:
        counts[_base_id(o)] = counts.get(_base_id(o), 0) + 1
    seen: dict[str, int] = {}
    for o in objects:
        base = _base_id(o)
        seen[base] = seen.get(base, 0) + 1
        o.id = base if counts[base] == 1 else f"{base}_{seen[base]}"
    return objects
