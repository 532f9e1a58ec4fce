"""Closed-loop success of operator phrasings: every groundable phrasing of a set, executed in simulation.

`scripts/eval_language.py` checks what the reader plans for each phrasing; this runs them. Each groundable
phrasing of the set (e.g. `tests/data/language/blind_operator_set.json`, written by someone who never saw the
code) goes through `keystone eval --instructions-file` with the shipped agent and the default scene source
(perception): the harness builds a scene of the phrasing's task that holds what it names, in the split its
colours belong to (both splits when it names no colour), `--episodes` seeds each. The JSON under `benchmarks/`
counts successes (with a 95 % Wilson interval), refusals, questions asked back and wrong plans executed, per task
and split, and lists every episode that did not succeed with its reason.

    python scripts/eval_language_closed_loop.py --set tests/data/language/blind_operator_set.json \\
        --episodes 2 --out benchmarks/language_closed_loop.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_instructions(set_path: Path, out: Path, every: int = 1) -> int:
    """The set's groundable phrasings as `--instructions-file` JSONL (every `every`-th one); returns the count."""
    if not set_path.is_file():
        raise SystemExit(f"--set {set_path}: no such file; give a phrasing set, e.g. "
                         "tests/data/language/blind_operator_set.json")
    try:
        data = json.loads(set_path.read_text())
    except ValueError as exc:
        raise SystemExit(f"--set {set_path}: not valid JSON ({exc})") from None
    rows = data.get("groundable") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise SystemExit(f"{set_path}: no 'groundable' list of phrasings; is this a phrasing set?")
    rows = rows[::every]
    out.write_text("".join(json.dumps({"task": r["task"], "instruction": r["text"]}) + "\n" for r in rows))
    return len(rows)


def summarise(results: dict, set_path: Path, phrasings: int, every: int) -> dict:
    """The benchmark record from `keystone eval`'s results.json (its totals and cells as the harness counted them),
    with every episode that did not succeed."""
    per = {task: {split: {k: cell[k] for k in ("episodes", "successes", "refused")} for split, cell in cells.items()}
           for task, cells in results["tasks"].items()}
    return {
        "set": str(set_path.relative_to(ROOT)) if set_path.is_relative_to(ROOT) else str(set_path),
        "phrasings": phrasings if every == 1 else f"{phrasings} (every {every}th groundable phrasing)",
        "agent": results["agent"] if isinstance(results["agent"], str) else results["agent"].get("preset"),
        "scene": results["scene"], "privileged": results["privileged"],
        "episodes": results["episodes"], "successes": sum(c["successes"] for t in per.values() for c in t.values()),
        "success_rate": results["success_rate"], "success_ci95": results["success_ci95"],
        **{k: results[k] for k in ("refused", "asked_back", "wrong_plans_executed", "goal_lost", "plan_exact_rate")},
        "wall_s": round(results["wall_s"], 1),
        "per_task": per,
        "not_succeeded": [{"instruction": e["instruction"], "task": e["task"], "split": e["split"], "seed": e["seed"],
                           "refused": e["refused"], "goal_lost": e["goal_lost"], "halted": e["halted"],
                           "reason": e["reason"], "steps": e["steps"]}
                          for e in results["episodes_detail"] if not e["success"]],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", type=Path, required=True, help="a phrasing set (JSON with a 'groundable' list)")
    ap.add_argument("--episodes", type=int, default=2, help="seeds per phrasing and split (default 2)")
    ap.add_argument("--every", type=int, default=1, help="run every N-th phrasing only (default 1: all)")
    ap.add_argument("--policy", default="keystone-base", help="policy to evaluate (default keystone-base)")
    ap.add_argument("--workers", type=int, default=None, help="evaluation worker processes (default: keystone eval's)")
    ap.add_argument("--report", type=Path, default=None,
                    help="folder for keystone eval's own report and results.json (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON record here (default: print it)")
    args = ap.parse_args(argv)
    if args.episodes < 1 or args.every < 1:
        ap.error("--episodes and --every must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        report = args.report or Path(tmp)
        report.mkdir(parents=True, exist_ok=True)
        jsonl = report / "phrasings.jsonl"
        phrasings = write_instructions(args.set, jsonl, args.every)
        cmd = [sys.executable, "-m", "keystone_vla.cli", "eval", "--policy", args.policy, "--instructions-file",
               str(jsonl), "--episodes", str(args.episodes), "--seed", "0", "--no-videos", "--out", str(report)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        subprocess.run(cmd, check=True)
        record = summarise(json.loads((report / "results.json").read_text()), args.set.resolve(), phrasings,
                           args.every)
    text = json.dumps(record, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(f"{record['successes']}/{record['episodes']} succeeded ({record['success_rate']:.1%}), "
          f"{record['refused']} refused, {record['asked_back']} asked back, "
          f"{record['wrong_plans_executed']} wrong plans executed")
    if not args.out:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
