"""Smaller ROS-side pieces: trajectory interpolation, parameter files, backend choice, the speech node, and the
policy node's grounding, holds and run ends on hand-made scene graphs (the perception node's JSON)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import dds_domain_fixture

from keystone_vla.errors import ConfigError
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.runner import build_node, load_params_file, parse_overrides
from keystone_vla.ros_nodes.trajectory_exec import TrajectoryInterpolator
from keystone_vla.ros_nodes.transport import choose_backend, dds_topic_name

_dds_domain = dds_domain_fixture("nodes_misc")


def test_interpolator_is_linear_in_time_and_holds_the_end():
    it = TrajectoryInterpolator(np.zeros(2))
    it.set(np.array([[1.0, 2.0], [3.0, 2.0]]), np.array([1.0, 2.0]), now=10.0)
    np.testing.assert_allclose(it.sample(10.5), [0.5, 1.0])
    np.testing.assert_allclose(it.sample(11.5), [2.0, 2.0])
    np.testing.assert_allclose(it.sample(15.0), [3.0, 2.0])
    assert not it.active


def test_interpolator_new_trajectory_starts_from_the_current_command_and_empty_stops():
    it = TrajectoryInterpolator(np.zeros(1))
    it.set(np.array([[2.0]]), np.array([2.0]), now=0.0)
    it.set(np.array([[0.0]]), np.array([1.0]), now=1.0)  # replaces at q = 1.0, no jump
    np.testing.assert_allclose(it.sample(1.0), [1.0])
    np.testing.assert_allclose(it.sample(1.5), [0.5])
    it.set(np.zeros((0, 1)), np.zeros(0), now=1.5)  # empty: stop and hold
    np.testing.assert_allclose(it.sample(9.0), [0.5])


def test_params_file_and_overrides(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters: {arm: iiwa}\nsafety:\n  ros__parameters:\n    watchdog_period: 0.1\n"
                 "    shield: {tcp_speed_limit: 0.2}\npolicy:\n  ros__parameters: {policy: broken}\n")
    assert load_params_file(str(f), "safety") == {"arm": "iiwa", "watchdog_period": 0.1, "shield.tcp_speed_limit": 0.2}
    assert parse_overrides(["seed=3", "task=stack", "rate=2.5"]) == {"seed": 3, "task": "stack", "rate": 2.5}
    with pytest.raises(ConfigError, match="name=value"):
        parse_overrides(["seed"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_params_file(str(tmp_path / "missing.yaml"), "safety")


def test_safety_node_reads_shield_parameters():
    node = build_node("safety", {"arm": "iiwa", "shield.tcp_speed_limit": 0.1, "watchdog_period": 0.3}, "dds")
    try:
        assert node.spec.name == "iiwa" and node.shield.limits.tcp_speed_limit == 0.1
        assert node.watchdog_period == 0.3
    finally:
        node.node.destroy()
    with pytest.raises(ConfigError, match="must be float"):
        build_node("safety", {"watchdog_period": "fast"}, "dds")


def test_backend_choice(monkeypatch):
    monkeypatch.setenv("KEYSTONE_ROS_BACKEND", "dds")
    assert choose_backend() == "dds"
    monkeypatch.setenv("KEYSTONE_ROS_BACKEND", "zenoh")
    with pytest.raises(ConfigError, match="zenoh"):
        choose_backend()
    monkeypatch.delenv("KEYSTONE_ROS_BACKEND")
    try:
        import rclpy  # noqa: F401

        assert choose_backend() == "rclpy"
    except ImportError:
        assert choose_backend() == "dds"
        with pytest.raises(ConfigError, match="source your ROS 2"):
            choose_backend("rclpy")
    assert dds_topic_name("/joint_states") == "rt/joint_states"
    with pytest.raises(ConfigError):
        dds_topic_name("/")


def test_unknown_node_name():
    with pytest.raises(ConfigError, match="valid choices: perception, policy, safety, sim_bridge, speech"):
        build_node("planner", {}, "dds")


@pytest.mark.slow
def test_speech_node_publishes_instruction_and_estop(tmp_path):
    from keystone_vla.perception.speech_synth import synthesize
    from keystone_vla.ros_nodes.dds_backend import DdsNode

    synthesize("stack the red block on the blue block", "en-us", tmp_path / "a_instruction.wav")
    synthesize("stop", "en-us", tmp_path / "b_stop.wav")
    (tmp_path / "c_broken.wav").write_bytes(b"RIFF....not audio")
    with pytest.raises(ConfigError, match="threshold"):
        build_node("speech", {"wav_dir": str(tmp_path), "threshold": 1.5}, "dds")
    speech = build_node("speech", {"wav_dir": str(tmp_path), "poll_rate": 20.0}, "dds")
    harness = DdsNode("speech_harness")
    got: dict[str, list] = {"instruction": [], "estop": [], "speech": [], "diagnostics": []}
    harness.create_subscription(m.String, topics.INSTRUCTION, lambda s: got["instruction"].append(s.data))
    harness.create_subscription(m.Bool, topics.ESTOP, lambda b: got["estop"].append(b.data))
    harness.create_subscription(m.String, "/keystone/speech", lambda s: got["speech"].append(json.loads(s.data)))
    harness.create_subscription(m.DiagnosticArray, topics.DIAGNOSTICS,
                                lambda a: got["diagnostics"].extend(s for s in a.status if s.name == "keystone/speech"))
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and (len(got["speech"]) < 2 or speech.totals["bad_files"] < 1):
            speech.node.spin_once(0.02)
            harness.spin_once(0.02)
        assert [u["file"] for u in got["speech"]] == ["a_instruction.wav", "b_stop.wav"]
        assert got["instruction"] == ["stack the red block on the blue block"]
        assert got["estop"] == [True]
        # the broken file is reported on /diagnostics (state, last error, totals), and the node keeps running
        got["diagnostics"].clear()
        end = time.monotonic() + 5
        while time.monotonic() < end and not got["diagnostics"]:
            speech.node.spin_once(0.02)
            harness.spin_once(0.02)
        status = got["diagnostics"][-1]
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == 2 and status.message == "error: could not decode c_broken.wav"
        assert "not a PCM WAV file" in values["last_error"]
        assert (values["utterances"], values["accepted"], values["stops"], values["bad_files"]) == ("2", "2", "1", "1")
    finally:
        speech.node.destroy()
        harness.destroy()


def test_packaged_parameter_files_match_the_nodes(tmp_path):
    from keystone_vla.ros_nodes.graph import CONFIG_DIR

    for config, node_name in [("sim.yaml", n) for n in ("sim_bridge", "perception", "safety", "policy")] + \
            [("robot.yaml", "policy")]:
        params = load_params_file(str(CONFIG_DIR / config), node_name)
        assert params, node_name
        # unknown keys or wrong types would raise; the policy's checkpoint load is another test's cost
        obj = build_node(node_name, {**params, "policy": "scripted"} if node_name == "policy" else params, "dds")
        try:
            assert set(params) <= set(obj.node.parameters)
            undescribed = [n for n in obj.node.parameters if not obj.node.descriptions.get(n)]
            assert not undescribed, f"{node_name} declares parameters without a description: {undescribed}"
        finally:
            getattr(obj, "close", lambda: None)()
            obj.node.destroy()
    speech = build_node("speech", {"wav_dir": str(tmp_path)}, "dds")
    try:
        assert all(speech.node.descriptions[n] for n in speech.node.parameters), speech.node.descriptions
    finally:
        speech.node.destroy()
    assert load_params_file(str(CONFIG_DIR / "sim.yaml"), "policy")["policy"] == "keystone-base"
    params = load_params_file(str(CONFIG_DIR / "robot.yaml"), "safety")
    obj = build_node("safety", params, "dds")
    assert obj.shield.limits.max_step == 0.15
    obj.node.destroy()


def test_launch_files_and_ament_metadata_agree():
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "ros_nodes"
    setup = (root / "setup.py").read_text()
    entry = set(re.findall(r'"(\w+)"', setup.split("console_scripts")[1].split("]")[0]))
    assert entry == {"sim_bridge", "perception", "policy", "safety", "speech"}
    for launch in ("sim.launch.py", "robot.launch.py"):
        tree = ast.parse((root / "launch" / launch).read_text())
        executables = {kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                       for kw in node.keywords if kw.arg == "executable"}
        assert executables and executables <= entry, (launch, executables)
        assert {"perception", "policy", "safety"} <= executables, (launch, executables)
    xml = (root / "package.xml").read_text()
    assert "<name>keystone_vla</name>" in xml and "<build_type>ament_python</build_type>" in xml
    assert (root / "resource" / "keystone_vla").exists()


def test_policy_node_resolves_its_agent_as_keystone_eval_does():
    from keystone_vla.policies.agent_config import PRESETS

    node = build_node("policy", {"policy": "keystone-base"}, "dds")  # no preset: the checkpoint's agent.json
    try:
        assert node.agent == PRESETS["shipped"] and node.policy.config == PRESETS["shipped"]
    finally:
        node.close()
        node.node.destroy()
    node = build_node("policy", {"policy": "keystone-base", "agent": "raw"}, "dds")
    try:
        assert node.policy.config == PRESETS["raw"] and node.policy.assists == []
    finally:
        node.close()
        node.node.destroy()
    with pytest.raises(ConfigError, match="unknown agent preset 'rwa'"):
        build_node("policy", {"policy": "keystone-base", "agent": "rwa"}, "dds")


def test_policy_node_refuses_the_oracle_and_policies_without_begin():
    with pytest.raises(ConfigError, match="reads the simulator's true state"):
        build_node("policy", {"policy": "oracle"}, "dds")
    with pytest.raises(ConfigError, match="has no begin"):
        build_node("policy", {"policy": "broken"}, "dds")


def scene_msg(objects: list[dict], age: float = 0.0, failure: str | None = None) -> m.String:
    """A /keystone/scene message as the perception node writes it, stamped `age` seconds ago."""
    data = {"stamp": time.time() - age, "frame_id": "base_link", "objects": objects}
    if failure:
        data["failure"] = failure
    return m.String(json.dumps(data))


def block(id_: str, x: float, y: float, z: float = 0.02) -> dict:
    colour, shape = id_.split("_")
    return {"id": id_, "colour": colour, "shape": shape, "position": [x, y, z], "yaw": 0.0,
            "size": [0.04, 0.04, 0.04], "confidence": 1.0}


def bowl(id_: str, x: float, y: float) -> dict:
    return {**block(id_, x, y, 0.02), "size": [0.12, 0.12, 0.04]}


def arm_at_home(node, opening: float = 1.0) -> None:
    """Joint states of the arm's home pose with the fingers `opening` (1 open); a blank front image."""
    spec = node.spec
    g = spec.gripper
    finger = g.closed_position + opening * (g.open_position - g.closed_position)
    q = [float(v) for v in spec.home] + [finger] * len(g.joint_names)
    node.js = m.JointState(m.Header.now(), list(spec.joint_names) + list(g.joint_names), q, [], [])
    node.image = np.zeros((128, 128, 3), np.uint8)


@pytest.fixture
def policy_node():
    node = build_node("policy", {"policy": "scripted", "max_ticks": 40, "success_ticks": 3}, "dds")
    sent: list[m.JointTrajectory] = []
    node.prop_pub.publish = sent.append
    node.sent = sent
    yield node
    node.close()
    node.node.destroy()


SCENE = [block("red_block", 0.5, 0.1), bowl("green_bowl", 0.5, -0.15), block("blue_block", 0.6, 0.2)]


def test_policy_node_grounds_in_the_perceived_scene_and_refuses_what_it_cannot_see(policy_node):
    node = policy_node
    arm_at_home(node)
    node.on_instruction(m.String("   "))
    assert node.state == "refused" and "empty" in node.reason and node.ticks == 0  # nothing heard: no motion
    node.on_instruction(m.String("put the red block in the green bowl"))
    assert node.state == "refused" and "no scene graph received yet" in node.reason
    node.on_scene(scene_msg([], failure="no depth frame on /camera/front/depth/image_raw"))
    assert not node.scene_ready and node.status()["scene_failure"].startswith("no depth frame")  # never fed
    node.on_scene(scene_msg(SCENE, age=2.0))
    node.on_instruction(m.String("put the red block in the green bowl"))
    assert node.state == "refused" and "2.0" in node.reason and "old" in node.reason  # a stale picture
    node.on_scene(scene_msg(SCENE))
    node.on_instruction(m.String("put the purple block in the green bowl"))
    assert node.state == "refused" and "no purple block" in node.reason and node.sent == []
    node.on_instruction(m.String("put the red block in the green bowl"))
    status = node.status()
    assert node.state == "executing", node.reason
    assert status["plan"] == ["pick(red_block)", "place_in(red_block, green_bowl)"]
    assert status["scene_source"] == "perception" and status["privileged"] is False
    assert status["hold_reason"] is None and status["scene_ready"] is True


def test_policy_node_holds_on_a_stale_scene_and_fails_at_the_tick_budget(policy_node):
    node = policy_node
    arm_at_home(node)
    node.on_scene(scene_msg(SCENE))
    node.on_instruction(m.String("put the red block in the green bowl"))
    node.tick()
    assert node.ticks == 1 and node.policy.hold_reason is None and len(node.sent) == 1
    node.on_scene(scene_msg(SCENE, age=1.0))  # perception went quiet: the last graph is a second old
    node.tick()
    assert "old" in node.status()["hold_reason"] and node.state == "executing"
    node.on_scene(scene_msg(SCENE))
    while node.state == "executing":
        node.tick()
    assert node.state == "failed" and "max_ticks=40" in node.reason and node.ticks == 40
    assert node.sent[-1].points == []  # the run's end is a stop


def test_policy_node_succeeds_when_the_last_step_holds_in_the_perceived_scene(policy_node):
    node = policy_node
    arm_at_home(node)
    placed = [block("red_block", 0.5, -0.15, 0.025), *SCENE[1:]]  # the camera sees the red block in the bowl
    node.on_scene(scene_msg(placed))
    node.on_instruction(m.String("put the red block in the green bowl"))
    node.tick()
    node.tick()
    assert node.state == "executing" and node.policy.plan_step == 0  # on the pick, the put-down's check is moot
    node.policy.sequencer.go_to(1)  # the agent reached its last step (place_in)
    for _ in range(3):  # success_ticks
        node.on_scene(scene_msg(placed))
        node.tick()
    assert node.state == "succeeded" and node.sent[-1].points == []
