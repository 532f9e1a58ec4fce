"""`keystone eval`: evaluate a policy in simulation and write a report; `keystone eval compare A B` prints deltas.

    keystone eval --policy keystone-base|PATH|oracle --tasks all --split seen,unseen --episodes 50 --workers 2 \\
        --seed 0 --out reports/NAME [--agent shipped|raw] [--agent-set KEY=VALUE ...] [--instructions-file FILE] [--json]
    keystone eval compare reports/A reports/B [--json]

This module only parses arguments and prints; the harness is `keystone_vla.policies.evaluate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from keystone_vla.cli._common import emit_summary


def register(subparsers: Any) -> None:
    from keystone_vla.policies.agent_config import PRESETS

    p = subparsers.add_parser(
        "eval",
        help="evaluate a policy on sim tasks and write a report (or: eval compare A B)",
        description="Run a policy on simulated tasks x splits with fixed seeds in worker processes; write "
        "results.json, report.md/html, charts and rollout videos to --out. `keystone eval compare A B` prints "
        "the deltas between two report folders.",
    )
    p.add_argument("--policy", help="keystone-base, a checkpoint folder (VLA or baseline), scripted (a no-learning controller run through the same agent: a control) or oracle (reads the simulator: privileged)")
    p.add_argument("--tasks", default="all", help="'all' or comma-separated task names (default: all)")
    p.add_argument("--split", default="seen,unseen", help="seen, unseen or seen,unseen (default: both)")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task x split (default: 50)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="base seed: episode i uses seed + i (default: 0)")
    p.add_argument("--out", type=Path, help="report folder (default: reports/<policy name>)")
    p.add_argument("--instructions-file", type=Path,
                   help='JSONL of {"task": ..., "instruction": ...} user phrasings to evaluate instead of templates: '
                        "each runs in the split its colours belong to, in a task scene holding what it names; only "
                        "a phrasing no scene grounds is refused, with its reason (asked back and wrong plans "
                        "executed are counted apart)")
    p.add_argument("--arm", default="panda", help="arm to evaluate on (default: panda)")
    p.add_argument("--max-steps", type=int, default=None, help="cut episodes after this many ticks (default: task's)")
    p.add_argument("--no-videos", action="store_true", help="do not record rollout videos")
    p.add_argument("--agent", default=None, metavar="PRESET", choices=sorted(PRESETS),
                   help="VLA policies: the agent preset to run (%(choices)s; default: the checkpoint's agent.json, "
                        "else shipped); raw is the model alone, no assists")
    p.add_argument("--agent-set", action="append", default=[], metavar="KEY=VALUE",
                   help="VLA policies: change one agent setting, repeatable, e.g. alignment.radius=0.03, "
                        "assists=alignment,binary_gripper, regrasp.max_regrasps=0, actions_per_chunk=4 "
                        "(keys: docs/agent.md)")
    p.add_argument("--scene", default="perception", choices=["perception", "privileged"],
                   help="where a VLA agent's objects come from: 'perception' (default: its cameras' RGB-D frames, "
                        "what a real cell has) or 'privileged' (simulator truth: an upper bound, labelled as such "
                        "in results.json and the report)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="eval_command", metavar="compare")
    c = sub.add_parser("compare", help="print deltas of report B against report A (same seeds = paired)",
                       description="Compare two report folders written by `keystone eval --out`: success-rate "
                       "deltas per task x split, overall, and latency (B - A).")
    c.add_argument("a", type=Path, help="report folder A (baseline of the comparison)")
    c.add_argument("b", type=Path, help="report folder B")
    c.add_argument("more", type=Path, nargs="*", help="further report folders for --table")
    c.add_argument("--table", type=Path, default=None,
                   help="also write a markdown table of success per task x split, all reports side by side")
    c.add_argument("--json", action="store_true", help="print the deltas as one JSON object on the last line")
    c.set_defaults(func=lambda args: run_compare(args.a, args.b, args.json, args.more, args.table))


def run(args: argparse.Namespace) -> int:
    from keystone_vla.errors import ConfigError

    if not args.policy:
        raise ConfigError("--policy is required: keystone-base, a checkpoint folder, scripted or oracle")
    return run_eval(args)


def run_eval(args: argparse.Namespace) -> int:
    from keystone_vla.policies.evaluate import (
        EvalConfig,
        evaluate,
        parse_splits,
        parse_tasks,
        read_instructions_file,
    )
    from keystone_vla.policies.registry import agent_config_of

    instructions = read_instructions_file(args.instructions_file) if args.instructions_file else ()
    tasks = tuple(dict.fromkeys(t for t, _ in instructions)) if instructions else parse_tasks(args.tasks)
    name = Path(args.policy).name if args.policy not in ("oracle", "broken") else args.policy
    config = EvalConfig(
        policy=args.policy, tasks=tasks, splits=parse_splits(args.split), episodes=args.episodes,
        workers=args.workers, seed=args.seed, out=args.out or Path("reports") / name, instructions=instructions,
        arm=args.arm, max_steps=args.max_steps, videos=not args.no_videos,
        agent=agent_config_of(args.policy, args.agent, args.agent_set), scene=args.scene,
    )
    if config.scene == "privileged":
        print("PRIVILEGED RUN: the agent reads simulator truth (object poses, no perception); the numbers are an "
              "upper bound, not what a robot with cameras would do", file=sys.stderr)
    summary = evaluate(config, progress=True)
    out = {
        "policy": summary["policy"],
        "agent": summary["agent"]["preset"] if summary["agent"] else None,
        "scene": summary["scene"],
        "privileged": summary["privileged"],
        "success_rate": summary["success_rate"],
        "episodes": summary["episodes"],
        "refused": summary["refused"],
        "plan_exact_rate": summary["plan_exact_rate"],
        "plan_exact_rate_all": summary["plan_exact_rate_all"],
        "tasks": {t: {s: {k: c[k] for k in ("success_rate", "episodes", "mean_steps", "refused")}
                      for s, c in splits.items()} for t, splits in summary["tasks"].items()},
        "latency_ms": {"p50": summary["latency_ms"]["p50"], "p99": summary["latency_ms"]["p99"]},
        "seed": config.seed,
        "wall_s": round(summary["wall_s"], 2),
        "report": summary["report"],
    }
    if not args.json:
        _print_table(summary)
    emit_summary(out, args.json, title=f"keystone eval: {summary['policy']} ({summary['scene']})")
    return 0


def _print_table(summary: dict[str, Any]) -> None:
    from keystone_vla.policies.report import HEADER, table_rows

    rows = [HEADER[:6]] + [r[:6] for r in table_rows(summary)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=sys.stderr)


def run_compare(a: Path, b: Path, as_json: bool, more: list[Path] | None = None, table: Path | None = None) -> int:
    from keystone_vla.policies.report import compare, comparison_table, load_results

    d = compare(load_results(a), load_results(b))
    if table is not None:
        folders = [a, b, *(more or [])]
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text(comparison_table([load_results(f) for f in folders], [f.name for f in folders]) + "\n")
        print(f"wrote {table}", file=sys.stderr)
    if not as_json:
        print(f"{d['b']} vs {d['a']} (B - A)", file=sys.stderr)
        for key, row in d["cells"].items():
            delta = row["success_rate_delta"]
            shown = "n/a" if delta is None else f"{100 * delta:+.1f} pp"
            if row["a_success_rate"] is None or row["b_success_rate"] is None:
                note = f"  (only in {'B' if row['a_success_rate'] is None else 'A'})"
            else:
                note = "" if row["same_seeds"] else "  (different seeds: not a paired comparison)"
            print(f"  {key:<26} success {shown}{note}", file=sys.stderr)
    summary = {
        "a": d["a"], "b": d["b"],
        "success_rate_delta": d["success_rate"]["delta"],
        "success_rate": d["success_rate"],
        "cells": d["cells"],
        "latency_ms": d["latency_ms"],
    }
    if as_json:
        emit_summary(summary, True, title="keystone eval compare")
    else:  # the per-cell lines above are the human view of "cells"
        emit_summary({k: summary[k] for k in ("a", "b", "success_rate_delta")}, False, title="keystone eval compare")
    return 0
