"""Benchmark: where one control tick of the shipped agent goes, part by part. Writes benchmarks/tick.json.

One seen episode per task (seed 0) with keystone-base and its shipped agent, run in a plain loop so each part of a
tick is timed on its own, once per scene source, side by side in one run: `perception` (the default: the agent's
objects come from the camera's RGB-D frame each tick) and `privileged` (simulator truth: the policy-only figure,
no perception cost). Parts:

- `capture`: `SimWorld.observation` (rendering the 128 px front camera, colour and depth, and reading the joint
  state; on a cell, the camera and joint-state drivers);
- `agent`: `VLAAgent.act` in full, and inside it `scene` (the scene source's `observe`: for perception the scene
  graph, `perception`, plus the tracker), `model` (the chunk runtime: a forward pass on the ticks that predict, a
  queue pop on the others) and `assists` (every assist's `apply`, summed); `agent - scene - model - assists` is
  the sequencer and the object token's lookup;
- `ik`: `SimWorld.command_action` (the end-effector command to joint targets);
- `shield`: the safety shield's joint-target filter;
- `physics`: the simulator's substeps (a real arm has none; reported, not counted in the tick).

`tick` = capture + agent + ik + shield: what a cell spends before a command reaches the controller. With 2
actions run per chunk, every other tick runs a forward pass: `tick_predicting` / `model_predicting` are those
ticks, `tick_from_queue` / `model_from_queue` the others (the two do not share a median). Times are
p50 / p99 / max in ms over every tick; the JSON records the load average before the run (the machine is shared).

    python scripts/bench_tick.py [--tasks all] [--threads 2] [--out benchmarks/tick.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append((time.perf_counter() - t0) * 1e3)

    return wrapper


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "n": int(a.size)}


def run(tasks: list[str], scene: str) -> dict[str, Any]:
    from keystone_vla.policies.registry import load_policy
    from keystone_vla.sim.rollout import make_world
    from keystone_vla.sim.scene_sources import make_scene_source
    from keystone_vla.sim.tasks import get_task
    from keystone_vla.types import EpisodeSpec

    agent = load_policy("keystone-base")  # the shipped agent (its agent.json)
    parts: dict[str, list[float]] = defaultdict(list)
    per_tick: dict[str, list[float]] = defaultdict(list)
    agent.runtime.act = timed(agent.runtime.act, parts["model"])
    for assist in agent.assists:
        assist.apply = timed(assist.apply, parts[f"assist:{assist.name}"])
    import keystone_vla.perception.scene_graph as scene_graph_module

    # CameraScene looks build_scene_graph up in its module at call time: time it there, restore it after
    original_graph = scene_graph_module.build_scene_graph
    scene_graph_module.build_scene_graph = timed(original_graph, parts["perception"])
    world = make_world(EpisodeSpec(tasks[0], 0), agent.cameras, agent.image_size)
    world.command_action = timed(world.command_action, parts["ik"])
    if world.shield is not None:
        world.shield.filter_joint_target = timed(world.shield.filter_joint_target, parts["shield"])
    episodes = []
    try:
        for name in tasks:
            task = get_task(name)
            inst = task.reset(world, 0, "seen")
            perceive = scene == "perception"
            source = make_scene_source(scene, world)
            source.observe = timed(source.observe, parts["scene"])
            agent.begin(inst.instruction, world.observation(inst.instruction, cameras=agent.cameras, depth=perceive),
                        source, world.spec)
            agent.reset()
            for k in ("scene", "perception"):
                parts[k].clear()
            ticks = 0
            for _ in range(task.max_steps):
                marks = {k: len(v) for k, v in parts.items()}
                t0 = time.perf_counter()
                obs = world.observation(inst.instruction, cameras=agent.cameras, depth=perceive)
                requested = agent.runtime_stats.chunks_requested
                t1 = time.perf_counter()
                action = agent.act(obs)
                t2 = time.perf_counter()
                predicted = agent.runtime_stats.chunks_requested > requested
                world.apply_action(action)
                t3 = time.perf_counter()
                new = {k: sum(v[marks.get(k, 0):]) for k, v in parts.items()}
                assists = sum(x for k, x in new.items() if k.startswith("assist:"))
                capture, whole_agent = (t1 - t0) * 1e3, (t2 - t1) * 1e3
                per_tick["capture"].append(capture)
                per_tick["agent"].append(whole_agent)
                per_tick["assists"].append(assists)
                per_tick["sequencer_and_lookup"].append(whole_agent - new.get("scene", 0.0) - new.get("model", 0.0)
                                                        - assists)
                per_tick["scene"].append(new.get("scene", 0.0))
                per_tick["physics"].append((t3 - t2) * 1e3 - new.get("ik", 0.0) - new.get("shield", 0.0))
                tick = capture + whole_agent + new.get("ik", 0.0) + new.get("shield", 0.0)
                per_tick["tick"].append(tick)
                # half the ticks run a forward pass (2 actions per chunk): their median is not the others'
                per_tick["tick_predicting" if predicted else "tick_from_queue"].append(tick)
                per_tick["model_predicting" if predicted else "model_from_queue"].append(new.get("model", 0.0))
                ticks += 1
                if task.success(world, inst) and world.robot.gripper_opening() > 0.5:
                    break
            episodes.append({"task": name, "ticks": ticks, "success": bool(task.success(world, inst))})
    finally:
        scene_graph_module.build_scene_graph = original_graph
        agent.close()
        world.close()
    out = {k: stats(v) for k, v in sorted(per_tick.items())}
    out.update({k: stats(v) for k, v in sorted(parts.items()) if v})
    return {"parts_ms": out, "episodes": episodes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="all", help="'all' or comma-separated task names")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: this machine's cores)")
    ap.add_argument("--out", default="benchmarks/tick.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from keystone_vla.sim.tasks import TASKS

    torch.set_num_threads(args.threads)
    tasks = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",")]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = {scene: run(tasks, scene) for scene in ("perception", "privileged")}
    per = {scene: r["parts_ms"]["tick"] for scene, r in result.items()}
    summary = {"benchmark": "tick", "checkpoint": "keystone-base", "agent": "shipped (agent.json)",
               "torch_threads": args.threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
               "load_average_before": round(load, 2), "wall_s": round(time.perf_counter() - t0, 1),
               "tick_p99_ratio_perception_to_privileged": round(per["perception"]["p99"] / per["privileged"]["p99"], 3),
               "scenes": result, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    for scene, r in result.items():
        print(f"--- scene source: {scene}")
        p = r["parts_ms"]
        for key in ("tick", "tick_predicting", "tick_from_queue", "capture", "agent", "scene", "perception",
                    "model_predicting", "model_from_queue", "assists", "sequencer_and_lookup", "ik", "shield",
                    "physics"):
            if key in p:
                print(f"{key:<22} p50 {p[key]['p50']:8.2f} ms  p99 {p[key]['p99']:8.2f} ms  max {p[key]['max']:8.2f} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
