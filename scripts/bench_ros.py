"""Benchmark the ROS transport and the safety shield; writes benchmarks/ros.json.

Measures, on this machine:
- DDS message latency p50/p99 (publish stamp -> callback, wall clock, two processes on loopback) and messages
  lost, for sensor_msgs/JointState (reliable, keep-last 10) and a 128x128 rgb8 Image (best effort, keep-last 5),
  each published at 30 Hz by a child process;
- safety shield time per trajectory check (1-point proposal as the policy node sends, and an 8-point chunk;
  goal <= 1 ms) and per single-command filter (the sim executor's call), plus the vectorised sweep throughput.

Usage: python scripts/bench_ros.py [--seconds 10] [--out benchmarks/ros.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def publish(kind: str, rate: float, count: int) -> None:
    """Child process: wait for a subscriber, then publish `count` messages at `rate` Hz."""
    from keystone_vla.ros_nodes import msgs as m
    from keystone_vla.ros_nodes.dds_backend import DdsNode
    from keystone_vla.ros_nodes.transport import DEFAULT_QOS, SENSOR_QOS

    node = DdsNode(f"bench_pub_{kind}")
    if kind == "joint_state":
        pub = node.create_publisher(m.JointState, "/bench/joint_states", DEFAULT_QOS)
    else:
        pub = node.create_publisher(m.Image, "/bench/image", SENSOR_QOS)
        rgb = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    deadline = time.monotonic() + 20
    while pub.matched_subscriptions() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    t_next = time.monotonic()
    for i in range(count):
        header = m.Header.now(f"seq:{i}")
        if kind == "joint_state":
            msg = m.JointState(header, [f"j{k}" for k in range(7)], list(np.random.rand(7)), [0.0] * 7, [])
        else:
            msg = m.Image.from_rgb(rgb, header)
        pub.publish(msg)
        t_next += 1.0 / rate
        time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(0.5)
    node.destroy()


def measure_latency(kind: str, rate: float, seconds: float) -> dict:
    from keystone_vla.ros_nodes import msgs as m
    from keystone_vla.ros_nodes.dds_backend import DdsNode
    from keystone_vla.ros_nodes.transport import DEFAULT_QOS, SENSOR_QOS

    count = int(rate * seconds)
    node = DdsNode(f"bench_sub_{kind}")
    latencies, seqs = [], set()

    def on_msg(msg) -> None:
        latencies.append(time.time() - msg.header.stamp.to_seconds())
        seqs.add(int(msg.header.frame_id.split(":")[1]))
        if kind == "image":
            msg.to_rgb()  # include decoding into an array, as a consumer would

    if kind == "joint_state":
        node.create_subscription(m.JointState, "/bench/joint_states", on_msg, DEFAULT_QOS)
    else:
        node.create_subscription(m.Image, "/bench/image", on_msg, SENSOR_QOS)
    child = subprocess.Popen([sys.executable, __file__, "--publish", kind, "--rate", str(rate), "--count", str(count)],
                             env=dict(os.environ))
    end = time.monotonic() + seconds + 25
    while child.poll() is None and time.monotonic() < end:
        node.spin_once(0.01)
    for _ in range(20):
        node.spin_once(0.01)
    child.wait(timeout=10)
    node.destroy()
    lat = np.array(latencies) * 1e3
    return {"rate_hz": rate, "sent": count, "received": len(seqs), "lost": count - len(seqs),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3), "p99": round(float(np.percentile(lat, 99)), 3),
                           "max": round(float(lat.max()), 3)} if len(lat) else None}


def measure_shield(repeats: int = 300) -> dict:
    from keystone_vla.robots import PANDA
    from keystone_vla.safety import SafetyShield

    shield = SafetyShield.for_robot(PANDA)
    rng = np.random.default_rng(0)
    home = np.array(PANDA.home)
    names = list(PANDA.joint_names)
    out = {}
    for label, n_points in (("trajectory_1_point_ms", 1), ("trajectory_8_points_ms", 8)):
        times, accepted = [], 0
        for _ in range(repeats):
            q0 = home + rng.uniform(-0.3, 0.3, 7)
            steps = np.cumsum(rng.normal(0, 0.01, (n_points, 7)), axis=0)
            pts = [(q0 + s, 0.1 * (k + 1)) for k, s in enumerate(steps)]
            t0 = time.perf_counter()
            res = shield.check_trajectory(names, pts, q0)
            times.append(time.perf_counter() - t0)
            accepted += res.accepted
        t = np.array(times) * 1e3
        out[label] = {"p50": round(float(np.percentile(t, 50)), 4), "p99": round(float(np.percentile(t, 99)), 4),
                      "mean": round(float(t.mean()), 4), "accepted": accepted, "checked": repeats}
    times = []
    for _ in range(repeats):
        q0 = home + rng.uniform(-0.3, 0.3, 7)
        t0 = time.perf_counter()
        shield.filter_joint_target(q0, q0 + rng.normal(0, 0.01, 7), 0.1)
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1e3
    out["filter_joint_target_ms"] = {"p50": round(float(np.percentile(t, 50)), 4),
                                     "p99": round(float(np.percentile(t, 99)), 4)}
    n = 100_000
    q_now = home + rng.uniform(-0.5, 0.5, (n, 7))
    t0 = time.perf_counter()
    shield.filter_batch(q_now, q_now + rng.normal(0, 0.05, (n, 7)), 0.1, check_collision=False)
    out["sweep_commands_per_s_without_collision"] = round(n / (time.perf_counter() - t0))
    out["goal_trajectory_ms"] = 1.0
    out["meets_goal"] = out["trajectory_1_point_ms"]["p50"] <= 1.0
    shield.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "ros.json"))
    parser.add_argument("--publish", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=300, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from keystone_vla.ros_nodes.transport import loopback_env

    os.environ.update(loopback_env(domain_id=int(os.environ.get("ROS_DOMAIN_ID", 200 + os.getpid() % 30))))
    if args.publish:
        publish(args.publish, args.rate, args.count)
        return 0
    load_before = os.getloadavg()
    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(v, 2) for v in load_before]},
        "dds": {"backend": "cyclonedds (loopback, 2 processes)",
                "joint_state": measure_latency("joint_state", 30.0, args.seconds),
                "image_128x128_rgb8": measure_latency("image", 30.0, args.seconds)},
        "shield": measure_shield(),
    }
    result["machine"]["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
