"""Sim evaluation harness: run a policy on tasks x splits x seeds in worker processes, aggregate, write a report.

Every episode goes through `keystone_vla.sim.rollout.run_episode` (the one episode loop: same termination rule
for data collection and evaluation). Episode i of a (task, split) cell uses seed ``seed + i``, so two policies
evaluated with the same ``--seed`` see exactly the same scenes, and a rerun reproduces the numbers.

User phrasings (``--instructions-file``, JSONL ``{"task": ..., "instruction": ...}``): the instruction runs in the
split its colours (and kit shapes) belong to (`episode.instruction_split`; both of ``--split`` when it names
none). It is first checked as text (empty, not English, negation, unsafe, an action outside the skills: refused
at once, with the reason), then read over the task's scenes (`episode.find_scene`, the reader of
`keystone_vla.perception.reader` on the harness side) until one holds every object it names (``scene_search``
scenes at most); only an instruction no such scene grounds is reported *refused*, with the reason. The goal is
the task's own when the reading is the task's plan, else the reading's plan (success = every placing step's
effect holds at the end, gripper released). The policy never sees that reading: the VLA agent reads the
instruction again over what its own cameras show and may refuse or ask back (`AskBack`: counted as
``asked_back``). An executed plan other than the intended one counts as ``wrong_plan_executed`` (kit_assembly:
other steps, in any order), a failure worse than a refusal.

Success is `keystone_vla.sim.judge.SuccessJudge`'s: the goal held for 1 s with the hand open and clear, the parts at
rest; an episode whose goal held at some tick without that counts as ``goal_lost`` ("met the goal, then lost it").
Metrics per task x split: success rate (refused episodes count as not successful), goal lost, mean steps, plan exactness
(the policy's plan equals the ground-truth plan), shield interventions, policy latency p50/p99 (ms per
``act``), wall time. This module never changes what a policy does; it only runs, measures and reports.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError, GroundingError, unknown_choice
from keystone_vla.types import EpisodeSpec, Plan
from keystone_vla.vocab import SPLITS

from .agent_config import AgentConfig
from .episode import EpisodeAdapter, find_scene, plan_goal_holds

LATENCY_BINS_MS = [0, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. `instructions` holds (task, instruction) pairs from an instructions file."""

    policy: str
    tasks: tuple[str, ...]
    splits: tuple[str, ...] = ("seen", "unseen")
    episodes: int = 50
    workers: int = 2
    seed: int = 0
    out: Path | None = None
    instructions: tuple[tuple[str, str], ...] = ()
    arm: str = "panda"
    image_size: int = 128
    max_steps: int | None = None
    videos: bool = True
    scene_search: int = 400  # task scenes tried for an --instructions-file phrasing (each ~50 ms; stops at the first)
    agent: AgentConfig | None = None  # VLA agents only: None = the checkpoint's agent.json, else `shipped`
    scene: str = "perception"  # where a VLA agent's objects come from: its cameras, or (privileged) sim truth

    def __post_init__(self) -> None:
        from keystone_vla.perception.scene_source import SCENE_SOURCES

        if self.scene not in SCENE_SOURCES:
            raise unknown_choice("scene source", self.scene, SCENE_SOURCES)
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {self.episodes}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        for split in self.splits:
            if split not in SPLITS:
                raise unknown_choice("split", split, SPLITS)


@dataclass(frozen=True)
class EpisodeJob:
    index: int
    task: str
    split: str
    seed: int
    instruction: str | None = None
    line: int | None = None  # 1-based line of the instructions file


@dataclass
class EpisodeResult:
    index: int
    task: str
    split: str
    seed: int
    instruction: str
    success: bool = False
    goal_lost: bool = False  # the goal held with the hand open at some tick, but the episode did not succeed
    goal_first_met_step: int | None = None  # tick the goal first held with the hand open (None: never)
    refused: bool = False
    asked_back: bool = False  # refused by asking back ("did you mean ...?"): nothing moved
    wrong_plan: bool | None = None  # the plan executed was not the intended one (None: the policy does not plan)
    reason: str = ""
    steps: int = 0
    plan: list[str] = field(default_factory=list)  # ground-truth plan calls
    policy_plan: list[str] | None = None  # what the policy planned (None: the policy does not plan)
    plan_exact: bool | None = None
    plan_same_steps: bool | None = None  # the same steps in any order (kit_assembly's instruction fixes no order)
    interventions: int = 0
    stalls: int | None = None
    regrasps: int | None = None  # put-down steps sent back to their pick (VLA agent only)
    assists: dict[str, int] | None = None  # what the agent's rules did: regrasps, retries, each assist's counts
    actions_per_chunk: int | None = None  # actions the policy ran per predicted chunk (None: it predicts no chunks)
    holds: int | None = None  # ticks the agent held the arm because its scene could not be trusted
    hold_reason: str | None = None  # the last such reason
    halted: str | None = None  # why the agent gave the episode up (e.g. a part lost from view), or None
    latency_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    line: int | None = None
    video: str | None = None


# --------------------------------------------------------------------------------------------- input parsing
def parse_tasks(text: str) -> tuple[str, ...]:
    """'all' or a comma list of task names -> validated tuple."""
    from keystone_vla.sim.tasks import TASKS

    if text.strip() == "all":
        return tuple(TASKS)
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    for name in names:
        if name not in TASKS:
            raise unknown_choice("task", name, [*TASKS, "all"])
    if not names:
        raise ConfigError("--tasks is empty; give 'all' or task names like pick_place,stack")
    return names


def parse_splits(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    for name in names:
        if name not in SPLITS:
            raise unknown_choice("split", name, SPLITS)
    if not names:
        raise ConfigError("--split is empty; give seen, unseen or seen,unseen")
    return names


def read_instructions_file(path: str | os.PathLike[str]) -> tuple[tuple[str, str], ...]:
    """JSONL lines {"task": ..., "instruction": ...}; blank lines are skipped; errors name the line."""
    from keystone_vla.sim.tasks import TASKS

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--instructions-file {p}: no such file")
    pairs = []
    for n, raw in enumerate(p.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{p}:{n}: not valid JSON ({exc}); expected {{\"task\": ..., \"instruction\": ...}}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("task"), str) or not isinstance(row.get("instruction"), str):
            raise ConfigError(f"{p}:{n}: expected an object with string keys \"task\" and \"instruction\", got {raw!r}")
        if row["task"] not in TASKS:
            raise ConfigError(f"{p}:{n}: unknown task {row['task']!r}; valid choices: {', '.join(sorted(TASKS))}")
        pairs.append((row["task"], row["instruction"]))
    if not pairs:
        raise ConfigError(f"{p} holds no instructions; write one JSON object per line")
    return tuple(pairs)


def make_jobs(config: EvalConfig) -> list[EpisodeJob]:
    """All episodes of a run, in a fixed order; episode i of a cell uses seed config.seed + i."""
    jobs: list[EpisodeJob] = []
    if config.instructions:
        from .episode import instruction_split

        for line, (task, text) in enumerate(config.instructions, 1):
            own = instruction_split(text)
            for split in (own,) if own is not None else config.splits:
                for i in range(config.episodes):
                    jobs.append(EpisodeJob(len(jobs), task, split, config.seed + i, text, line))
    else:
        for task in config.tasks:
            for split in config.splits:
                for i in range(config.episodes):
                    jobs.append(EpisodeJob(len(jobs), task, split, config.seed + i))
    return jobs


# --------------------------------------------------------------------------------------------- one episode
_WORKER: dict[str, Any] = {}


def _init_worker(config: EvalConfig, video_dir: str | None, threads: int | None) -> None:
    """Build the policy and a reusable simulator once per worker process."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from keystone_vla.policies.registry import load_policy
    from keystone_vla.sim.rollout import make_world

    policy = load_policy(config.policy, config.agent)
    cameras = tuple(getattr(policy, "cameras", ())) if getattr(policy, "needs_images", True) else ()
    image_size = int(getattr(policy, "image_size", config.image_size))  # render what the model was trained on
    world = make_world(EpisodeSpec(config.tasks[0] if config.tasks else "pick_place", config.seed, "seen", config.arm),
                       cameras, image_size)
    _WORKER.update(policy=policy, world=world, cameras=cameras, config=config, video_dir=video_dir,
                   image_size=image_size)


def _run_job_in_worker(job: EpisodeJob) -> EpisodeResult:
    return run_job(job, _WORKER["policy"], _WORKER["world"], _WORKER["cameras"], _WORKER["config"],
                   _WORKER["video_dir"], _WORKER["image_size"])


def run_job(job: EpisodeJob, policy: Any, world: Any, cameras: tuple[str, ...], config: EvalConfig,
            video_dir: str | None, image_size: int | None = None) -> EpisodeResult:
    """Run (or refuse) one episode in `world` with `policy`; write its video if it is a candidate."""
    from keystone_vla.sim.rollout import run_episode
    from keystone_vla.sim.tasks import get_task

    t0 = time.perf_counter()
    task = get_task(job.task)
    result = EpisodeResult(job.index, job.task, job.split, job.seed, job.instruction or "", line=job.line)
    seed, goal_plan = job.seed, None
    if job.instruction is not None:
        found = find_scene(world, task, job.seed, job.split, job.instruction, config.scene_search)
        if isinstance(found, str):
            result.refused, result.reason, result.wall_s = True, found, time.perf_counter() - t0
            return result
        seed, goal_plan = found
    result.seed = seed
    adapter = EpisodeAdapter(policy, goal_plan)
    spec = EpisodeSpec(job.task, seed, job.split, config.arm, job.instruction)
    try:
        rec = run_episode(spec, policy=adapter, cameras=cameras, image_size=image_size or config.image_size, record=False,
                          max_steps=config.max_steps, video=bool(video_dir), world=world, scene=config.scene)
    except GroundingError as exc:  # the policy refused or asked back: not run
        from keystone_vla.perception.grounding import AskBack

        result.refused, result.reason, result.asked_back = True, str(exc), isinstance(exc, AskBack)
        result.instruction = adapter.instruction or result.instruction
        result.plan = adapter.true_plan.calls() if adapter.true_plan else []
        result.wall_s = time.perf_counter() - t0
        return result
    result.instruction = rec.instruction
    result.plan = rec.plan.calls()
    result.success = bool(rec.success)
    result.goal_lost, result.goal_first_met_step = bool(rec.goal_lost), rec.goal_first_met_step
    if goal_plan is not None:  # the user's goal differs from the task's: judge the grounded plan
        result.success = plan_goal_holds(world, goal_plan)
        result.goal_lost, result.goal_first_met_step = False, None  # the judge watched the task's goal, not this
    result.steps = rec.steps
    result.interventions = int(rec.interventions)
    result.latency_ms = [float(x) for x in rec.policy_latency_ms]
    policy_plan: Plan | None = getattr(policy, "plan", None)
    if policy_plan is not None:
        result.policy_plan = policy_plan.calls()
        result.plan_exact, result.plan_same_steps = plan_agreement(result.policy_plan, result.plan)
        result.wrong_plan = not (result.plan_exact or (job.task == "kit_assembly" and result.plan_same_steps))
    stats = getattr(policy, "runtime_stats", None)
    if stats is not None:
        result.stalls = int(stats.stalls)
    regrasps = getattr(policy, "regrasps", None)
    if regrasps is not None:
        result.regrasps = int(regrasps)
    counts = getattr(policy, "assist_counts", None)
    if counts is not None:
        result.assists = {k: int(v) for k, v in counts().items()}
    if getattr(policy, "begin", None) is not None:  # agents with a scene source
        result.holds = int(getattr(policy, "holds", 0))
        result.hold_reason = getattr(policy, "hold_reason", None)
        result.halted = rec.halted
    runtime = getattr(policy, "runtime", None)  # chunk policies (VLA agent, baseline) run a ChunkRuntime
    if runtime is not None:
        result.actions_per_chunk = int(runtime.config.n_action_steps)
    if video_dir and rec.video_frames:
        result.video = _maybe_write_video(Path(video_dir), job, result.success, rec.video_frames)
    result.wall_s = time.perf_counter() - t0
    return result


def _video_key(task: str, split: str, success: bool) -> str:
    return f"{task}-{split}-{'success' if success else 'failure'}"


def _maybe_write_video(video_dir: Path, job: EpisodeJob, success: bool, frames: list[np.ndarray]) -> str | None:
    """Write this episode's video unless an earlier episode (lower job index) of the same kind already has one.

    Workers finish out of order, so a later episode may write first; `select_videos` keeps the earliest, which
    makes the chosen videos independent of scheduling.
    """
    from keystone_vla.sim.rollout import write_video

    key = _video_key(job.task, job.split, success)
    if any(int(p.stem.rsplit("-", 1)[1]) < job.index for p in video_dir.glob(f"{key}-*.mp4")):
        return None
    path = video_dir / f"{key}-{job.index:06d}.mp4"
    tmp = video_dir / f".{path.name}.{os.getpid()}.tmp.mp4"
    write_video(frames, str(tmp))
    os.replace(tmp, path)
    return path.name


def select_videos(video_dir: Path, results: list[EpisodeResult]) -> dict[str, str]:
    """Keep the earliest video per (task, split, outcome); delete the others. Returns key -> file name."""
    chosen: dict[str, tuple[int, Path]] = {}
    for path in sorted(video_dir.glob("*.mp4")):
        key, index = path.stem.rsplit("-", 1)
        if key not in chosen or int(index) < chosen[key][0]:
            chosen[key] = (int(index), path)
    keep = {p for _, p in chosen.values()}
    for path in video_dir.glob("*.mp4"):
        if path not in keep:
            path.unlink()
    for r in results:
        if r.video and (video_dir / r.video) not in keep:
            r.video = None
    return {k: f"videos/{p.name}" for k, (_, p) in sorted(chosen.items())}


# --------------------------------------------------------------------------------------------- the run
def evaluate(config: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Run every episode of `config`, aggregate, and (with `config.out`) write results.json and the report."""
    from dataclasses import replace

    from tqdm import tqdm

    from keystone_vla.policies.registry import agent_config_of

    # fail fast, before any worker starts; and fix the agent config every worker runs (and results.json records)
    resolved = agent_config_of(config.policy)  # None: the policy is not a VLA agent
    if resolved is None and config.agent is not None:
        raise ConfigError(f"an agent config was given, but --policy {config.policy} is not a VLA agent")
    config = replace(config, agent=config.agent or resolved)
    jobs = make_jobs(config)
    out = Path(config.out) if config.out else None
    video_dir = None
    if out is not None and config.videos:
        video_dir = out / "videos"
        video_dir.mkdir(parents=True, exist_ok=True)
        for stale in video_dir.glob("*.mp4"):
            stale.unlink()
    workers = min(config.workers, len(jobs))
    start = time.perf_counter()
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(jobs), desc=f"eval {config.policy}", unit="ep", file=sys.stderr, disable=not progress)
    if workers == 1:
        _init_worker(config, str(video_dir) if video_dir else None, None)
        try:
            for job in jobs:
                results.append(_run_job_in_worker(job))
                bar.update(1)
        finally:
            _WORKER.pop("world").close()
            _WORKER.clear()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # torch + pybullet are not fork-safe once threads exist
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(config, str(video_dir) if video_dir else None, 1)) as pool:
            futures = [pool.submit(_run_job_in_worker, job) for job in jobs]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update(1)
    bar.close()
    results.sort(key=lambda r: r.index)
    wall = time.perf_counter() - start
    videos = select_videos(video_dir, results) if video_dir else {}
    summary = aggregate(config, results, wall, videos)
    if out is not None:
        from keystone_vla.policies.report import write_report

        out.mkdir(parents=True, exist_ok=True)
        summary["report"] = str(out / "report.md")
        (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
        write_report(out, summary)
    return summary


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95 % (z = 1.96) Wilson score interval of a success rate `successes` / `n`; None when n is 0. Unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 or n successes: 50 of 50 gives [0.929, 1]."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def aggregate(config: EvalConfig, results: list[EpisodeResult], wall_s: float,
              videos: dict[str, str]) -> dict[str, Any]:
    """Every number of the run: per task x split cells, overall rates, latency, per-episode records."""
    tasks: dict[str, dict[str, dict[str, Any]]] = {}
    for task in dict.fromkeys(r.task for r in results):
        tasks[task] = {}
        for split in config.splits:
            cell = [r for r in results if r.task == task and r.split == split]
            if cell:
                tasks[task][split] = _cell(cell)
    all_latency = [x for r in results for x in r.latency_ms]
    n = len(results)
    exact = [r.plan_exact for r in results if r.plan_exact is not None]
    same = [r.plan_same_steps for r in results if r.plan_same_steps is not None]
    n_refused = sum(r.refused for r in results)
    hist, _ = np.histogram(all_latency, bins=LATENCY_BINS_MS) if all_latency else (np.zeros(len(LATENCY_BINS_MS) - 1), None)
    cfg = asdict(config)
    cfg.pop("agent")  # recorded whole at the top level
    cfg["out"] = str(config.out) if config.out else None
    cfg["instructions"] = [{"task": t, "instruction": i} for t, i in config.instructions]
    return {
        "policy": config.policy,
        # the full agent configuration that ran (None: the policy is not a VLA agent); its preset names it
        "agent": config.agent.to_dict() if config.agent is not None else None,
        # where the agent's objects came from; privileged = simulator truth (or a policy that reads the world):
        # an upper bound, not what a robot with cameras would do
        "scene": scene_label(config),
        "privileged": is_privileged(config),
        "success_rate": sum(r.success for r in results) / n if n else 0.0,
        "success_ci95": wilson_interval(sum(r.success for r in results), n),
        "episodes": n,
        "refused": n_refused,
        "asked_back": sum(r.asked_back for r in results),
        # executed plans other than the intended one: worse than a refusal
        "wrong_plans_executed": sum(bool(r.wrong_plan) for r in results),
        "goal_lost": sum(r.goal_lost for r in results),
        "plan_exact_rate": _rate(exact),
        "plan_exact_rate_all": _rate(exact, n_refused),
        "plan_same_steps_rate": _rate(same),
        # what ran, not what was asked (config.actions_per_chunk is None when the checkpoint's own count applied);
        # one policy config per run, so every episode that ran chunks ran the same count
        "actions_per_chunk": next((r.actions_per_chunk for r in results if r.actions_per_chunk is not None), None),
        "tasks": tasks,
        "latency_ms": {"p50": _percentile(all_latency, 50), "p99": _percentile(all_latency, 99),
                       "max": max(all_latency) if all_latency else None, "calls": len(all_latency),
                       "histogram": {"bins_ms": LATENCY_BINS_MS, "counts": [int(c) for c in hist]}},
        "seeds": {"base": config.seed, "per_cell": [config.seed, config.seed + config.episodes - 1],
                  "rule": "episode i of each task x split (x instruction line) uses seed base + i"},
        "wall_s": wall_s,
        "videos": videos,
        "config": cfg,
        "report": None,
        "episodes_detail": [_episode_json(r) for r in results],
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def is_privileged(config: EvalConfig) -> bool:
    """Whether the run read simulator truth at run time: the privileged scene source, or the scripted oracle."""
    return config.scene == "privileged" or config.policy == "oracle"


def scene_label(config: EvalConfig) -> str:
    """What fed the policy its objects: 'perception', 'privileged', or 'world' (the oracle reads the world)."""
    return "world (the scripted oracle reads simulator state)" if config.policy == "oracle" else config.scene


def plan_agreement(policy_plan: list[str], plan: list[str]) -> tuple[bool, bool]:
    """(exact: the same steps in the same order, same_steps: the same steps in any order) against the task's plan."""
    return policy_plan == plan, sorted(policy_plan) == sorted(plan)


def _rate(hits: list[bool], refused: int = 0) -> float | None:
    """Share of `hits` that are true, with `refused` episodes (no plan ran) counted as misses: `plan_exact_rate`
    passes none, so a policy that refuses its doubtful plans reads high there; `plan_exact_rate_all` passes them.
    None when there is nothing to judge (the policy does not plan)."""
    return sum(hits) / (len(hits) + refused) if hits else None


def _cell(cell: list[EpisodeResult]) -> dict[str, Any]:
    ran = [r for r in cell if not r.refused]
    refused = len(cell) - len(ran)
    lat = [x for r in cell for x in r.latency_ms]
    exact = [r.plan_exact for r in cell if r.plan_exact is not None]
    same = [r.plan_same_steps for r in cell if r.plan_same_steps is not None]
    stalls = [r.stalls for r in ran if r.stalls is not None]
    regrasps = [r.regrasps for r in ran if r.regrasps is not None]
    return {
        "success_rate": sum(r.success for r in cell) / len(cell),
        "success_ci95": wilson_interval(sum(r.success for r in cell), len(cell)),
        "episodes": len(cell),
        "successes": sum(r.success for r in cell),
        "goal_lost": sum(r.goal_lost for r in cell),  # met the goal, then lost it (see sim.judge)
        "refused": refused,
        "asked_back": sum(r.asked_back for r in cell),
        "wrong_plans_executed": sum(bool(r.wrong_plan) for r in cell),
        "mean_steps": float(np.mean([r.steps for r in ran])) if ran else None,
        "plan_exact_rate": _rate(exact),
        "plan_exact_rate_all": _rate(exact, refused),
        "plan_same_steps_rate": _rate(same),
        "interventions_per_episode": float(np.mean([r.interventions for r in ran])) if ran else None,
        "stalls": int(sum(stalls)) if stalls else None,
        "regrasps": int(sum(regrasps)) if regrasps else None,
        "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
        "wall_s": float(sum(r.wall_s for r in cell)),
        "seeds": sorted({r.seed for r in cell}),
    }


def _episode_json(r: EpisodeResult) -> dict[str, Any]:
    d = asdict(r)
    lat = d.pop("latency_ms")
    d["latency_ms"] = {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99), "calls": len(lat)}
    return d
