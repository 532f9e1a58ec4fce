"""Runs training recipes (`keystone_vla.vla.recipes`) stage by stage: `keystone train --recipe NAME --out DIR`.

Each stage is one call into the layer that owns it: demonstrations through `keystone_vla.datasets.collect` (a
DAgger round through `keystone data collect --learner`, which builds the learner from a checkpoint), training
through `keystone_vla.vla.train`, the yaw head and plan adapter fits through `keystone_vla.vla.yaw_head` and
`keystone_vla.vla.plan_adapter`, the closed-loop check through `keystone_vla.policies.evaluate` (the harness of
`keystone eval`). That is why the runner lives in the CLI layer: it is the one place that may import them all.

Layout of DIR: ``DIR/data.zarr`` (the main store unless ``--data`` names another), ``DIR/<store>.zarr`` (the
recipe's other stores), ``DIR/<stage>/`` (a model stage's checkpoint, a check's report, a collect stage's
``collect.json``). Every checkpoint's train_info.json names the recipe and the stage under ``recipe``. The plain
`keystone train --data --out` path trains one `TrainStage` with `train_stage` too, so both share one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from keystone_vla.errors import ConfigError
from keystone_vla.vla.recipes import (
    MAIN_STORE,
    CheckStage,
    CollectStage,
    PlanAdapterStage,
    Recipe,
    Stage,
    TrainStage,
    YawHeadStage,
)

TRAIN_INFO = "train_info.json"
COLLECT_RECORD = "collect.json"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ one stage each
def train_stage(stage: TrainStage, data: str | os.PathLike[str], out: str | os.PathLike[str], *,
                init_from: str | os.PathLike[str] | None = None, resume: bool = False, bf16: str = "auto",
                device: str = "auto", eval_every: int = 0, eval_fn: Any = None, progress: bool = True
                ) -> dict[str, Any]:
    """Train `stage` on the store `data` into the checkpoint folder `out` (from scratch, from `init_from`, or
    resuming `out`); returns the summary `keystone train` prints. Works under torchrun (rank 0 writes)."""
    from keystone_vla.vla.configuration import get_preset
    from keystone_vla.vla.data import datasets_from_store
    from keystone_vla.vla.train import TrainConfig, train

    if not os.path.isdir(data):
        raise ConfigError(f"--data {data} is not a folder; collect demonstrations first: keystone data collect")
    config = get_preset(stage.preset, action_head=stage.action_head, cameras=tuple(stage.cameras),
                        text_encoder=stage.text_encoder, object_token=stage.object_token,
                        object_frame=stage.object_frame,
                        **({"chunk_size": stage.chunk_size} if stage.chunk_size else {}))
    if stage.patch_size is not None:
        if init_from or resume:
            raise ConfigError(f"stage {stage.name!r}: patch_size shapes a new model; a warm start and --resume "
                              "keep their checkpoint's")
        config = config.replace(vision=dataclasses.replace(config.vision, patch_size=stage.patch_size))
    steps = stage.steps
    tcfg = TrainConfig(steps=steps, batch_size=stage.batch_size, lr=stage.lr, seed=stage.seed,
                       val_every=stage.val_every or steps, eval_every=eval_every, bf16=bf16,
                       num_workers=stage.loader_workers, device=device, augment_shift=0,
                       plan_colour_swap=stage.plan_colour_swap, action_loss_weights=stage.action_loss_weights,
                       action_l2_dims=tuple(stage.action_l2_dims), plan_batch_size=stage.plan_batch_size,
                       warmup_steps=min(100, max(1, steps // 10)), save_every=max(500, steps // 5))
    train_ds, val_ds, examples, norm, info, config = datasets_from_store(
        str(data), config, tasks=list(stage.tasks) if stage.tasks else None)
    if init_from:
        info["init_from"] = str(init_from)
    if stage.actions_per_chunk is not None:
        check_actions_per_chunk(stage.actions_per_chunk, config.chunk_size)
    summary = train(config, tcfg, train_ds, examples, norm, out, resume=resume, eval_fn=eval_fn, data_info=info,
                    val_dataset=val_ds, init_from=init_from, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        record_actions_per_chunk(out, stage.actions_per_chunk)
    losses, val = summary["final_losses"], summary.get("val", {})
    return {
        "out": summary["out"], "steps": summary["steps"], "world_size": summary["world_size"],
        "final_loss": losses.get("loss"), "action_loss": losses.get("action"), "plan_loss": losses.get("plan"),
        "val_action": val.get("val_action"), "val_plan": val.get("val_plan"),
        "samples_per_s": summary["samples_per_s"], "wall_s": summary["wall_s"], "bf16": summary["bf16"],
        "parameters": summary["parameters"]["total"], "episodes": info["episodes"],
    }


def yaw_head_stage(stage: YawHeadStage, data: str | os.PathLike[str], out: str | os.PathLike[str],
                   init_from: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Copy `init_from` to `out` with a yaw head fitted on `data` (`keystone_vla.vla.yaw_head.add_yaw_head`)."""
    from keystone_vla.vla.yaw_head import add_yaw_head

    _check_fit_inputs(stage, data, init_from)
    s = add_yaw_head(str(init_from), str(data), str(out), steps=stage.steps, batch_size=stage.batch_size,
                     lr=stage.lr, seed=stage.seed, augment_copies=stage.augment_copies, progress=progress,
                     object_frame=stage.object_frame)
    record_actions_per_chunk(out, stage.actions_per_chunk)
    before, after = s["val_before"], s["val_after"]
    return {"out": str(out), "steps": s["steps"], "train_windows": s["train_windows"],
            "val_mse_before": before["mse"], "val_mse": after["mse"], "val_label_variance": after["label_variance"],
            "val_correlation": after["correlation"], "object_frame": s["object_frame"], "wall_s": s["wall_s"]}


def plan_adapter_stage(stage: PlanAdapterStage, data: str | os.PathLike[str], out: str | os.PathLike[str],
                       init_from: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Copy `init_from` to `out` with a plan adapter fitted on the plans of `data`
    (`keystone_vla.vla.plan_adapter.add_plan_adapter`)."""
    from keystone_vla.vla.plan_adapter import add_plan_adapter

    _check_fit_inputs(stage, data, init_from)
    held_out: tuple[str, ...] = ()
    if stage.relation_phrasing:  # the re-descriptions must never use a template the unseen split evaluates
        from keystone_vla.sim.tasks import TASKS

        held_out = tuple(t.text for task in TASKS.values() for t in task.templates if t.split == "unseen")
    s = add_plan_adapter(str(init_from), str(data), str(out), steps=stage.steps, batch_size=stage.batch_size,
                         lr=stage.lr, rank=stage.rank, seed=stage.seed, progress=progress,
                         relation_phrasing=stage.relation_phrasing, held_out=held_out,
                         word_features=stage.word_features)
    record_actions_per_chunk(out, stage.actions_per_chunk)
    return {"out": str(out), "steps": s["steps"], "train_examples": s["train_examples"],
            "val_plan_loss_before": s["val_loss_before"], "val_plan_loss": s["val_loss_after"],
            "parameters": s["n_parameters"], "wall_s": s["wall_s"]}


def collect_stage(stage: CollectStage, store: Path, workers: int, learner: Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Collect `stage`'s oracle episodes into `store` (a DAgger round with `learner`, a checkpoint folder)."""
    tasks = "all" if tuple(stage.tasks) == ("all",) else list(stage.tasks)
    if learner is None:
        from keystone_vla.datasets.collect import collect

        return collect(tasks, stage.episodes_per_task, store, split=stage.split, workers=workers, seed=stage.seed,
                       cameras=tuple(stage.cameras), image_size=stage.image_size, progress=progress)
    # the data layer takes its DAgger learner by injection; `keystone data collect --learner` is where a checkpoint
    # folder becomes that learner, so a DAgger round goes through it (its JSON summary captured, not printed)
    import argparse

    from keystone_vla.cli import data as data_cli

    parser = argparse.ArgumentParser(prog="keystone")
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args([
        "data", "collect", "--tasks", tasks if isinstance(tasks, str) else ",".join(tasks),
        "--episodes-per-task", str(stage.episodes_per_task), "--split", stage.split, "--workers", str(workers),
        "--image-size", str(stage.image_size), "--cameras", ",".join(stage.cameras), "--seed", str(stage.seed),
        "--out", str(store), "--learner", str(learner), "--learner-share", str(stage.learner_share), "--json"])
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        args.func(args)
    lines = captured.getvalue().strip().splitlines()
    return json.loads(lines[-1]) if lines else {"out": str(store)}


def check_stage(stage: CheckStage, policy: Path, out: Path, workers: int, progress: bool = True) -> dict[str, Any]:
    """Evaluate the checkpoint `policy` closed loop as `keystone eval` does; the report goes to `out`."""
    from keystone_vla.policies.evaluate import EvalConfig, evaluate, parse_tasks

    config = EvalConfig(policy=str(policy), tasks=parse_tasks(",".join(stage.tasks)), splits=(stage.split,),
                        episodes=stage.episodes, workers=workers, seed=stage.seed, out=out, max_steps=stage.max_steps,
                        videos=stage.videos)
    s = evaluate(config, progress=progress)
    return {"policy": str(policy), "success_rate": s["success_rate"], "episodes": s["episodes"],
            "refused": s["refused"], "plan_exact_rate": s["plan_exact_rate"],
            "tasks": {t: {sp: c["success_rate"] for sp, c in cells.items()} for t, cells in s["tasks"].items()},
            "report": s.get("report"), "wall_s": round(s["wall_s"], 1)}


# ------------------------------------------------------------------------------------------------ helpers
def check_actions_per_chunk(n: int, chunk_size: int) -> None:
    if n > chunk_size:
        raise ConfigError(f"--actions-per-chunk {n} is more than the chunk size {chunk_size}; give 1..{chunk_size}")


def record_actions_per_chunk(out: str | os.PathLike[str], n: int | None) -> None:
    """With `n`: rewrite out's config.json with n_action_steps=n (only that key; the weights do not depend on it).
    Runs once the checkpoint is complete; the value was checked against the chunk size before the run."""
    if n is None:
        return
    from keystone_vla.vla.configuration import VLAConfig

    VLAConfig.load(out).replace(n_action_steps=n).save(out)


def _check_fit_inputs(stage: YawHeadStage | PlanAdapterStage, data: str | os.PathLike[str],
                      init_from: str | os.PathLike[str]) -> None:
    from keystone_vla.vla.configuration import CONFIG_FILE, VLAConfig

    if not os.path.isdir(data):
        raise ConfigError(f"store {data} is not a folder; collect demonstrations first: keystone data collect")
    if stage.actions_per_chunk is not None and os.path.isfile(os.path.join(init_from, CONFIG_FILE)):
        check_actions_per_chunk(stage.actions_per_chunk, VLAConfig.load(init_from).chunk_size)  # else the fit names it


def _stamp_train_info(folder: Path, recipe: Recipe, stage: Stage, source: Path | None) -> None:
    """Name the recipe and stage in folder's train_info.json (with the stages it descends from), atomically."""
    path = folder / TRAIN_INFO
    info = json.loads(path.read_text())
    lineage: list[str] = []
    if source is not None and (source / TRAIN_INFO).is_file():
        before = json.loads((source / TRAIN_INFO).read_text()).get("recipe") or {}
        if before.get("name") == recipe.name:
            lineage = list(before.get("lineage", []))
    info["recipe"] = {"name": recipe.name, "stage": stage.name, "kind": stage.kind,
                      "from": source.name if source is not None else None, "lineage": [*lineage, stage.name],
                      "spec": dataclasses.asdict(stage)}
    tmp = path.with_name(f".{TRAIN_INFO}.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def describe(stage: Stage, recipe: Recipe) -> str:
    """One line: what a stage does."""
    if isinstance(stage, CollectStage):
        what = "DAgger round" if stage.learner else "oracle episodes"
        return (f"collect: {stage.episodes_per_task} {what} per task of {','.join(stage.tasks)} ({stage.split}, "
                f"{stage.image_size} px, seed {stage.seed}) -> store {stage.store!r}")
    if isinstance(stage, TrainStage):
        start = f"warm start from {recipe.model_stage_before(stage.name)}" if stage.warm_start else "from scratch"
        return f"train: {stage.steps} steps, preset {stage.preset}, {start}, store {stage.store!r}"
    if isinstance(stage, YawHeadStage):
        return f"yaw head on {recipe.model_stage_before(stage.name)}: {stage.steps} steps, store {stage.store!r}"
    if isinstance(stage, PlanAdapterStage):
        return (f"plan adapter on {recipe.model_stage_before(stage.name)}: {stage.steps} steps, "
                f"store {stage.store!r}")
    return (f"closed-loop check of {recipe.model_stage_before(stage.name)}: {stage.episodes} episodes per task "
            f"of {','.join(stage.tasks)} ({stage.split})")


# ------------------------------------------------------------------------------------------------ the runner
def run_recipe(recipe: Recipe, out: str | os.PathLike[str], data: str | os.PathLike[str] | None = None,
               stages: list[str] | None = None, workers: int | None = None, bf16: str = "auto",
               device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Run `recipe`'s stages (all, or the named ones in the recipe's order) into the folder `out`; returns the
    summary: recipe, out, data, final (the last model stage's checkpoint), stages (one dict each), wall_s.

    Every input a selected stage needs is checked before anything runs: a store no selected stage collects must
    exist, and a stage that starts from a model needs that model stage selected too or its checkpoint in `out`."""
    from keystone_vla.policies.agent_config import get_agent_config

    get_agent_config(recipe.agent)  # an unknown preset fails before any work
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a recipe runs in one process (it collects and evaluates too); train one stage under "
                          "torchrun with plain keystone train --data --out")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    selected = recipe.select(stages)
    stores = {MAIN_STORE: Path(data) if data else out / "data.zarr"}
    for s in recipe.stages:
        store = getattr(s, "store", MAIN_STORE)
        stores.setdefault(store, out / f"{store}.zarr")
    _preflight(recipe, selected, out, stores)

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    final: Path | None = None
    for i, stage in enumerate(selected, 1):
        log(f"== {recipe.name} [{i}/{len(selected)}] stage {stage.name}: {describe(stage, recipe)}")
        t = time.perf_counter()
        prev = recipe.model_stage_before(stage.name)
        source = out / prev if prev else None
        folder = out / stage.name
        res: dict[str, Any]
        if isinstance(stage, CollectStage):
            store = stores[stage.store]
            record = folder / COLLECT_RECORD
            if (record.is_file() if stage.learner else store.exists()):
                why = f"{record} records this round" if stage.learner else f"store {store} exists"
                log(f"   skipped: {why}")
                res = {"skipped": True, "store": str(store)}
            else:
                res = collect_stage(stage, store, workers or stage.workers, learner=source if stage.learner else None,
                                    progress=progress)
                folder.mkdir(parents=True, exist_ok=True)
                record.write_text(json.dumps(res, indent=2, default=str) + "\n")
                res = {"skipped": False, "store": str(store), "episodes_written": res.get("episodes_written"),
                       "episodes_dropped": res.get("episodes_dropped")}
        elif isinstance(stage, CheckStage):
            res = check_stage(stage, source, folder, workers or stage.workers, progress=progress)
            final = source
        else:
            store = stores[stage.store]
            if isinstance(stage, TrainStage):
                res = train_stage(stage, store, folder, init_from=source if stage.warm_start else None, bf16=bf16,
                                  device=device, progress=progress)
            elif isinstance(stage, YawHeadStage):
                res = yaw_head_stage(stage, store, folder, source, progress=progress)
            else:
                res = plan_adapter_stage(stage, store, folder, source, progress=progress)
            _stamp_train_info(folder, recipe, stage,
                              source if not isinstance(stage, TrainStage) or stage.warm_start else None)
            get_agent_config(recipe.agent).save(folder)  # how the check and every evaluation will drive it
            final = folder
        wall = round(time.perf_counter() - t, 1)
        results.append({"stage": stage.name, "kind": stage.kind, **res, "wall_s": wall})
        log(f"   stage {stage.name} done in {wall / 60:.1f} min")
    return {"recipe": recipe.name, "out": str(out), "data": str(stores[MAIN_STORE]),
            "final": str(final) if final is not None else None, "stages": results,
            "wall_s": round(time.perf_counter() - t0, 1)}


def _preflight(recipe: Recipe, selected: tuple[Stage, ...], out: Path, stores: dict[str, Path]) -> None:
    run = {s.name for s in selected}
    collected: set[str] = set()
    for stage in selected:
        if isinstance(stage, CollectStage):
            collected.add(stage.store)
        store = getattr(stage, "store", None)
        if (store is not None and not isinstance(stage, CollectStage) and store not in collected
                and not stores[store].exists()):
            writers = [s.name for s in recipe.stages if isinstance(s, CollectStage) and s.store == store]
            hint = f"run stage {writers[0]} too" if writers else "give one with --data"
            raise ConfigError(f"stage {stage.name!r} reads the store {stores[store]}, which does not exist; {hint}")
        needs_model = (isinstance(stage, (YawHeadStage, PlanAdapterStage, CheckStage))
                       or (isinstance(stage, TrainStage) and stage.warm_start)
                       or (isinstance(stage, CollectStage) and stage.learner))
        prev = recipe.model_stage_before(stage.name)
        if needs_model and prev not in run and not (out / prev / TRAIN_INFO).is_file():
            raise ConfigError(f"stage {stage.name!r} starts from stage {prev!r}'s checkpoint {out / prev}, which does "
                              f"not exist; run {prev} first (--stages {prev},{stage.name})")
