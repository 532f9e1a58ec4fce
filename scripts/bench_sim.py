"""Simulator benchmark -> benchmarks/sim.json.

Measures, side by side in one run: physics steps/s, render ms per 128x128 frame with the arm's full meshes (naive)
vs the box proxies (fast), policy-frame time (observation with the front camera), gymnasium env control steps/s,
and oracle episodes/s with 1 and 2 worker processes. Usage: python scripts/bench_sim.py [--episodes N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pybullet as p  # noqa: E402


def _median_ms(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench_render(n: int) -> dict:
    from keystone_vla.sim import get_task
    from keystone_vla.sim.world import SimWorld

    out = {}
    worlds = {mode: SimWorld(cameras=("front", "wrist"), render_mode=mode) for mode in ("full", "fast")}
    for w in worlds.values():
        get_task("stack").reset(w, 0)
    for cam in ("front", "wrist"):
        for mode, w in worlds.items():  # interleaved: both modes measured under the same load
            out[f"render_{cam}_{mode}_ms"] = _median_ms(lambda w=w, cam=cam: w.render(cam), n)
    out["render_speedup_front"] = out["render_front_full_ms"] / out["render_front_fast_ms"]
    fast = worlds["fast"]
    out["policy_frame_ms"] = _median_ms(lambda: fast.observation(cameras=("front",)), n)
    out["physics_steps_per_s"] = 1e3 / _median_ms(lambda: [p.stepSimulation(physicsClientId=fast.client) for _ in range(100)], 20) * 100
    for w in worlds.values():
        w.close()
    return out


def bench_env(n: int) -> dict:
    import gymnasium as gym

    import keystone_vla.sim  # noqa: F401

    env = gym.make("keystone/StackBlocks-v0", image_size=128)
    env.reset(seed=0)
    zero = np.zeros(7, dtype=np.float32)
    ms = _median_ms(lambda: env.step(zero), n)
    env.close()
    return {"env_control_steps_per_s": 1e3 / ms, "env_step_ms": ms}


def _episodes(args: tuple[int, int]) -> int:
    from keystone_vla.sim.rollout import run_episode
    from keystone_vla.sim.world import SimWorld
    from keystone_vla.types import EpisodeSpec

    start, count = args
    world = SimWorld(cameras=("front",))
    ok = 0
    for i in range(start, start + count):
        ok += run_episode(EpisodeSpec("stack", i), record=True, world=world).success
    world.close()
    return ok


def bench_oracle(episodes: int) -> dict:
    out = {}
    for workers in (1, 2):
        per = episodes // workers
        t = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            ok = sum(pool.map(_episodes, [(k * per, per) for k in range(workers)]))
        dt = time.perf_counter() - t
        out[f"oracle_episodes_per_s_{workers}w"] = per * workers / dt
        out[f"oracle_success_{workers}w"] = ok / (per * workers)
    out["oracle_parallel_speedup"] = out["oracle_episodes_per_s_2w"] / out["oracle_episodes_per_s_1w"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=8, help="oracle episodes (stack, recorded) per worker setting")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "sim.json"))
    args = ap.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "image_size": 128}
    result.update(bench_render(args.frames))
    result.update(bench_env(args.frames))
    result.update(bench_oracle(args.episodes))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
