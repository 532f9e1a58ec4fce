"""The real-arm graph (robot.launch.py's nodes: perception, safety, policy) with sim_bridge standing in for the
robot driver and the RGB-D camera and publishing only what they would (no simulator truth topic, no scene, no
task or seed anywhere in the stack's parameters); the safety node drives the arm through the
FollowJointTrajectory action. Plus: no process of the robot graph imports the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ros_domain

from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.graph import CONFIG_DIR, SimGraph
from keystone_vla.ros_nodes.runner import load_params_file

ACTION = topics.CONTROLLER_ACTION + "/_action/"
#: all a ros2_control driver + an RGB-D camera driver publish on rt/ topics here (diagnostics included: drivers
#: and ros2_control's controller manager publish theirs)
DRIVER_TOPICS = {topics.JOINT_STATES, topics.CAMERA_IMAGE, topics.CAMERA_DEPTH, topics.CAMERA_INFO,
                 ACTION + "feedback", ACTION + "status", topics.DIAGNOSTICS}
ROBOT_NODES = ("perception", "safety", "policy", "speech")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_robot_graph_completes_an_instruction_through_the_action(tmp_path):
    truth_file = tmp_path / "truth.json"
    camera_pose = load_params_file(str(CONFIG_DIR / "sim.yaml"), "perception")["camera_pose"]  # "calibration"
    graph = SimGraph(params_file=CONFIG_DIR / "robot.yaml", domain_id=ros_domain("robot_graph"), log_dir=tmp_path,
                     overrides={"sim_bridge": {"task": "pick_place", "seed": 3, "publish_truth": False,
                                               "truth_file": str(truth_file)},
                                "perception": {"camera_pose": camera_pose},
                                "safety": {"controller_interface": "action", "joint_state_timeout": 0.2,
                                           "shield.max_step": 0.25}})
    with graph:
        graph.wait_for(lambda: truth_file.exists() and graph.scene.get("objects") and graph.status.get("ready"),
                       120, "the robot graph to come up")
        graph.wait_for(lambda: graph.instruction_pub.matched_subscriptions() > 0, 30, "the policy's subscription")
        ends = {name: graph.endpoints(name) for name in graph.procs}
        assert ends["sim_bridge"]["publications"] <= DRIVER_TOPICS, ends["sim_bridge"]["publications"]
        assert topics.SIM_TRUTH not in set().union(*(e["publications"] | e["subscriptions"] for e in ends.values()))
        assert topics.CONTROLLER_TRAJECTORY not in ends["sim_bridge"]["publications"]
        assert ACTION + "status" in ends["safety"]["subscriptions"]  # the action client
        assert topics.TF_STATIC in ends["perception"]["publications"] and topics.DIAGNOSTICS in ends["safety"][
            "publications"]
        truth = json.loads(truth_file.read_text())
        graph.instruct(truth["instruction"])
        graph.wait_for(lambda: graph.status.get("state") in ("succeeded", "failed", "halted", "refused"), 150,
                       "the outcome")
        assert graph.status["state"] == "succeeded", graph.status
        assert graph.status["depth_checks"] is True  # camera info + the calibration the perception node broadcasts
        graph.wait_for(lambda: json.loads(truth_file.read_text())["success"] is True, 10, "the simulator's verdict")
        truth = json.loads(truth_file.read_text())
        assert truth["goals"]["accepted"] > 10 and truth["goals"]["aborted"] == 0 and truth["goals"]["rejected"] == 0
        assert truth["trajectories"] == truth["goals"]["accepted"]  # every motion came through the action
        print(f"\nrobot graph: succeeded after {graph.status['ticks']} ticks; controller goals {truth['goals']}")


def test_no_robot_graph_node_imports_the_simulator(tmp_path):
    code = (
        "import sys, json\n"
        "from keystone_vla.cli import main  # the `keystone ros node` entry point's imports\n"
        "from keystone_vla.ros_nodes.runner import build_node, load_params_file\n"
        "from keystone_vla.ros_nodes.graph import CONFIG_DIR\n"
        "out = {}\n"
        f"for name in {ROBOT_NODES!r}:\n"
        "    params = load_params_file(str(CONFIG_DIR / 'robot.yaml'), name)\n"
        "    if name == 'perception': params['camera_pose'] = [0.9, 0, 0.5, 0, 0, 0, 1]\n"
        f"    if name == 'speech': params['wav_dir'] = {str(tmp_path)!r}\n"
        "    node = build_node(name, params, 'dds')\n"
        "    node.node.spin_once(0.05)\n"
        "    out[name] = sorted(k for k in sys.modules if k == 'keystone_vla.sim' or k.startswith('keystone_vla.sim.'))\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KEYSTONE_ROS_BACKEND": "dds"}
    from keystone_vla.ros_nodes.transport import loopback_env

    env.update(loopback_env(domain_id=ros_domain("robot_graph_launch")))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(ROBOT_NODES) and loaded == {n: [] for n in ROBOT_NODES}, loaded
