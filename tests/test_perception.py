"""Cameras and scene graph against the simulator's ground truth (real PyBullet renders, real Open3D/OpenCV)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from keystone_vla.errors import ConfigError
from keystone_vla.perception.cameras import PinholeCamera, depth_buffer_to_metric, point_cloud
from keystone_vla.perception.objects import from_ground_truth
from keystone_vla.perception.scene_graph import build_scene_graph, classify_colours
from keystone_vla.vocab import COLOURS

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def world():
    from keystone_vla.sim.world import SimWorld

    w = SimWorld(image_size=128, cameras=("front",))
    yield w
    w.close()


def camera_of(world) -> PinholeCamera:
    cam = world.cameras["front"]
    return PinholeCamera.from_pybullet(cam.view_matrix, cam.projection_matrix, cam.width, cam.height)


def test_pybullet_intrinsics_and_extrinsics_match_the_sim(world) -> None:
    cam = world.cameras["front"]
    pc = camera_of(world)
    np.testing.assert_allclose(pc.K, cam.K, atol=1e-9)
    np.testing.assert_allclose(pc.world_to_camera, cam.world_to_camera, atol=1e-9)
    assert pc.near == pytest.approx(cam.near, abs=1e-6) and pc.far == pytest.approx(cam.far, abs=1e-4)


def test_depth_buffer_to_metric_round_trip() -> None:
    near, far = 0.03, 2.0
    z = np.array([[0.03, 0.5], [1.0, 2.0]])
    buf = (far - far * near / z) / (far - near)  # the OpenGL depth buffer of metric z
    np.testing.assert_allclose(depth_buffer_to_metric(buf, near, far), z, rtol=1e-6)
    with pytest.raises(ConfigError, match="0 < near < far"):
        depth_buffer_to_metric(buf, 2.0, 1.0)


def test_camera_info_round_trip_projects_back_to_the_pixel() -> None:
    info = {"width": 64, "height": 48, "k": [50.0, 0, 32, 0, 50.0, 24, 0, 0, 1]}
    cam_to_world = np.eye(4)
    cam_to_world[:3, 3] = [0.5, 0.0, 1.0]
    cam_to_world[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking straight down
    pc = PinholeCamera.from_camera_info(info, camera_to_world=cam_to_world)
    depth = np.full((48, 64), 1.0, dtype=np.float32)
    pts, mask = pc.depth_to_points(depth)
    assert mask.all() and len(pts) == 64 * 48
    np.testing.assert_allclose(pts[:, 2], 0.0, atol=1e-12)  # the plane 1 m below the camera is z = 0
    uv = pc.project(pts)
    rows, cols = np.nonzero(mask)
    np.testing.assert_allclose(uv, np.stack([cols, rows], axis=1), atol=1e-9)
    with pytest.raises(ConfigError, match="lacks K"):
        PinholeCamera.from_camera_info({"width": 4, "height": 4})


def test_point_cloud_is_in_the_base_frame(world) -> None:
    from keystone_vla.sim.tasks import get_task

    get_task("stack").reset(world, 0, "seen")
    frame = world.cameras["front"].render()
    pcd = point_cloud(frame.rgb, frame.depth, camera_of(world))
    pts = np.asarray(pcd.points)
    assert len(pts) == int((frame.depth < world.cameras["front"].far * 0.999).sum())
    table = frame.seg.reshape(-1)[frame.depth.reshape(-1) < 1.998]
    # most of the view is the table top: z = 0 within a millimetre
    assert np.median(np.abs(pts[:, 2])) < 0.001 and len(table) == len(pts)
    assert np.asarray(pcd.colors).max() <= 1.0


def test_colour_classifier_names_every_vocab_colour() -> None:
    rgb = np.array([[round(c * 255) for c in rgba[:3]] for rgba in COLOURS.values()], dtype=np.uint8)
    idx, names = classify_colours(rgb)
    assert [names[i] for i in idx] == list(COLOURS)
    idx, names = classify_colours(np.array([[140, 140, 148]], dtype=np.uint8))
    assert names[idx[0]] == "grey"


@pytest.mark.parametrize("split", ["seen", "unseen"])
def test_scene_graph_matches_ground_truth(world, split: str) -> None:
    from keystone_vla.sim.tasks import get_task

    errors, colours_ok, colours_n, shapes_ok, shapes_n = [], 0, 0, 0, 0
    for task in ("pick_place", "stack", "build_tower", "insert", "kit_assembly"):
        for seed in range(2):
            get_task(task).reset(world, seed, split)
            frame = world.cameras["front"].render()
            found = build_scene_graph(frame.rgb, frame.depth, camera_of(world))
            for gt in (from_ground_truth(o) for o in world.objects.values()):
                visible = int((frame.seg == world.objects[gt.id].body).sum())
                det = min(found, key=lambda d: np.linalg.norm(d.position[:2] - gt.position[:2]))
                assert np.linalg.norm(det.position[:2] - gt.position[:2]) < 0.02, (task, seed, gt.id, found)
                shapes_n += 1
                shapes_ok += det.shape == gt.shape
                if gt.colour is not None:
                    colours_n += 1
                    colours_ok += det.colour == gt.colour
                if gt.shape in ("block", "cylinder", "peg", "square", "disc", "bar") and visible > 40:
                    errors.append(float(np.linalg.norm(det.position[:2] - gt.position[:2])))
            assert len(found) == len(world.objects), (task, seed, found)  # the kit's pockets are slots
    assert np.mean(errors) <= 0.005, f"mean xy error {1000 * np.mean(errors):.1f} mm"
    assert colours_ok / colours_n >= 0.98, f"colour {colours_ok}/{colours_n}"
    assert shapes_ok / shapes_n >= 0.9, f"shape {shapes_ok}/{shapes_n}"


def test_scene_graph_output_grounds(world) -> None:
    from keystone_vla.perception.grounding import GroundedPlan, ground_instruction
    from keystone_vla.sim.tasks import get_task

    inst = get_task("pick_place").reset(world, 1, "seen")
    frame = world.cameras["front"].render()
    found = build_scene_graph(frame.rgb, frame.depth, camera_of(world))
    assert all(set(d.to_dict()) >= {"id", "colour", "shape", "position", "yaw", "size", "confidence"} for d in found)
    g = ground_instruction(inst.instruction, found, world.spec)
    assert isinstance(g, GroundedPlan), g
    assert g.calls() == inst.plan.calls()
