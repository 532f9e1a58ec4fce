"""The perception node and the camera topics sim_bridge publishes for it: calibration, pairing, the scene JSON."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import dds_domain_fixture

from keystone_vla.errors import ConfigError
from keystone_vla.perception.objects import DetectedObject
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes.diagnostics import Diagnostics
from keystone_vla.ros_nodes.graph import CONFIG_DIR
from keystone_vla.ros_nodes.runner import build_node, load_params_file

_dds_domain = dds_domain_fixture("perception_node")


@pytest.fixture(scope="module")
def cell():
    """A pick_place scene (seed 3) and one front-camera frame as sim_bridge publishes it (through CDR bytes)."""
    from keystone_vla.ros_nodes.sim_bridge import SimBridgeNode
    from keystone_vla.sim.tasks import get_task
    from keystone_vla.sim.world import SimWorld

    world = SimWorld(cameras=("front",), image_size=128)
    get_task("pick_place").reset(world, 3, "seen")
    sent: dict[str, object] = {}

    class Capture:
        def __init__(self, key: str) -> None:
            self.key = key

        def publish(self, msg) -> None:
            sent[self.key] = type(msg).deserialize(msg.serialize())

    class NoTransport:  # what Diagnostics needs of a node, without DDS
        def create_publisher(self, msg_type, topic):
            return Capture(topic)

        def create_timer(self, period, callback):
            return None

    class Bridge(SimBridgeNode):  # the bridge's own camera code, without a transport
        def __init__(self) -> None:
            self.world = world
            self.camera_info = self._camera_info()
            self.img_pub, self.depth_pub, self.info_pub = Capture("colour"), Capture("depth"), Capture("info")
            self.diag = Diagnostics(NoTransport(), "sim_bridge", lambda: "ok")

    bridge = Bridge()
    bridge.publish_camera()
    assert bridge.diag.counts == {"camera_frames": 1}  # the frame counts towards the bridge's camera rate
    yield world, sent
    world.close()


def perception(**params):
    node = build_node("perception", {**load_params_file(str(CONFIG_DIR / "sim.yaml"), "perception"), **params},
                      "dds")
    out: list[dict] = []
    node.scene_pub.publish = lambda msg: out.append(json.loads(msg.data))
    return node, out


def test_sim_camera_topics_and_the_calibration_give_the_simulators_camera(cell):
    from keystone_vla.perception.cameras import PinholeCamera
    from keystone_vla.perception.tracker import pose_matrix
    from keystone_vla.ros_nodes.convert import camera_info_mapping, matrix_to_pose
    from keystone_vla.ros_nodes.sim_bridge import camera_pose
    from keystone_vla.sim.scene_sources import calibration

    world, sent = cell
    pose = load_params_file(str(CONFIG_DIR / "sim.yaml"), "perception")["camera_pose"]
    np.testing.assert_allclose(pose, camera_pose(world), atol=1e-6)  # config/sim.yaml matches the simulator
    np.testing.assert_allclose(matrix_to_pose(pose_matrix(np.array(pose))), pose, atol=1e-6)
    ros_cam = PinholeCamera.from_camera_info(camera_info_mapping(sent["info"]), camera_to_world=pose_matrix(pose))
    points = np.array([[0.5, 0.1, 0.02], [0.3, -0.2, 0.0], [0.7, 0.25, 0.1]])
    # the same pixels as the simulator's own camera model (TinyRenderer's pixel shift folded into the intrinsics)
    np.testing.assert_allclose(ros_cam.project(points), calibration(world)["front"].project(points), atol=1e-4)
    colour, depth = sent["colour"], sent["depth"]
    assert colour.header == depth.header == sent["info"].header and depth.encoding == "32FC1"
    assert colour.header.frame_id == "front_camera_optical"


def test_perception_node_publishes_the_perceived_scene_graph(cell):
    world, sent = cell
    node, out = perception()
    try:
        node.on_info(sent["info"])
        node.on_colour(sent["colour"])
        assert out == [] and node.pending is None  # waits for the depth frame with the same stamp
        node.on_depth(sent["depth"])
        node.process()
        assert len(out) == 1 and set(out[0]) == {"stamp", "frame_id", "objects"}
        scene = out[0]
        assert scene["stamp"] == sent["colour"].header.stamp.to_seconds() and scene["frame_id"] == "base_link"
        assert {o["id"] for o in scene["objects"]} == set(world.objects)
        for obj in scene["objects"]:
            true = np.array(world.objects[obj["id"]].pose()[0])
            assert np.abs(np.array(obj["position"][:2]) - true[:2]).max() < 0.01  # measured ...
            assert not np.allclose(obj["position"], true, atol=1e-5)  # ... not copied from the simulator
        latency = node.latency()
        assert latency["compute_ms"]["last"] > 0 and latency["age_ms"]["last"] >= latency["compute_ms"]["last"]
    finally:
        node.node.destroy()


def test_perception_node_reports_missing_depth_and_empty_scenes(cell):
    _, sent = cell
    node, out = perception(depth_timeout=0.05)
    try:
        node.on_info(sent["info"])
        late = m.Image.from_depth(sent["depth"].to_depth(), m.Header(m.Time.from_seconds(
            sent["colour"].header.stamp.to_seconds() + 0.05), "front_camera_optical"))
        node.on_colour(sent["colour"])
        node.on_depth(late)  # 50 ms off: not this colour frame's depth
        time.sleep(0.06)
        node.process()
        assert len(out) == 1 and out[0]["objects"] == [] and out[0]["failure"].startswith("no depth frame")
        blank = m.Image.from_depth(np.full((128, 128), np.nan, np.float32), sent["colour"].header)
        node.on_colour(sent["colour"])
        node.on_depth(blank)
        node.process()
        assert out[-1]["objects"] == [] and out[-1]["failure"].startswith("empty scene")
        assert node.failures == 2
    finally:
        node.node.destroy()


def test_perception_node_needs_a_calibrated_camera_pose():
    with pytest.raises(ConfigError, match="camera_pose is not set"):
        build_node("perception", {}, "dds")
    with pytest.raises(ConfigError, match="camera_pose is not set"):  # a real cell must fill it in
        build_node("perception", load_params_file(str(CONFIG_DIR / "robot.yaml"), "perception"), "dds")
    with pytest.raises(ConfigError, match="7 numbers"):
        build_node("perception", {"camera_pose": [0.9, 0.0, 0.5]}, "dds")


def test_matrix_to_pose_round_trips_every_rotation():
    from keystone_vla.perception.tracker import pose_matrix
    from keystone_vla.ros_nodes.convert import matrix_to_pose

    rng = np.random.default_rng(0)
    quats = [*rng.normal(size=(50, 4)), [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0.7, 0.7, 0, 0]]
    for q in quats:
        pose = np.array([0.1, -0.2, 0.3, *(np.asarray(q, float) / np.linalg.norm(q))])
        back = matrix_to_pose(pose_matrix(pose))
        assert back[6] >= 0
        np.testing.assert_allclose(pose_matrix(np.array(back)), pose_matrix(pose), atol=1e-9)


def test_the_arm_parked_low_over_the_scene_gives_no_phantom_objects():
    """With the hand parked 12.6 cm over the plate (about where a run left it), the fingers reach into the work
    band: the perception node drops what is taller than any table object, and the policy's tracker leaves the rest
    of the fingers out, so an instruction given then is grounded in the parts on the table only. (Measured with a
    12 cm band, as the node had before it shared `keystone eval`'s: the fingers' clusters were cut at the band's
    top, below the grasp point, and came back as two grey pegs and a block.)"""
    from keystone_vla.perception.scene_graph import SceneGraphConfig, build_scene_graph
    from keystone_vla.perception.scene_source import TALLEST_OBJECT, WORK_BAND_TOP
    from keystone_vla.perception.tracker import SceneTracker
    from keystone_vla.ros_nodes.sim_bridge import SimBridgeNode
    from keystone_vla.sim.scene_sources import calibration
    from keystone_vla.sim.tasks import get_task
    from keystone_vla.sim.world import SimWorld

    world = SimWorld(cameras=("front",), image_size=128)
    try:
        get_task("pick_place").reset(world, 3, "seen")
        world.robot.reset(np.array([-0.0421, -0.1111, -0.0279, -2.8362, -0.0079, 2.7241, 0.7224]))
        assert 0.12 < world.robot.ee_pose()[2] < 0.13
        frame = world.render("front")
        raw = build_scene_graph(frame.rgb, frame.depth, calibration(world)["front"],
                                SceneGraphConfig(max_height=WORK_BAND_TOP))
        assert any(o.size[2] > TALLEST_OBJECT for o in raw)  # the arm does reach down into the band here

        class Bridge(SimBridgeNode):  # only the bridge's camera_info
            def __init__(self) -> None:
                self.world = world

        info = Bridge()._camera_info()
        node, out = perception()
        try:
            node.on_info(type(info).deserialize(info.serialize()))
            header = m.Header.now("front_camera_optical")
            node.on_colour(m.Image.from_rgb(frame.rgb, header))
            node.on_depth(m.Image.from_depth(frame.depth.astype(np.float32), header))
            node.process()
        finally:
            node.node.destroy()
        objects = [DetectedObject.from_dict(o) for o in out[-1]["objects"]]
        assert objects and all(o.size[2] <= TALLEST_OBJECT for o in objects)
        view = SceneTracker().update(objects, world.robot.ee_pose(), 1.0)
        assert view.failure is None and set(view.objects) == set(world.objects), sorted(view.objects)
    finally:
        world.close()
