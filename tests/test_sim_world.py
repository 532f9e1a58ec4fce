"""SimWorld: arms, cameras (intrinsics/extrinsics agree with rendering), fast render mode, action executor."""

from __future__ import annotations

import numpy as np
import pytest

from keystone_vla.errors import SimError
from keystone_vla.sim.objects import make_block
from keystone_vla.sim.world import SimWorld


@pytest.fixture(scope="module")
def world():
    w = SimWorld(arm="panda", image_size=128, cameras=("front", "wrist"))
    yield w
    w.close()


def test_camera_matrices_project_an_object_onto_its_own_pixels(world):
    world.reset_scene()
    blk = world.add_object(make_block(world.client, "red", (0.5, 0.1), 0.0))
    world.settle(30)
    cam = world.cameras["front"]
    frame = world.render("front")
    top = blk.position() + np.array([0, 0, 0.02])
    pc = cam.world_to_camera @ np.append(top, 1.0)
    uv = (cam.K @ pc[:3])[:2] / pc[2]
    col, row = int(round(uv[0])), int(round(uv[1] - 1.0))  # TinyRenderer pixel offset (camera.PIXEL_OFFSET)
    assert frame.seg[row, col] == blk.body
    # metric depth at that pixel equals the camera-frame z of the top face (within 5 mm)
    assert abs(frame.depth[row, col] - pc[2]) < 0.005
    assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (128, 128, 3)


def test_fast_and_full_render_agree_on_objects():
    full = SimWorld(arm="panda", cameras=("front",), render_mode="full")
    fast = SimWorld(arm="panda", cameras=("front",), render_mode="fast")
    for w in (full, fast):
        w.add_object(make_block(w.client, "blue", (0.55, -0.1), 0.3))
        w.settle(10)
    a, b = full.render("front"), fast.render("front")
    blk_full = a.seg == list(full.objects.values())[0].body
    blk_fast = b.seg == list(fast.objects.values())[0].body
    assert blk_full.sum() > 20 and (blk_full == blk_fast).mean() > 0.999
    assert (b.seg == fast.robot.body).any(), "the arm proxies must show up as the robot in segmentation"
    full.close()
    fast.close()


def test_actions_move_the_end_effector_by_the_commanded_delta(world):
    world.reset_scene()
    start = world.robot.ee_pose()[:3].copy()
    for _ in range(10):
        world.apply_action(np.array([0.01, -0.01, 0.0, 0, 0, 0, 0], dtype=np.float32))
    world.apply_action(np.zeros(7, dtype=np.float32))
    moved = world.robot.ee_pose()[:3] - start
    np.testing.assert_allclose(moved, [0.1, -0.1, 0.0], atol=0.004)


def test_oversized_actions_are_clipped_and_bad_actions_rejected(world):
    world.reset_scene()
    start = world.robot.ee_pose()[:3].copy()
    world.apply_action(np.array([1.0, 0, 0, 0, 0, 0, 0]))
    assert np.linalg.norm(world.target_pose[0] - start) <= 0.0501
    with pytest.raises(SimError, match="7 finite numbers"):
        world.apply_action(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(SimError, match="7 finite"):
        world.apply_action(np.zeros(6))


def test_second_arm_has_the_same_interface():
    w = SimWorld(arm="iiwa", cameras=("front",))
    assert w.state_vector().shape == (8,) and w.robot.gripper_opening() > 0.95
    w.apply_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    for _ in range(5):
        w.apply_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert w.robot.gripper_opening() < 0.1
    w.close()


def test_bad_world_arguments_list_valid_choices():
    with pytest.raises(Exception, match="valid choices: iiwa, panda"):
        SimWorld(arm="ur5")
    with pytest.raises(SimError, match="valid cameras"):
        SimWorld(cameras=("top",))
