"""`keystone train`: train the VLA on an episode store, or run a named training recipe.

    keystone train --data STORE --out CKPT [--preset base|tiny] [--steps N] ...    one training run
    keystone train --recipe keystone-base --out DIR [--data STORE] [--stages s,h,i] [--threads N] [--workers N]
    keystone train --list-recipes

A recipe (`keystone_vla.vla.recipes`) is the whole way to a checkpoint: collection, training from scratch or warm
start, the yaw head and plan adapter fits, a closed-loop check; its stages carry their own settings, so the
plain-training flags do not combine with --recipe. Progress (tqdm, stage lines) goes to stderr; the run ends with
a summary (`--json`: one JSON object on the last stdout line). The plain path works unchanged under
``torchrun --nproc_per_node N -m keystone_vla.cli train ...`` (DistributedDataParallel; rank 0 prints).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keystone_vla.vla.recipes import RECIPES

#: flags of one plain training run; a recipe's stages set these themselves
PLAIN_FLAGS = ("preset", "resume", "steps", "action_head", "chunk_size", "cameras", "batch_size", "lr", "seed",
               "val_every", "eval_every", "eval_episodes", "eval_tasks", "text_encoder", "tasks", "init_from",
               "patch_size", "plan_batch_size", "actions_per_chunk", "no_object_token", "object_frame")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the VLA (ViT + LLM) on an episode store, or run a training recipe",
                       description="Train the VLA policy on demonstrations and write a checkpoint folder, or run "
                                   "a named recipe's stages (--recipe).",
                       epilog="recipes: " + "; ".join(f"{r.name} ({r.description})" for r in RECIPES.values()))
    p.add_argument("--recipe", default=None, metavar="NAME",
                   help=f"run this recipe's stages in order into --out: {', '.join(RECIPES)} (--list-recipes shows "
                        "their stages)")
    p.add_argument("--stages", default=None,
                   help="with --recipe: comma-separated stages to run, in the recipe's order (default: all); a "
                        "stage that starts from a model finds the earlier stage's checkpoint in --out")
    p.add_argument("--list-recipes", action="store_true", help="list the recipes and their stages, then exit")
    p.add_argument("--data", default=None,
                   help="episode store (zarr folder written by `keystone data collect`); with --recipe: the main "
                        "store, collected there unless it exists (default: OUT/data.zarr)")
    p.add_argument("--out", default=None,
                   help="checkpoint folder to write (and resume from); with --recipe: the folder holding one "
                        "sub-folder per stage")
    p.add_argument("--preset", default="base", help="model preset: base (~7 M params) or tiny (tests)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint and optimizer state in --out")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 3000 base, 200 tiny)")
    p.add_argument("--action-head", default="chunk", help="chunk (parallel L1 regression) or tokens (256 bins)")
    p.add_argument("--chunk-size", type=int, default=None, help="actions per chunk H (default: the preset's)")
    p.add_argument("--cameras", default="front", help="comma-separated cameras, e.g. front,wrist")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=200, help="validation loss period in steps (0 = only at the end)")
    p.add_argument("--eval-every", type=int, default=0, help="closed-loop sim evaluation period in steps (0 = off)")
    p.add_argument("--eval-episodes", type=int, default=2, help="episodes per task at each closed-loop evaluation")
    p.add_argument("--eval-tasks", default="pick_place,stack,insert,kit_assembly,build_tower")
    p.add_argument("--bf16", default="auto", help="bf16 autocast: auto (where the hardware has bf16 math), on, off")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes (default 1); with --recipe: collection and check processes "
                        "(default: the recipe's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's choice)")
    p.add_argument("--text-encoder", default="none", help="none or minilm (frozen pretrained MiniLM sentence token)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks whose episodes train the action head (default: every task in --data)")
    p.add_argument("--init-from", default=None,
                   help="warm-start from this checkpoint folder (weights, tokenizer, config; fresh optimizer)")
    p.add_argument("--patch-size", type=int, default=None,
                   help="ViT patch size in pixels for a model built from the preset (default: the preset's, 16 for "
                        "base: 64 tokens per 128 px image; 32 gives 16 tokens and a step about 40 %% cheaper here)")
    p.add_argument("--plan-batch-size", type=int, default=16,
                   help="plan examples per step trained next to the action batch (0 = no plan loss; a recipe's plan "
                        "adapter stage, fitted afterwards, can still learn plans)")
    p.add_argument("--actions-per-chunk", type=int, default=None,
                   help="record in the checkpoint written to --out how many actions of each predicted chunk an agent "
                        "executes before it predicts again (config.json n_action_steps; default: the --init-from "
                        "checkpoint's, else 2); `keystone eval --agent-set actions_per_chunk=N` still overrides it")
    p.add_argument("--no-object-token", action="store_true",
                   help="no object token (the step's object poses) in the prefix: images and text only")
    p.add_argument("--object-frame", default=None,
                   help="gripper (default) or held_part: measure a placing step's target from the gripper or from "
                        "the part it holds (compensates off-centre grasps)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last stdout line")
    p.set_defaults(func=cmd_train, plain_defaults={dest: p.get_default(dest) for dest in PLAIN_FLAGS})


def cmd_train(args: argparse.Namespace) -> int:
    from keystone_vla.errors import ConfigError

    if args.list_recipes:
        return _list_recipes(args.json)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.recipe is not None:
        return _run_recipe(args)
    if args.stages is not None:
        raise ConfigError("--stages selects stages of a recipe; name it with --recipe NAME (--list-recipes)")
    if not args.data or not args.out:
        raise ConfigError("keystone train needs --data STORE and --out CKPT (or --recipe NAME --out DIR)")
    return _train_once(args)


def _train_once(args: argparse.Namespace) -> int:
    """One plain training run: the flags become a `TrainStage`, trained like a recipe's."""
    from keystone_vla.cli._common import emit_summary, split_list
    from keystone_vla.cli.recipe import train_stage
    from keystone_vla.errors import ConfigError
    from keystone_vla.vla.recipes import TrainStage

    if args.actions_per_chunk is not None and args.actions_per_chunk < 1:
        raise ConfigError(f"--actions-per-chunk must be >= 1 (actions executed per predicted chunk), got "
                          f"{args.actions_per_chunk}")
    if args.patch_size is not None:
        if args.init_from or args.resume:
            raise ConfigError("--patch-size shapes a new model; --init-from and --resume keep their checkpoint's")
        if args.patch_size < 1:
            raise ConfigError(f"--patch-size must be a positive number of pixels, got {args.patch_size}")
    if args.plan_batch_size < 0:
        raise ConfigError(f"--plan-batch-size must be >= 0 (0 = no plan loss), got {args.plan_batch_size}")
    stage = TrainStage(
        name="train", steps=args.steps or (200 if args.preset == "tiny" else 3000), preset=args.preset,
        warm_start=bool(args.init_from), action_head=args.action_head, chunk_size=args.chunk_size,
        cameras=tuple(split_list(args.cameras)), batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        val_every=args.val_every, patch_size=args.patch_size, plan_batch_size=args.plan_batch_size,
        object_token=not args.no_object_token, object_frame=args.object_frame or "gripper",
        tasks=tuple(split_list(args.tasks)) if args.tasks else None, text_encoder=args.text_encoder,
        loader_workers=1 if args.workers is None else args.workers, actions_per_chunk=args.actions_per_chunk)
    eval_fn = _closed_loop_eval(split_list(args.eval_tasks), args.eval_episodes) if args.eval_every else None
    out = train_stage(stage, args.data, args.out, init_from=args.init_from, resume=args.resume, bf16=args.bf16,
                      device=args.device, eval_every=args.eval_every, eval_fn=eval_fn)
    if int(os.environ.get("RANK", "0")) == 0:
        emit_summary(out, args.json, title="keystone train: done")
    return 0


def _run_recipe(args: argparse.Namespace) -> int:
    from keystone_vla.cli._common import emit_summary, split_list
    from keystone_vla.cli.recipe import run_recipe
    from keystone_vla.errors import ConfigError
    from keystone_vla.vla.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    given = [d for d, default in args.plain_defaults.items() if getattr(args, d) != default]
    if given:
        flags = ", ".join("--" + d.replace("_", "-") for d in given)
        raise ConfigError(f"{flags}: a recipe's stages carry their own settings; with --recipe give only --out, "
                          "--data, --stages, --threads, --workers, --bf16, --device, --json (see --list-recipes)")
    if not args.out:
        raise ConfigError(f"--recipe {recipe.name} needs --out DIR (one sub-folder per stage)")
    stages = split_list(args.stages) if args.stages is not None else None
    if stages is not None and not stages:
        raise ConfigError(f"--stages is empty; give some of {','.join(recipe.stage_names)}")
    summary = run_recipe(recipe, args.out, data=args.data, stages=stages, workers=args.workers, bf16=args.bf16,
                         device=args.device)
    emit_summary({k: v for k, v in summary.items() if k != "stages"}, False,
                 title=f"keystone train --recipe {recipe.name}: done")
    for s in summary["stages"]:  # one line per stage; --json has every number
        shown = {k: s[k] for k in _STAGE_KEYS.get(s["kind"], ()) if s.get(k) is not None}
        print(f"  {s['stage']:<10} {s['kind']:<13} {s['wall_s'] / 60:6.1f} min  "
              + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()),
              file=sys.stderr)
    if args.json:
        print(json.dumps(summary, default=str), flush=True)
    return 0


_STAGE_KEYS = {"collect": ("skipped", "episodes_written"), "train": ("steps", "val_action", "val_plan"),
               "yaw_head": ("steps", "val_mse", "val_correlation"), "plan_adapter": ("steps", "val_plan_loss"),
               "check": ("success_rate", "episodes", "report")}


def _list_recipes(as_json: bool) -> int:
    import dataclasses

    rows = [{"name": r.name, "description": r.description, "minutes": r.minutes,
             "stages": [{"name": s.name, "kind": s.kind, **dataclasses.asdict(s)} for s in r.stages]}
            for r in RECIPES.values()]
    for r in rows:
        minutes = f"~{r['minutes']:g} min" if r["minutes"] else ""
        print(f"{r['name']:<24} {minutes:>10}  stages {','.join(s['name'] for s in r['stages'])}", file=sys.stderr)
        print(f"{'':<24} {'':>10}  {r['description']}", file=sys.stderr)
    if as_json:
        print(json.dumps({"recipes": rows}, default=str), flush=True)
    return 0


def _closed_loop_eval(tasks: list[str], episodes: int):
    def run(model, tokenizer, normalizer):
        from keystone_vla.policies.closed_loop import evaluate_in_sim
        from keystone_vla.vla.checkpoint import VLABundle
        from keystone_vla.vla.policy import VLAPolicy

        policy = VLAPolicy(VLABundle(model, tokenizer, normalizer, {}), warmup=False)
        return evaluate_in_sim(policy, tasks, episodes)

    return run
