"""`keystone data`: collect demonstrations, ingest rosbag2 logs, export to LeRobot, inspect and verify stores."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from keystone_vla.cli._common import emit_summary, split_list
from keystone_vla.errors import ConfigError

if TYPE_CHECKING:
    from keystone_vla.policies.dagger import DaggerLearner


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="episode stores: collect, ingest-bag, export-lerobot, info, verify",
                          description="Build, inspect and check zarr episode stores (sim demonstrations and robot logs).")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    c = dsub.add_parser("collect", help="run the scripted oracles in parallel and store successful episodes",
                        description="Collect oracle demonstrations; failed episodes are dropped and counted.")
    c.add_argument("--tasks", default="all", help="'all' or a comma-separated list (see `keystone sim tasks`)")
    c.add_argument("--episodes-per-task", type=int, default=10, help="episodes attempted per task")
    c.add_argument("--split", default="seen", help="seen (training) or unseen")
    c.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    c.add_argument("--out", required=True, help="episode store folder (created, or appended to)")
    c.add_argument("--arm", default="panda", help="panda (default) or iiwa")
    c.add_argument("--seed", type=int, default=0, help="collection seed; episode seeds derive from (seed, task, index)")
    c.add_argument("--cameras", default="front", help="comma-separated cameras to record (front, wrist)")
    c.add_argument("--image-size", type=int, default=128)
    c.add_argument("--action-noise", type=float, default=0.0,
                   help="metres: perturb the executed motion (labels stay the expert's) so demos include recoveries")
    c.add_argument("--learner", default=None, metavar="CKPT",
                   help="DAgger: this VLA (keystone-base or a checkpoint folder) drives part of each episode while "
                        "the oracle's actions are recorded as labels")
    c.add_argument("--learner-share", type=float, default=0.5,
                   help="with --learner: share of the episode's segments the learner drives (default 0.5)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON on the last stdout line")
    c.set_defaults(func=cmd_collect)

    b = dsub.add_parser("ingest-bag", help="turn a rosbag2 recording (mcap/sqlite3) into aligned episodes",
                        description="Map topics to fields with a YAML topic map and align them onto a fixed rate.")
    b.add_argument("bag", help="rosbag2 folder (metadata.yaml + .db3 or .mcap files)")
    b.add_argument("--map", required=True, help="topic map YAML (see keystone_vla.datasets.topic_map)")
    b.add_argument("--out", required=True, help="episode store folder (created, or appended to)")
    b.add_argument("--typestore", default="ros2_humble",
                   help="message definitions for bags that store none (ros2_humble, ros2_jazzy, ...)")
    b.add_argument("--instruction", default=None, help="instruction text for every episode (overrides the map)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_ingest)

    e = dsub.add_parser("export-lerobot", help="write a store as a LeRobotDataset v3.0 folder",
                        description="Export parquet + H.264 video in the LeRobotDataset v3.0 layout.")
    e.add_argument("store")
    e.add_argument("--out", required=True, help="new, empty output folder")
    e.add_argument("--crf", type=int, default=10, help="H.264 quality: 0 near-lossless .. 51 worst (default 10)")
    e.add_argument("--pix-fmt", default="yuv444p", choices=("yuv444p", "yuv420p"),
                   help="yuv444p (default, sharper) or yuv420p (smaller, plays everywhere)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)

    i = dsub.add_parser("info", help="episodes, steps, tasks, splits, sizes and per-field statistics",
                        description="Summarise an episode store (schema: keystone_vla.datasets.store).")
    i.add_argument("store")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    v = dsub.add_parser("verify", help="find partial or corrupt episodes; --repair removes them",
                        description="Check every episode (attrs, arrays, checksums, image decode). Exit 0 when the "
                                    "store is clean (or was repaired), 1 when bad episodes remain.")
    v.add_argument("store")
    v.add_argument("--repair", action="store_true", help="remove the bad episodes (asks first unless --yes)")
    v.add_argument("--yes", action="store_true", help="do not ask before removing")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)
    data.set_defaults(func=lambda args: (data.print_help(sys.stderr), 2)[1])


def cmd_collect(args: argparse.Namespace) -> int:
    from keystone_vla.datasets.collect import collect

    cams = tuple(split_list(args.cameras))
    learner = dagger_learner(args.learner, args.learner_share) if args.learner is not None else None
    summary = collect(args.tasks, args.episodes_per_task, args.out, split=args.split, workers=args.workers,
                      arm=args.arm, seed=args.seed, cameras=cams, image_size=args.image_size,
                      action_noise=args.action_noise, learner=learner)
    emit_summary(summary, args.json, title="keystone data collect")
    return 0


def dagger_learner(name: str, share: float = 0.5) -> DaggerLearner:
    """`--learner NAME` -> the learner factory `datasets.collect` sends to its workers (datasets sits below the
    policy layer and never resolves policy names itself). A bad name fails here, before any worker starts."""
    from keystone_vla.policies.dagger import DaggerLearner
    from keystone_vla.policies.registry import resolve_policy_name

    kind, folder = resolve_policy_name(str(name))
    if kind != "vla":
        raise ConfigError(f"--learner {name}: DAgger needs a VLA checkpoint (keystone-base or a folder written by "
                          f"`keystone train`), got a {kind} policy")
    return DaggerLearner(str(folder), share=share)


def cmd_ingest(args: argparse.Namespace) -> int:
    from keystone_vla.datasets.ingest import ingest_bag
    from keystone_vla.datasets.topic_map import load_topic_map

    summary = ingest_bag(args.bag, load_topic_map(args.map), args.out, typestore=args.typestore,
                         instruction=args.instruction)
    emit_summary(summary, args.json, title="keystone data ingest-bag")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from keystone_vla.datasets.lerobot import export_lerobot

    summary = export_lerobot(args.store, args.out, crf=args.crf, pix_fmt=args.pix_fmt)
    emit_summary(summary, args.json, title="keystone data export-lerobot")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from keystone_vla.datasets.store import EpisodeStore
    from keystone_vla.datasets.verify import store_info

    emit_summary(store_info(EpisodeStore(args.store, mode="r")), args.json, title="keystone data info")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from keystone_vla.datasets.store import EpisodeStore
    from keystone_vla.datasets.verify import repair, verify_store

    store = EpisodeStore(args.store, mode="a" if args.repair else "r")
    report = verify_store(store)
    for entry in report.bad:
        print(f"BAD {entry['episode']}: {entry['problem']}", file=sys.stderr)
    summary = report.summary()
    removed: list[str] = []
    if args.repair and report.bad:
        targets = [b["episode"] for b in report.bad if b["removable"]]
        if targets and (args.yes or _confirm(f"remove {len(targets)} bad episode(s) from {store.path}?")):
            removed = repair(store, report)
        elif targets:
            print("nothing removed (not confirmed; pass --yes to skip the question)", file=sys.stderr)
    summary["removed"] = removed
    emit_summary(summary, args.json, title="keystone data verify")
    remaining = [b for b in report.bad if b["episode"] not in removed]
    return 1 if remaining else 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} [y/N] (no terminal to ask; pass --yes)", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
