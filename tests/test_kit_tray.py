"""The kit tray: collidable, parts settle in their pockets, `at_slot` wants a part resting in its pocket, and
perception finds the pockets (real PyBullet, real Open3D/OpenCV)."""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pybullet as p
import pytest

from keystone_vla.sim.objects import (
    DISC_RADIUS,
    KIT_CLEARANCE,
    KIT_HEIGHT,
    KIT_SIZE,
    KIT_THICKNESS,
    PART_HEIGHT,
    Pocket,
    kit_stations,
    kit_tray_boxes,
    make_kit,
    make_part,
)
from keystone_vla.sim.tasks import get_task
from keystone_vla.sim.tasks.base import at_slot
from keystone_vla.sim.world import SimWorld

os.environ.setdefault("OMP_NUM_THREADS", "1")
KIT_XY, KIT_YAW = (0.42, 0.0), 0.1


@pytest.fixture(scope="module")
def world():
    w = SimWorld(image_size=128, cameras=("front",))
    yield w
    w.close()


def _kit(world, shapes=("bar", "tee", "disc"), yaws=(0.3, -0.3, 0.0)):
    world.reset_scene()
    kit, slots = make_kit(world.client, KIT_XY, KIT_YAW, [Pocket(s, y) for s, y in zip(shapes, yaws)])
    world.add_object(kit)
    for slot in slots:
        world.add_object(slot)
    return kit, slots


def _drop(world, slot, dxy=(0.0, 0.0), dyaw=0.0, z=None, colour="red"):
    """A part of the slot's shape released at rest with its bottom at `z` (default: 5 mm above the tray top)."""
    pos = slot.position()[:2] + np.asarray(dxy)
    part = make_part(world.client, slot.extra["shape"], colour, pos, slot.yaw() + dyaw,
                     z=KIT_HEIGHT + 0.005 if z is None else z)
    return world.add_object(part)


def test_tray_boxes_stay_inside_the_tray_and_clear_of_every_pocket():
    from keystone_vla.sim.objects import _pocket_distance, _rot

    for shapes in itertools.permutations(("square", "bar", "disc", "ell", "tee"), 3):
        pockets = [Pocket(s, y) for s, y in zip(shapes, (0.3, -0.3, 0.3))]
        stations = kit_stations(pockets)
        boxes = kit_tray_boxes(pockets)
        assert boxes[0][0][:2] == pytest.approx(np.array(KIT_SIZE) / 2)  # the base plate: the pockets' floor
        assert boxes[0][1][2] + boxes[0][0][2] == pytest.approx(KIT_THICKNESS - KIT_HEIGHT / 2)
        for (hx, hy, hz), (cx, cy, cz), yaw in boxes[1:]:
            assert cz - hz == pytest.approx(KIT_THICKNESS - KIT_HEIGHT / 2)  # the top layer stands on the plate
            assert cz + hz == pytest.approx(KIT_HEIGHT / 2)
            # sample each box's top face; a point inside a box must be neither outside the tray nor in a pocket
            a, b = np.meshgrid(np.linspace(-0.999, 0.999, 7), np.linspace(-0.999, 0.999, 7))
            pts = np.stack([a.ravel() * hx, b.ravel() * hy], axis=1) @ _rot(yaw).T + np.array([cx, cy])
            assert np.all(np.abs(pts) <= np.array(KIT_SIZE) / 2 + 1e-9), shapes
            for pocket, station in zip(pockets, stations):
                local = (pts - station) @ _rot(pocket.yaw)
                if pocket.shape == "disc":  # a 16-sided ring whose sides touch the pocket's circle
                    clear = np.linalg.norm(local, axis=1) >= DISC_RADIUS + KIT_CLEARANCE - 1e-9
                else:
                    clear = _pocket_distance(pocket.shape, local) > 0
                assert np.all(clear), (shapes, pocket)


def test_the_top_layer_covers_the_tray_everywhere_but_the_pockets():
    from keystone_vla.sim.objects import _pocket_distance, _rot

    rng = np.random.default_rng(0)
    for shapes in itertools.permutations(("square", "bar", "disc", "ell", "tee"), 3):
        pockets = [Pocket(s, y) for s, y in zip(shapes, rng.uniform(-0.3, 0.3, 3))]
        pts = rng.uniform(-1, 1, (3000, 2)) * np.array(KIT_SIZE) / 2
        covered = np.zeros(len(pts), bool)
        for (hx, hy, _), (cx, cy, _), yaw in kit_tray_boxes(pockets)[1:]:
            local = (pts - (cx, cy)) @ _rot(yaw)
            covered |= (np.abs(local[:, 0]) <= hx + 1e-9) & (np.abs(local[:, 1]) <= hy + 1e-9)
        for pocket, station in zip(pockets, kit_stations(pockets)):
            local = (pts - station) @ _rot(pocket.yaw)
            covered |= _pocket_distance(pocket.shape, local) == 0  # the disc's: its polygon's circumscribed circle
        assert covered.all(), (shapes, pts[~covered][:3])


def test_a_part_dropped_on_the_tray_between_pockets_rests_on_it(world):
    kit, slots = _kit(world)
    between = (slots[0].position()[:2] + slots[1].position()[:2]) / 2  # on the tray's top, between two pockets
    c, s = math.cos(KIT_YAW), math.sin(KIT_YAW)
    end = np.asarray(KIT_XY) + np.array([-s, c]) * (KIT_SIZE[1] / 2 - 0.012)  # the tray's end rim
    square = world.add_object(make_part(world.client, "square", "green", between, KIT_YAW, z=KIT_HEIGHT + 0.01))
    disc = world.add_object(make_part(world.client, "disc", "blue", end, 0.0, z=KIT_HEIGHT + 0.01))
    world.settle(240)
    for part in (square, disc):
        assert part.position()[2] == pytest.approx(KIT_HEIGHT + PART_HEIGHT / 2, abs=0.002), part.name
    assert not any(at_slot(square, slot) for slot in slots)


@pytest.mark.parametrize("dxy,dyaw", [((0.0, 0.0), 0.0), ((0.002, -0.002), 0.0), ((-0.002, 0.0), math.radians(3))])
def test_a_part_dropped_over_its_pocket_settles_in_it(world, dxy, dyaw):
    kit, slots = _kit(world, ("ell", "tee", "bar"), (0.25, -0.3, 0.3))
    parts = [_drop(world, slot, dxy, dyaw) for slot in slots]
    world.settle(240)
    for part, slot in zip(parts, slots):
        assert part.position()[2] == pytest.approx(KIT_THICKNESS + PART_HEIGHT / 2, abs=0.002), part.name
        assert at_slot(part, slot), part.name


def test_at_slot_wants_the_part_resting_in_its_pocket(world):
    kit, slots = _kit(world, ("square", "bar", "disc"), (0.2, -0.2, 0.0))
    held = _drop(world, slots[1], z=KIT_THICKNESS + 0.03)  # aligned over the pocket, 3 cm up: not yet stepped
    assert not at_slot(held, slots[1])
    resting = _drop(world, slots[0], z=KIT_THICKNESS + 0.001, colour="blue")
    world.settle(120)
    assert at_slot(resting, slots[0])
    assert at_slot(held, slots[1])  # it fell into the pocket once physics ran
    # a bar across its pocket's rims, 90 degrees out, is lifted by the pocket's depth: not in its slot
    kit, slots = _kit(world, ("square", "bar", "disc"), (0.2, -0.2, 0.0))
    crossed = _drop(world, slots[1], dyaw=math.pi / 2)
    world.settle(240)
    assert crossed.position()[2] > KIT_HEIGHT and not at_slot(crossed, slots[1])


@pytest.mark.parametrize("split", ["seen", "unseen"])
def test_perception_finds_the_three_pockets_with_their_shapes(world, split):
    from keystone_vla.perception.cameras import PinholeCamera
    from keystone_vla.perception.scene_graph import build_scene_graph

    for seed in range(3):
        get_task("kit_assembly").reset(world, seed, split)
        cam = world.cameras["front"]
        obs = world.observation(cameras=("front",), depth=True)
        pc = PinholeCamera.from_pybullet(cam.view_matrix, cam.projection_matrix, cam.width, cam.height)
        found = build_scene_graph(obs.images["front"], obs.depth["front"], pc)
        slots = {d.id: d for d in found if d.shape == "slot"}
        truth = {n: o for n, o in world.objects.items() if o.kind == "slot"}
        assert set(slots) == set(truth), (seed, sorted(slots))
        for name, det in slots.items():
            assert det.detail == truth[name].extra["shape"] and det.colour is None
            assert np.linalg.norm(det.position - truth[name].position()) < 0.005, (seed, name, det.position)
        kits = [d for d in found if d.id == "kit"]
        assert len(kits) == 1 and kits[0].shape == "kit"


def test_parts_sitting_in_their_pockets_are_still_seen_as_parts(world):
    from keystone_vla.perception.cameras import PinholeCamera
    from keystone_vla.perception.scene_graph import build_scene_graph

    inst = get_task("kit_assembly").reset(world, 2, "unseen")  # a white ell among them: grey-on-white
    for pair in inst.targets["pairs"].split(";"):
        part, slot = (world.objects[n] for n in pair.split(":"))
        p.resetBasePositionAndOrientation(part.body, (*slot.position()[:2], KIT_THICKNESS + PART_HEIGHT / 2 + 0.001),
                                          p.getQuaternionFromEuler([0, 0, slot.yaw()]), physicsClientId=world.client)
    world.settle(60)
    cam = world.cameras["front"]
    obs = world.observation(cameras=("front",), depth=True)
    pc = PinholeCamera.from_pybullet(cam.view_matrix, cam.projection_matrix, cam.width, cam.height)
    found = {d.id: d for d in build_scene_graph(obs.images["front"], obs.depth["front"], pc)}
    parts = [o for o in world.objects.values() if o.kind not in ("kit", "slot")]
    assert "kit" in found
    for part in parts:
        assert part.name in found, sorted(found)
        assert np.linalg.norm(found[part.name].position[:2] - part.position()[:2]) < 0.005
