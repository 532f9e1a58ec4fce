"""Smaller ROS-side pieces: trajectory interpolation, parameter files, backend choice, the speech node."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from keystone_vla.errors import ConfigError
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.runner import build_node, load_params_file, parse_overrides
from keystone_vla.ros_nodes.trajectory_exec import TrajectoryInterpolator
from keystone_vla.ros_nodes.transport import choose_backend, dds_topic_name, loopback_env

os.environ.update(loopback_env(domain_id=50 + os.getpid() % 50))


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
    with pytest.raises(ConfigError, match="valid choices: policy, safety, sim_bridge, speech"):
        build_node("planner", {}, "dds")


@pytest.mark.slow
def test_speech_node_publishes_instruction_and_estop(tmp_path):
    from keystone_vla.perception.speech_synth import synthesize
    from keystone_vla.ros_nodes.dds_backend import DdsNode

    synthesize("stack the red block on the blue block", "en-us", tmp_path / "a_instruction.wav")
    synthesize("stop", "en-us", tmp_path / "b_stop.wav")
    speech = build_node("speech", {"wav_dir": str(tmp_path), "poll_rate": 20.0}, "dds")
    harness = DdsNode("speech_harness")
    got: dict[str, list] = {"instruction": [], "estop": [], "speech": []}
    harness.create_subscription(m.String, topics.INSTRUCTION, lambda s: got["instruction"].append(s.data))
    harness.create_subscription(m.Bool, topics.ESTOP, lambda b: got["estop"].append(b.data))
    harness.create_subscription(m.String, "/keystone/speech", lambda s: got["speech"].append(json.loads(s.data)))
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and len(got["speech"]) < 2:
            speech.node.spin_once(0.02)
            harness.spin_once(0.02)
        assert [u["file"] for u in got["speech"]] == ["a_instruction.wav", "b_stop.wav"]
        assert got["instruction"] == ["stack the red block on the blue block"]
        assert got["estop"] == [True]
    finally:
        speech.node.destroy()
        harness.destroy()


def test_packaged_parameter_files_match_the_nodes():
    from keystone_vla.ros_nodes.graph import CONFIG_DIR

    for node_name in ("sim_bridge", "safety", "policy"):
        params = load_params_file(str(CONFIG_DIR / "sim.yaml"), node_name)
        assert params, node_name
        obj = build_node(node_name, params, "dds")  # unknown keys or wrong types would raise
        try:
            assert set(params) <= set(obj.node.parameters)
        finally:
            getattr(obj, "close", lambda: None)()
            obj.node.destroy()
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
    assert entry == {"sim_bridge", "policy", "safety", "speech"}
    for launch in ("sim.launch.py", "robot.launch.py"):
        tree = ast.parse((root / "launch" / launch).read_text())
        executables = {kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                       for kw in node.keywords if kw.arg == "executable"}
        assert executables and executables <= entry, (launch, executables)
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


def test_policy_node_refuses_a_policy_plan_that_disagrees_with_the_instruction():
    from broken_policy import BrokenPolicy

    from keystone_vla.types import Plan

    class WrongPlanner(BrokenPolicy):
        def bind(self, world, instance) -> None:
            self.plan = Plan(instance.instruction, tuple(s for s in instance.plan.steps if s.skill == "pick"))

    node = build_node("policy", {"policy": "broken"}, "dds")
    try:
        scene = {"task": "pick_place", "seed": 0, "split": "seen", "objects": {}, "success": False}
        node.on_scene(m.String(json.dumps(scene)))
        node.on_instruction(m.String("   "))
        assert node.state == "refused" and "empty" in node.reason and node.ticks == 0  # nothing heard: no motion
        node.on_instruction(m.String("place the blue block in the yellow bowl"))
        assert node.state == "executing"  # a policy without its own plan runs the grounded one
        node.state = "idle"
        node.policy = WrongPlanner()
        node.on_instruction(m.String("place the blue block in the yellow bowl"))
        assert node.state == "refused" and node.ticks == 0
        assert "policy planned pick(blue_block)" in node.reason and "place_in(blue_block, yellow_bowl)" in node.reason
    finally:
        node.close()
        node.node.destroy()
