"""`keystone train`: train the VLA on an episode store and write a checkpoint folder.

Progress (tqdm) and periodic validation go to stderr; the run ends with a summary (`--json`: one JSON object
on the last stdout line). Works unchanged under ``torchrun --nproc_per_node N -m keystone_vla.cli train ...``
(DistributedDataParallel; only rank 0 prints the summary).
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the VLA (ViT + LLM) on an episode store",
                       description="Train the VLA policy on demonstrations and write a checkpoint folder.")
    p.add_argument("--data", required=True, help="episode store (zarr folder written by `keystone data collect`)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (and resume from)")
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
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's choice)")
    p.add_argument("--text-encoder", default="none", help="none or minilm (frozen pretrained MiniLM sentence token)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-colour-swap", action="store_true",
                   help="train the plan head without the colour-renaming text augmentation (strict colour split)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks whose episodes train the action head (default: every task in --data)")
    p.add_argument("--init-from", default=None,
                   help="warm-start from this checkpoint folder (weights, tokenizer, config; fresh optimizer)")
    p.add_argument("--patch-size", type=int, default=None,
                   help="ViT patch size in pixels for a model built from the preset (default: the preset's, 16 for "
                        "base: 64 tokens per 128 px image; 32 gives 16 tokens and a step about 40 %% cheaper here, "
                        "reports/dev-stop19)")
    p.add_argument("--plan-batch-size", type=int, default=16,
                   help="plan examples per step trained next to the action batch (0 = no plan loss; the plan "
                        "adapter, fitted afterwards, can still learn plans)")
    p.add_argument("--actions-per-chunk", type=int, default=None,
                   help="record in the checkpoint written to --out how many actions of each predicted chunk an agent "
                        "executes before it predicts again (config.json n_action_steps; default: the --init-from "
                        "checkpoint's, else 2); `keystone eval --actions-per-chunk` still overrides it")
    p.add_argument("--no-object-token", action="store_true",
                   help="no object token (the step's object poses) in the prefix: images and text only")
    p.add_argument("--object-frame", default=None,
                   help="gripper (default) or held_part: measure a placing step's target from the gripper or from "
                        "the part it holds (compensates off-centre grasps); with --fit-yaw-head, the frame the new "
                        "checkpoint uses (default: the --init-from checkpoint's)")
    p.add_argument("--action-weights", default=None,
                   help="7 comma-separated action loss weights (dx,dy,dz,droll,dpitch,dyaw,gripper), e.g. "
                        "1,1,1,1,1,5,1 so the rarely-turning yaw is learned (default: all alike)")
    p.add_argument("--l2-dims", default="",
                   help="comma-separated action dimensions (0-6) the chunk head learns with squared error instead "
                        "of L1, e.g. 5: yaw turns in a few ticks, so its L1 optimum (the median) is no turn at all")
    p.add_argument("--fit-yaw-head", action="store_true",
                   help="with --init-from: copy that chunk-head checkpoint to --out with a yaw head (object features "
                        "+ state -> the chunk's turn) fitted on --data; no images, minutes on a CPU; --steps "
                        "defaults to 6000 here")
    p.add_argument("--fit-plan-adapter", action="store_true",
                   help="with --init-from: copy that checkpoint to --out with a plan adapter (LoRA on the LM, on only "
                        "while it writes a plan, plus a MiniLM sentence token) fitted on the plans in --data; text "
                        "only, minutes on a CPU; actions are unchanged; --steps defaults to 1500 here")
    p.add_argument("--plan-adapter-rank", type=int, default=8,
                   help="with --fit-plan-adapter: the LoRA rank of the adapter (default 8)")
    p.add_argument("--plan-word-features", action="store_true",
                   help="with --fit-plan-adapter: the adapter also reads MiniLM's vector of each instruction word "
                        "(the shipped keystone-base uses it; reports/dev-stop20, dev-stop21)")
    p.add_argument("--relation-phrasing", type=float, default=0.0,
                   help="with --fit-plan-adapter: the fraction of stacking plans (stack, build_tower) whose "
                        "instruction is replaced by a fresh relational description (bottom-up or top-down lists, "
                        "roles, pairwise relations, chains, build sequences; never one of the simulator's unseen "
                        "templates); 0 = off")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last stdout line")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from keystone_vla.cli._common import emit_summary, split_list
    from keystone_vla.errors import ConfigError
    from keystone_vla.vla.configuration import get_preset
    from keystone_vla.vla.data import datasets_from_store
    from keystone_vla.vla.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.actions_per_chunk is not None and args.actions_per_chunk < 1:
        raise ConfigError(f"--actions-per-chunk must be >= 1 (actions executed per predicted chunk), got "
                          f"{args.actions_per_chunk}")
    if args.fit_yaw_head and args.fit_plan_adapter:
        raise ConfigError("--fit-yaw-head and --fit-plan-adapter are separate steps; run one, then the other on its "
                          "output")
    if args.actions_per_chunk is not None and (args.fit_yaw_head or args.fit_plan_adapter) and args.init_from:
        from keystone_vla.vla.configuration import CONFIG_FILE, VLAConfig

        if os.path.isfile(os.path.join(args.init_from, CONFIG_FILE)):  # else the fit names what is missing
            _check_actions_per_chunk(args.actions_per_chunk, VLAConfig.load(args.init_from).chunk_size)
    if args.fit_yaw_head:
        return _record_actions_per_chunk(args, _fit_yaw_head(args))
    if args.fit_plan_adapter:
        return _record_actions_per_chunk(args, _fit_plan_adapter(args))
    cameras = tuple(split_list(args.cameras))
    overrides = {"action_head": args.action_head, "cameras": cameras, "text_encoder": args.text_encoder,
                 "object_token": not args.no_object_token, "object_frame": args.object_frame or "gripper"}
    if args.chunk_size:
        overrides["chunk_size"] = args.chunk_size
    config = get_preset(args.preset, **overrides)
    if args.patch_size is not None:
        if args.init_from or args.resume:
            raise ConfigError("--patch-size shapes a new model; --init-from and --resume keep their checkpoint's")
        if args.patch_size < 1:
            raise ConfigError(f"--patch-size must be a positive number of pixels, got {args.patch_size}")
        config = config.replace(vision=dataclasses.replace(config.vision, patch_size=args.patch_size))
    if args.plan_batch_size < 0:
        raise ConfigError(f"--plan-batch-size must be >= 0 (0 = no plan loss), got {args.plan_batch_size}")
    if not os.path.isdir(args.data):
        raise ConfigError(f"--data {args.data} is not a folder; collect demonstrations first: keystone data collect")
    steps = args.steps or (200 if args.preset == "tiny" else 3000)
    weights = None
    if args.action_weights:
        try:
            weights = tuple(float(x) for x in split_list(args.action_weights))
        except ValueError:
            raise ConfigError(f"--action-weights {args.action_weights!r}: give 7 comma-separated numbers, "
                              "e.g. 1,1,1,1,1,5,1") from None
    try:
        l2_dims = tuple(int(x) for x in split_list(args.l2_dims)) if args.l2_dims else ()
    except ValueError:
        raise ConfigError(f"--l2-dims {args.l2_dims!r}: give action dimensions 0-6, e.g. 5 for yaw") from None
    tcfg = TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       val_every=args.val_every or steps, eval_every=args.eval_every, bf16=args.bf16,
                       num_workers=args.workers, device=args.device, augment_shift=0,
                       plan_colour_swap=not args.no_colour_swap, action_loss_weights=weights,
                       action_l2_dims=l2_dims, plan_batch_size=args.plan_batch_size,
                       warmup_steps=min(100, max(1, steps // 10)), save_every=max(500, steps // 5))
    train_ds, val_ds, examples, norm, info, config = datasets_from_store(
        args.data, config, tasks=split_list(args.tasks) if args.tasks else None)
    if args.init_from:
        info["init_from"] = str(args.init_from)
    eval_fn = None
    if args.eval_every:
        eval_fn = _closed_loop_eval(split_list(args.eval_tasks), args.eval_episodes)
    if args.actions_per_chunk is not None:
        _check_actions_per_chunk(args.actions_per_chunk, config.chunk_size)
    summary = train(config, tcfg, train_ds, examples, norm, args.out, resume=args.resume, eval_fn=eval_fn,
                    data_info=info, val_dataset=val_ds, init_from=args.init_from)
    if int(os.environ.get("RANK", "0")) == 0:
        _record_actions_per_chunk(args, 0)
        out = {
            "out": summary["out"], "steps": summary["steps"], "world_size": summary["world_size"],
            "final_loss": summary["final_losses"].get("loss"), "action_loss": summary["final_losses"].get("action"),
            "plan_loss": summary["final_losses"].get("plan"),
            "val_action": summary.get("val", {}).get("val_action"), "val_plan": summary.get("val", {}).get("val_plan"),
            "samples_per_s": summary["samples_per_s"], "wall_s": summary["wall_s"], "bf16": summary["bf16"],
            "parameters": summary["parameters"]["total"], "episodes": info["episodes"],
        }
        emit_summary(out, args.json, title="keystone train: done")
    return 0


def _record_actions_per_chunk(args: argparse.Namespace, rc: int) -> int:
    """With --actions-per-chunk N: rewrite --out's config.json with n_action_steps=N (only that key changes; the
    weights do not depend on it). Runs after the checkpoint is complete, so every training mode shares it."""
    if args.actions_per_chunk is None or rc != 0:
        return rc
    from keystone_vla.vla.configuration import VLAConfig

    # the value was checked against the chunk size before the run (`_check_actions_per_chunk`)
    VLAConfig.load(args.out).replace(n_action_steps=args.actions_per_chunk).save(args.out)
    return rc


def _check_actions_per_chunk(n: int, chunk_size: int) -> None:
    from keystone_vla.errors import ConfigError

    if n > chunk_size:
        raise ConfigError(f"--actions-per-chunk {n} is more than the chunk size {chunk_size}; give 1..{chunk_size}")


def _check_fit_args(args: argparse.Namespace, flag: str, part: str) -> None:
    """What every "copy a checkpoint with one part fitted" mode needs: --init-from, no --resume, a --data folder."""
    from keystone_vla.errors import ConfigError

    if not args.init_from:
        raise ConfigError(f"{flag} adds {part} to a trained model; name it with --init-from CKPT")
    if args.resume:
        raise ConfigError(f"{flag} writes a new checkpoint; drop --resume")
    if not os.path.isdir(args.data):
        raise ConfigError(f"--data {args.data} is not a folder; collect demonstrations first: keystone data collect")


def _fit_yaw_head(args: argparse.Namespace) -> int:
    from keystone_vla.cli._common import emit_summary
    from keystone_vla.vla.yaw_head import add_yaw_head

    _check_fit_args(args, "--fit-yaw-head", "a yaw head")
    s = add_yaw_head(args.init_from, args.data, args.out, steps=args.steps or 6000, seed=args.seed,
                     object_frame=args.object_frame)
    before, after = s["val_before"], s["val_after"]
    emit_summary({"out": args.out, "steps": s["steps"], "train_windows": s["train_windows"],
                  "val_mse_before": before["mse"], "val_mse": after["mse"], "val_label_variance": after["label_variance"],
                  "val_correlation": after["correlation"], "object_frame": s["object_frame"],
                  "wall_s": s["wall_s"]},
                 args.json, title="keystone train --fit-yaw-head: done")
    return 0


def _fit_plan_adapter(args: argparse.Namespace) -> int:
    from keystone_vla.cli._common import emit_summary
    from keystone_vla.errors import ConfigError
    from keystone_vla.vla.plan_adapter import add_plan_adapter

    _check_fit_args(args, "--fit-plan-adapter", "a plan adapter")
    if args.plan_adapter_rank < 1:
        raise ConfigError(f"--plan-adapter-rank {args.plan_adapter_rank}: the adapter's rank must be >= 1 (default 8)")
    if not 0.0 <= args.relation_phrasing <= 1.0:
        raise ConfigError(f"--relation-phrasing {args.relation_phrasing}: give a fraction in [0, 1] (0 = off)")
    held_out: tuple[str, ...] = ()
    if args.relation_phrasing:
        from keystone_vla.sim.tasks import TASKS

        held_out = tuple(t.text for task in TASKS.values() for t in task.templates if t.split == "unseen")
    s = add_plan_adapter(args.init_from, args.data, args.out, steps=args.steps or 1500, seed=args.seed,
                         relation_phrasing=args.relation_phrasing, held_out=held_out, rank=args.plan_adapter_rank,
                         word_features=args.plan_word_features)
    emit_summary({"out": args.out, "steps": s["steps"], "train_examples": s["train_examples"],
                  "val_plan_loss_before": s["val_loss_before"], "val_plan_loss": s["val_loss_after"],
                  "parameters": s["n_parameters"], "wall_s": s["wall_s"]},
                 args.json, title="keystone train --fit-plan-adapter: done")
    return 0


def _closed_loop_eval(tasks: list[str], episodes: int):
    def run(model, tokenizer, normalizer):
        from keystone_vla.vla.checkpoint import VLABundle
        from keystone_vla.vla.closed_loop import evaluate_in_sim
        from keystone_vla.vla.policy import VLAPolicy

        policy = VLAPolicy(VLABundle(model, tokenizer, normalizer, {}), warmup=False)
        return evaluate_in_sim(policy, tasks, episodes)

    return run
