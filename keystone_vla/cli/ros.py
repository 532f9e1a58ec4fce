"""`keystone ros ...`: run Keystone's ROS 2 nodes (rclpy when sourced, else Cyclone DDS on loopback).

- ``keystone ros node NAME`` runs one node (sim_bridge, perception, policy, safety, speech) until Ctrl-C.
- ``keystone ros up --sim`` starts sim_bridge + perception + safety + policy as processes over DDS (the graph that
  ``ros2 launch keystone_vla sim.launch.py`` starts where ROS 2 is installed); with ``--instruction`` it sends
  one instruction, waits for the outcome and prints a summary (``--json``: one JSON line). The summary's
  ``success`` is the simulator's verdict (``/keystone/sim_truth``, read here as the scorer; no node reads it).

``--unsafe-no-shield`` turns the safety node's shield off; it exists for tests only and warns loudly.
"""

from __future__ import annotations

import argparse
import sys
import time

from keystone_vla.cli._common import emit_summary

UNSAFE_WARNING = ("\n" + "!" * 78 + "\n!!  WARNING: --unsafe-no-shield: the SAFETY SHIELD IS OFF. Commands reach the arm"
                  " unchecked.\n!!  This flag exists for tests only. Never use it with a real robot.\n" + "!" * 78 + "\n")


#: policy node states that end a run
FINAL_STATES = ("succeeded", "failed", "halted", "refused")


def register(subparsers: argparse._SubParsersAction) -> None:
    ros = subparsers.add_parser("ros", help="run Keystone's ROS 2 nodes and graph (rclpy or Cyclone DDS)")
    sub = ros.add_subparsers(dest="ros_command", metavar="ROS_COMMAND")

    node = sub.add_parser("node", help="run one node: sim_bridge, perception, policy, safety or speech")
    node.add_argument("name", help="sim_bridge | perception | policy | safety | speech")
    node.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="parameter override")
    node.add_argument("--params-file", help="ROS 2 parameter YAML (node_name: {ros__parameters: {...}})")
    node.add_argument("--backend", choices=("rclpy", "dds"), help="default: $KEYSTONE_ROS_BACKEND or auto")
    node.add_argument("--duration", type=float, help="stop after this many seconds")
    node.add_argument("--unsafe-no-shield", action="store_true", help="safety node only: no shield (tests only)")
    node.set_defaults(func=run_node_cmd)

    up = sub.add_parser("up", help="start the simulated graph (sim_bridge, perception, safety, policy) as processes "
                                   "over DDS")
    up.add_argument("--sim", action="store_true", required=True, help="simulated robot (the only graph for now)")
    up.add_argument("--task", help="override the task in the params file")
    up.add_argument("--seed", type=int)
    up.add_argument("--arm")
    up.add_argument("--policy", help="keystone-base | scripted | VLA checkpoint folder (not oracle: it needs the sim)")
    up.add_argument("--params-file", help="default: the packaged ros_nodes/config/sim.yaml")
    up.add_argument("--instruction", help="send this instruction once the graph is up, then wait for the outcome")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the outcome (default 120)")
    up.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for the graph (default: $ROS_DOMAIN_ID or 0)")
    up.add_argument("--log-dir", help="write each node's output to LOG_DIR/<node>.log")
    up.add_argument("--unsafe-no-shield", action="store_true", help="safety node without shield (tests only)")
    up.add_argument("--json", action="store_true", help="print the summary as one JSON line on stdout")
    up.set_defaults(func=run_up_cmd)
    ros.set_defaults(func=lambda args: (ros.print_help(sys.stderr), 2)[1])


def run_node_cmd(args: argparse.Namespace) -> int:
    from keystone_vla.ros_nodes.runner import NODES, load_params_file, parse_overrides, run_node

    if args.name not in NODES:
        from keystone_vla.errors import unknown_choice

        raise unknown_choice("node", args.name, NODES)
    params = load_params_file(args.params_file, args.name) if args.params_file else {}
    params.update(parse_overrides(args.param))
    if args.unsafe_no_shield:
        if args.name != "safety":
            from keystone_vla.errors import ConfigError

            raise ConfigError("--unsafe-no-shield only applies to the safety node")
        print(UNSAFE_WARNING, file=sys.stderr)
        params["unsafe_no_shield"] = True
    return run_node(args.name, params, args.backend, args.duration)


def run_up_cmd(args: argparse.Namespace) -> int:
    from keystone_vla.ros_nodes.graph import SimGraph

    overrides: dict[str, dict] = {"sim_bridge": {}, "policy": {}, "safety": {}}  # perception has no arm
    for key in ("task", "seed"):
        if getattr(args, key) is not None:
            overrides["sim_bridge"][key] = getattr(args, key)
    if args.arm:
        for node in overrides:
            overrides[node]["arm"] = args.arm
    if args.policy:
        overrides["policy"]["policy"] = args.policy
    if args.unsafe_no_shield:
        print(UNSAFE_WARNING, file=sys.stderr)
    graph = SimGraph(args.params_file, overrides, domain_id=args.domain_id, log_dir=args.log_dir,
                     unsafe_no_shield=args.unsafe_no_shield)
    t0 = time.monotonic()
    with graph:
        graph.wait_ready()
        print(f"keystone ros up: graph ready in {time.monotonic() - t0:.1f} s "
              f"(task {graph.truth.get('task')}, seed {graph.truth.get('seed')})", file=sys.stderr)
        if not args.instruction:
            print("keystone ros up: running; Ctrl-C to stop", file=sys.stderr)
            try:
                while True:
                    graph.spin(1.0)
                    graph.check_alive()
            except KeyboardInterrupt:
                return 0
        graph.instruct(args.instruction)
        t1 = time.monotonic()
        from tqdm import tqdm

        with tqdm(total=None, desc="executing", unit="tick", file=sys.stderr, disable=None) as bar:
            end = t1 + args.timeout
            while time.monotonic() < end and graph.status.get("state") not in FINAL_STATES:
                graph.spin(0.2)
                graph.check_alive()
                bar.n = int(graph.status.get("ticks", 0))
                bar.refresh()
        if graph.status.get("state") == "succeeded":  # the judge's settle window (1 s) ends after the agent's check
            settle_end = time.monotonic() + 3.0
            while time.monotonic() < settle_end and not graph.truth.get("success"):
                graph.spin(0.2)
        status = graph.status
        summary = {
            "instruction": args.instruction, "status": status.get("state", "timeout"),
            "success": bool(graph.truth.get("success")), "refused": status.get("state") == "refused",
            "reason": status.get("reason", ""), "plan": status.get("plan", []),
            "task": graph.truth.get("task"), "seed": graph.truth.get("seed"), "policy": status.get("policy"),
            "scene_source": status.get("scene_source"), "hold_reason": status.get("hold_reason"),
            "perception_ms_p50": (graph.perception.get("compute_ms") or {}).get("p50"),
            "seconds": round(time.monotonic() - t1, 2), "safety_events": len(graph.events),
            "shield": not args.unsafe_no_shield,
        }
    emit_summary(summary, args.json, title="keystone ros up --sim")
    return 0
