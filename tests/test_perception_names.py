"""Perception names every task's scene the way the simulator does: the same ids, poses within a few millimetres and
degrees of the truth (real PyBullet renders at the closed loop's 128 px front camera, real Open3D/OpenCV)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from keystone_vla.perception.cameras import PinholeCamera
from keystone_vla.perception.objects import from_ground_truth
from keystone_vla.perception.scene_graph import DISC_RADIUS, PART_OUTLINES, build_scene_graph

os.environ.setdefault("OMP_NUM_THREADS", "1")
TASKS = ("pick_place", "stack", "insert", "kit_assembly", "build_tower")
XY_TOL = 0.005
YAW_TOL = math.radians(10)


@pytest.fixture(scope="module")
def world():
    from keystone_vla.sim.world import SimWorld

    w = SimWorld(image_size=128, cameras=("front",))
    yield w
    w.close()


def _yaw_error(a: float, b: float, symmetry: int) -> float:
    if symmetry == 0:
        return 0.0
    period = 2 * math.pi / symmetry
    return abs((a - b + period / 2) % period - period / 2)


def test_perception_part_catalogue_is_the_simulators():
    from keystone_vla.sim.objects import DISC_RADIUS as SIM_DISC_RADIUS
    from keystone_vla.sim.objects import PART_BOXES

    assert DISC_RADIUS == SIM_DISC_RADIUS
    assert set(PART_OUTLINES) == set(PART_BOXES)
    for shape, boxes in PART_BOXES.items():
        rects = [(cx - hx, cx + hx, cy - hy, cy + hy) for (hx, hy, _), (cx, cy, _) in boxes]
        np.testing.assert_allclose(PART_OUTLINES[shape], rects, atol=1e-12, err_msg=shape)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", ["seen", "unseen"])
def test_perceived_ids_and_poses_match_the_simulator(world, task: str, split: str) -> None:
    from keystone_vla.sim.tasks import get_task

    cam = world.cameras["front"]
    for seed in range(3):
        get_task(task).reset(world, seed, split)
        obs = world.observation(cameras=("front",), depth=True)
        camera = PinholeCamera.from_pybullet(cam.view_matrix, cam.projection_matrix, cam.width, cam.height)
        found = {d.id: d for d in build_scene_graph(obs.images["front"], obs.depth["front"], camera)}
        assert set(found) == set(world.objects), (seed, sorted(found), sorted(world.objects))
        for name, obj in world.objects.items():
            det, truth = found[name], from_ground_truth(obj)
            assert det.shape == truth.shape and det.colour == truth.colour and det.detail == truth.detail, (seed, det)
            xy = float(np.linalg.norm(det.position[:2] - truth.position[:2]))
            assert xy < XY_TOL, f"{task}/{split}/{seed} {name}: {1000 * xy:.1f} mm"
            yaw = _yaw_error(det.yaw, truth.yaw, obj.symmetry)
            assert yaw < YAW_TOL, f"{task}/{split}/{seed} {name}: yaw off by {math.degrees(yaw):.1f} deg"
