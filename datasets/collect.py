"""Parallel demonstration collection: the simulator's scripted oracles -> episodes in a store.

Each job is one (task, index) pair; its seed is `episode_seed(base_seed, task, index)`, a hash, so a
collection is reproducible whatever the number of workers or the order jobs finish in (episode folder
numbers may differ between runs; each episode's attrs record task, seed and collect_index). Workers are
spawned processes, each with one torch/OpenMP thread and one reusable PyBullet world; every worker writes
its own successful episodes straight into the store (atomic, concurrent-safe, see
`keystone_vla.datasets.writer`), so frames never travel between processes. Failed episodes are dropped and
counted, never written.

DAgger collection takes its learner by injection: the caller passes a `LearnerFactory` (built by
`keystone data collect --learner CKPT` from `keystone_vla.policies.dagger`), which each worker calls to get the
episode's `keystone_vla.sim.rollout.Executor`. This module must never write an unsuccessful episode, decide
anything about the tasks themselves, or import the model or policy layers (`vla`, `policies`) that sit above it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from keystone_vla.errors import ConfigError, unknown_choice
from keystone_vla.vocab import SPLITS

if TYPE_CHECKING:
    from keystone_vla.sim.rollout import Executor

_WORLD: dict[tuple, Any] = {}


class LearnerFactory(Protocol):
    """A learner for DAgger collection, as the collector sees it.

    It is pickled to every spawned worker, so it must be a small, picklable value (a frozen dataclass naming a
    checkpoint folder, not a loaded model). Called in a worker, once per episode, it returns a fresh executor that
    drives part of the episode and counts the ticks it drove in `learner_ticks`; loading the model once per
    worker process is its own business. `name` (e.g. the checkpoint folder) and `share` (the part of the episode
    it drives, in (0, 1]) are recorded in the episode attrs and the summary.
    """

    @property
    def name(self) -> str: ...

    @property
    def share(self) -> float: ...

    def __call__(self) -> Executor: ...


def episode_seed(base_seed: int, task: str, index: int) -> int:
    """Deterministic 31-bit seed of episode `index` of `task` in a collection seeded `base_seed`."""
    digest = hashlib.blake2b(f"{base_seed}/{task}/{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def resolve_tasks(tasks: str | Sequence[str]) -> list[str]:
    """'all' or a comma-separated list / sequence of task names -> validated names."""
    from keystone_vla.sim.tasks import TASKS

    names = list(TASKS) if tasks == "all" else (tasks.split(",") if isinstance(tasks, str) else list(tasks))
    names = [n.strip() for n in names if n.strip()]
    for n in names:
        if n not in TASKS:
            raise unknown_choice("task", n, [*TASKS, "all"])
    if not names:
        raise ConfigError("no tasks given; use --tasks all or e.g. --tasks stack,insert")
    return names


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency, but collection does not need it
        pass


def collect_one(out: str, task: str, index: int, seed: int, split: str, arm: str, cameras: tuple[str, ...],
                image_size: int, action_noise: float = 0.0,
                learner: LearnerFactory | None = None) -> dict[str, Any]:
    """Run one oracle episode; write it to the store at `out` when it succeeded. Runs in a worker.
    With `learner` the executor it builds drives part of the episode while the oracle's actions are recorded
    (DAgger)."""
    from keystone_vla.datasets.store import EpisodeStore
    from keystone_vla.datasets.writer import EpisodeData
    from keystone_vla.sim.rollout import make_world, run_episode
    from keystone_vla.sim.tasks import get_task
    from keystone_vla.types import EpisodeSpec

    spec = EpisodeSpec(task, seed, split, arm)
    key = (arm, cameras, image_size)
    if key not in _WORLD:  # one PyBullet world per worker process, reset from the seed each episode
        _WORLD[key] = make_world(spec, cameras, image_size)
    executor, max_steps = None, None
    source: dict[str, Any] = {"kind": "sim", "oracle": "scripted"}
    if learner is not None:
        executor = learner()
        source["learner"] = learner.name
        # a learner drifts and the oracle then recovers: give that twice the task's time before dropping the episode
        max_steps = 2 * get_task(task).max_steps
    t0 = time.perf_counter()
    rec = run_episode(spec, cameras=cameras, image_size=image_size, world=_WORLD[key], action_noise=action_noise,
                      executor=executor, max_steps=max_steps)
    result = {"task": task, "index": index, "seed": seed, "success": bool(rec.success), "steps": int(rec.steps),
              "episode": None, "sim_s": time.perf_counter() - t0,
              "learner_ticks": executor.learner_ticks if executor is not None else 0}
    if rec.success:
        data = EpisodeData.from_record(rec, source=source)
        data.extra["collect_index"] = index
        data.extra["action_noise"] = action_noise
        if executor is not None:
            data.extra["learner_share"] = learner.share
            data.extra["learner_ticks"] = executor.learner_ticks
        result["episode"] = EpisodeStore(out).write_episode(data)
    return result


def collect(tasks: str | Sequence[str], episodes_per_task: int, out: str | Path, split: str = "seen",
            workers: int = 2, arm: str = "panda", seed: int = 0, cameras: Sequence[str] = ("front",),
            image_size: int = 128, progress: bool = True, action_noise: float = 0.0,
            learner: LearnerFactory | None = None) -> dict[str, Any]:
    """Collect `episodes_per_task` oracle episodes of each task into the store at `out` (created or appended).

    `action_noise` > 0 perturbs the executed motion (metres; labels stay the expert's, see
    `keystone_vla.sim.rollout.OracleNoise`) so the demonstrations include recoveries. `learner` (see
    `LearnerFactory`; e.g. `keystone_vla.policies.dagger.DaggerLearner`) drives about `learner.share` of each
    episode while the oracle's actions are recorded (DAgger); the two are exclusive.

    Returns the summary: episodes_written, episodes_dropped, out, per-task counts, steps, wall time.
    """
    from tqdm import tqdm

    from keystone_vla.datasets.store import EpisodeStore
    from keystone_vla.robots import get_robot

    names = resolve_tasks(tasks)
    if split not in SPLITS:
        raise unknown_choice("split", split, SPLITS)
    if not 0.0 <= action_noise <= 0.02:
        raise ConfigError(f"--action-noise is in metres per tick and must be in 0..0.02, got {action_noise}")
    if learner is not None:
        if action_noise > 0:
            raise ConfigError("--learner and --action-noise are exclusive: pick DAgger or DART for one collection")
        if not 0.0 < learner.share <= 1.0:
            raise ConfigError(f"--learner-share must be in (0, 1], got {learner.share}")
    if episodes_per_task < 1 or workers < 1:
        raise ConfigError(f"--episodes-per-task and --workers must be >= 1 (got {episodes_per_task}, {workers})")
    get_robot(arm)  # unknown arm -> an error before any process starts
    EpisodeStore(out)  # create once here, before workers race to do it
    jobs = [(t, i, episode_seed(seed, t, i)) for t in names for i in range(episodes_per_task)]
    per_task = {t: {"written": 0, "dropped": 0} for t in names}
    written, dropped, steps, learner_ticks = 0, 0, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="collect", unit="episode", file=sys.stderr, disable=not progress)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        futures = [pool.submit(collect_one, str(out), t, i, s, split, arm, tuple(cameras), image_size, action_noise,
                               learner)
                   for t, i, s in jobs]
        try:
            for fut in as_completed(futures):
                r = fut.result()
                if r["success"]:
                    written += 1
                    steps += r["steps"]
                    learner_ticks += r["learner_ticks"]
                    per_task[r["task"]]["written"] += 1
                else:
                    dropped += 1
                    per_task[r["task"]]["dropped"] += 1
                bar.update(1)
                bar.set_postfix(written=written, dropped=dropped)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    bar.close()
    wall = time.perf_counter() - t0
    return {"episodes_written": written, "episodes_dropped": dropped, "out": str(out), "tasks": per_task,
            "steps_written": steps, "split": split, "arm": arm, "seed": seed, "workers": workers,
            "action_noise": action_noise, "learner": learner.name if learner is not None else None,
            "learner_tick_share": round(learner_ticks / steps, 3) if learner is not None and steps else None,
            "wall_s": round(wall, 2), "episodes_per_s": round(len(jobs) / wall, 3)}
