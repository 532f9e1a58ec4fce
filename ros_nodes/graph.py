"""Start the Keystone ROS graph as separate processes over DDS (what `sim.launch.py` does with ROS 2 installed).

`SimGraph` runs sim_bridge, perception, safety and policy as `keystone ros node NAME` child processes on the
loopback DDS config (and a chosen ROS domain), plus an in-process monitor node that sees joint states, the
perceived scene, status, safety events and the simulator's truth (`/keystone/sim_truth`: the monitor is the
scorer, not part of the stack) and can publish instructions / e-stops. `endpoints(name)` lists the topics a node's
process reads and writes, from DDS discovery. Used by `keystone ros up --sim` and the integration test.

It must never leave child processes behind: `close()` terminates (then kills) every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError
from keystone_vla.ros_nodes import msgs as m
from keystone_vla.ros_nodes import topics
from keystone_vla.ros_nodes.transport import LATCHED_QOS, SENSOR_QOS, loopback_env

CONFIG_DIR = Path(__file__).parent / "config"
SIM_NODES = ("sim_bridge", "perception", "safety", "policy")
_CLI = "import sys; from keystone_vla.cli import main; sys.exit(main(sys.argv[1:]))"


class SimGraph:
    """Child processes for `nodes`, each with its parameter overrides; a monitor node in this process."""

    def __init__(self, params_file: str | Path | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 nodes: tuple[str, ...] = SIM_NODES, domain_id: int | None = None, log_dir: str | Path | None = None,
                 unsafe_no_shield: bool = False) -> None:
        self.params_file = str(params_file or CONFIG_DIR / "sim.yaml")
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.nodes = nodes
        self.domain_id = domain_id
        self.log_dir = Path(log_dir) if log_dir else None
        self.unsafe = unsafe_no_shield
        self.procs: dict[str, subprocess.Popen] = {}
        self.joint_states: list[tuple[float, np.ndarray, np.ndarray]] = []  # (monotonic t, position, velocity)
        self.events: list[dict] = []  # safety events, each with "received" (monotonic s) added
        self.status: dict = {}
        self.scene: dict = {}  # the perception node's latest scene graph message
        self.truth: dict = {}  # the simulator's truth (scoring only)
        self.perception: dict = {}  # the perception node's status (frame counts, latency)
        self.monitor = None

    # ---- processes ----------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(loopback_env(self.domain_id))
        env.setdefault("OMP_NUM_THREADS", "1")
        env["KEYSTONE_ROS_BACKEND"] = "dds"
        return env

    def start(self) -> SimGraph:
        os.environ.update(loopback_env(self.domain_id))  # the monitor joins the same domain, on loopback
        for name in self.nodes:
            self.start_node(name)
        from keystone_vla.ros_nodes.dds_backend import DdsNode

        self.monitor = DdsNode("keystone_monitor")
        mon = self.monitor
        mon.create_subscription(m.JointState, topics.JOINT_STATES, self._on_js, SENSOR_QOS)
        mon.create_subscription(m.String, topics.SAFETY_EVENTS,
                                lambda s: self.events.append({**json.loads(s.data), "received": time.monotonic()}))
        mon.create_subscription(m.String, topics.STATUS, lambda s: self.status.update(json.loads(s.data)), LATCHED_QOS)
        mon.create_subscription(m.String, topics.SCENE, lambda s: setattr(self, "scene", json.loads(s.data)),
                                LATCHED_QOS)
        mon.create_subscription(m.String, topics.SIM_TRUTH, lambda s: self.truth.update(json.loads(s.data)),
                                LATCHED_QOS)
        mon.create_subscription(m.String, topics.PERCEPTION_STATUS,
                                lambda s: self.perception.update(json.loads(s.data)), LATCHED_QOS)
        self.instruction_pub = mon.create_publisher(m.String, topics.INSTRUCTION)
        self.estop_pub = mon.create_publisher(m.Bool, topics.ESTOP)
        self.reset_pub = mon.create_publisher(m.Bool, topics.ESTOP_RESET)
        return self

    def start_node(self, name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-c", _CLI, "ros", "node", name, "--backend", "dds", "--params-file", self.params_file]
        for key, value in self.overrides.get(name, {}).items():
            cmd += ["--param", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        if name == "safety" and self.unsafe:
            cmd.append("--unsafe-no-shield")
        out = subprocess.DEVNULL
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(cmd, env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        return self.procs[name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Send `sig` to a node's process; returns the monotonic time it was sent."""
        t = time.monotonic()
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=10)
        return t

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ConfigError(f"ROS node {name} exited with code {proc.returncode}"
                                  + (f"; see {self.log_dir / (name + '.log')}" if self.log_dir else ""))

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.monitor is not None:
            self.monitor.destroy()
            self.monitor = None

    def __enter__(self) -> SimGraph:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- monitoring ---------------------------------------------------------------------------------------
    def _on_js(self, msg: m.JointState) -> None:
        self.joint_states.append((time.monotonic(), np.array(msg.position[:7]), np.array(msg.velocity[:7])))

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.monitor.spin_once(min(0.05, max(0.0, end - time.monotonic())))

    def wait_for(self, predicate, timeout: float, what: str) -> float:
        """Spin until `predicate()`; returns the monotonic time it became true, raises TimeoutError naming `what`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.monitor.spin_once(0.02)
            if predicate():
                return time.monotonic()
            self.check_alive()
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Joint states flowing, the truth known here, perception publishing scene graphs with objects and the
        policy reporting that it has joint states, an image and a scene graph too (`ready`)."""
        self.wait_for(lambda: len(self.joint_states) > 5 and self.truth and
                      ("perception" not in self.nodes or self.scene.get("objects")) and
                      ("policy" not in self.nodes or self.status.get("ready")), timeout, "the graph to come up")
        # the instruction publisher must be matched with the policy's subscription before we publish
        if "policy" in self.nodes:
            self.wait_for(lambda: self.instruction_pub.matched_subscriptions() > 0, timeout, "the policy's subscription")

    def endpoints(self, name: str, settle: float = 0.5) -> dict[str, set[str]]:
        """ROS topics the process of node `name` subscribes to ("subscriptions") and publishes ("publications"),
        read from DDS discovery (each participant announces its process id), not from the node's code."""
        from cyclonedds.builtin import (
            BuiltinDataReader,
            BuiltinTopicDcpsParticipant,
            BuiltinTopicDcpsPublication,
            BuiltinTopicDcpsSubscription,
        )

        pid = str(self.procs[name].pid)
        participant = self.monitor.participant
        readers = {kind: BuiltinDataReader(participant, topic) for kind, topic in
                   (("participants", BuiltinTopicDcpsParticipant), ("subscriptions", BuiltinTopicDcpsSubscription),
                    ("publications", BuiltinTopicDcpsPublication))}
        time.sleep(settle)  # the builtin readers get the discovery data that is already known asynchronously
        keys = {s.key for s in readers["participants"].read(N=1000)
                if any(getattr(prop, "key", None) == "__Pid" and prop.value == pid for prop in s.qos)}
        out: dict[str, set[str]] = {}
        for kind in ("subscriptions", "publications"):
            out[kind] = {"/" + e.topic_name[3:] for e in readers[kind].read(N=1000)
                         if e.participant_key in keys and e.topic_name.startswith("rt/")}
        return out

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(m.String(text))

    def speed(self, window: float = 0.1) -> float:
        """Largest joint speed (rad/s) measured over the last `window` seconds of joint states."""
        if len(self.joint_states) < 2:
            return 0.0
        t_end = self.joint_states[-1][0]
        recent = [s for s in self.joint_states if s[0] >= t_end - window]
        return float(max(np.abs(v).max() for _, _, v in recent))
