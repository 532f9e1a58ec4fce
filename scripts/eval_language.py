"""Operator phrasings -> plans, measured without the simulator: plans exact, asked back, wrong plans executed,
refusals right, per task, plus plan latency with the language pieces on beside the model-only planning path.

A set file (JSON: ``groundable`` rows with ``scene`` (object ids), ``text``, ``plan`` and ``order_free``;
``refuse`` rows with ``text``, ``why`` and ``reason_words``) is run through exactly what `VLAAgent.prepare` runs,
`keystone_vla.perception.grounding.plan_checked`: the grounded reading (`perception.reader`), the model's plan of
it, and their cross-check. Each scene is laid out from its ids (positions spread over the reachable table; a peg
takes the row's ``peg_colour``). Outcomes of a groundable row: ``exact`` (executed, the intended plan), ``wrong``
(executed, another plan: worse than a refusal), ``asked_back`` (AskBack: nothing moved) or ``refused``. A
must-refuse row is ``refused_right`` when it is refused (or asked back) with a reason that names what was wrong
(one of its ``reason_words``), ``refused_vague`` when the reason names none of them, and ``executed`` otherwise.

Ablations (``--ablations``) rerun the reader alone without typo repair, without MiniLM, and with neither, to
say what each piece buys. Latency: per instruction, the whole checked path (reading + model with the reading's
plan verified in one pass) and the model decoding the operator's text alone, one thread, the same run; and the
6-step kit plan `scripts/bench_vla.py` times. ``--templates N``: the simulator tasks' own seen and unseen
instructions through the checked path (what `scripts/eval_plans.py` scores for the model alone).

    python scripts/eval_language.py --set tests/data/language/blind_operator_set.json \
        --set tests/data/language/dev_operator_set.json --ablations --templates 20 --out benchmarks/language.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from keystone_vla.errors import GroundingError, ModelError
from keystone_vla.perception.grounding import AskBack, plan_checked
from keystone_vla.perception.objects import DetectedObject
from keystone_vla.perception.reader import Options, read_instruction
from keystone_vla.robots import PANDA
from keystone_vla.vocab import COLOURS, object_kind

SHAPES = ("square", "disc", "bar", "ell", "tee")


def scene_objects(ids: list[str], peg_colour: str | None = None) -> list[DetectedObject]:
    """DetectedObjects for scene ids, laid out left to right over the reachable table (kit slots on the kit)."""
    movable = [i for i in ids if object_kind(i) not in ("kit", "slot") and i != "kit"]
    slots = [i for i in ids if object_kind(i) == "slot"]
    out = []
    ys = np.linspace(0.18, -0.18, max(1, len(movable)))
    for k, oid in enumerate(movable):
        kind = object_kind(oid) or oid.rsplit("_", 1)[-1]
        first = oid.split("_", 1)[0]
        colour = first if first in COLOURS else (peg_colour if kind == "peg" else None)
        x = 0.56 if kind in SHAPES else (0.45 + 0.08 * (k % 2))
        out.append(DetectedObject(oid, colour, kind, [x, float(ys[k]), 0.02], 0.0, [0.04, 0.04, 0.04]))
    if "kit" in ids:
        out.append(DetectedObject("kit", None, "kit", [0.40, 0.0, 0.01], 0.0, [0.12, 0.24, 0.02]))
    for k, oid in enumerate(slots):
        detail = oid.rsplit("_", 1)[0]
        out.append(DetectedObject(oid, None, "slot", [0.40, 0.06 - 0.06 * k, 0.01], 0.0, [0.05, 0.05, 0.01], 1.0,
                                  detail))
    return out


def load_set(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    for key in ("groundable", "refuse"):
        if not isinstance(data.get(key), list):
            raise SystemExit(f"{path}: expected a list under {key!r}")
    return data


class _Reader:
    """The reader alone as a stand-in 'model' that plans exactly the reading (for reader-only measurements)."""

    def plan(self, instruction, observation=None, objects=None, min_confidence=0.0, expect=None):
        return expect


def run_rows(data: dict[str, Any], vla: Any, opts: Options, latency: bool = False) -> dict[str, Any]:
    rows, lat_checked, lat_model = [], [], []
    for row in data["groundable"]:
        objs = scene_objects(row["scene"], row.get("peg_colour"))
        rec = {"id": row["id"], "task": row["task"], "text": row["text"], "intended": row["plan"]}
        t0 = time.perf_counter()
        try:
            plan = plan_checked(vla, row["text"], objs, PANDA, None, 0.9 if vla is not None else 0.0, opts)
            got = plan.calls()
            same = sorted(got) == sorted(row["plan"]) if row.get("order_free") else got == row["plan"]
            rec.update(outcome="exact" if same else "wrong", plan=got)
        except AskBack as exc:
            rec.update(outcome="asked_back", reason=str(exc))
        except (GroundingError, ModelError) as exc:
            rec.update(outcome="refused", reason=str(exc))
        dt = (time.perf_counter() - t0) * 1000
        if latency and not isinstance(vla, _Reader):
            lat_checked.append(dt)
            t0 = time.perf_counter()
            try:
                vla.plan(row["text"], objects=[o.id for o in objs])
            except (GroundingError, ModelError):
                pass
            lat_model.append((time.perf_counter() - t0) * 1000)
        rows.append(rec)
    refusals = []
    for row in data["refuse"]:
        objs = scene_objects(row["scene"], row.get("peg_colour"))
        rec = {"id": row["id"], "task": row["task"], "text": row["text"][:120], "why": row.get("why", "")}
        try:
            plan = plan_checked(vla, row["text"], objs, PANDA, None, 0.9 if vla is not None else 0.0, opts)
            rec.update(outcome="executed", plan=plan.calls())
        except (GroundingError, ModelError) as exc:
            reason = str(exc).lower()
            words = [w.lower() for w in row.get("reason_words", [])]
            named = any(w in reason for w in words) if words else True  # nothing to name: refused is right
            rec.update(outcome="refused_right" if named else "refused_vague", reason=str(exc),
                       asked_back=isinstance(exc, AskBack))
        refusals.append(rec)
    return summarise(rows, refusals, lat_checked, lat_model)


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarise(rows: list[dict], refusals: list[dict], lat_checked: list[float], lat_model: list[float]) -> dict:
    def counts(rs: list[dict]) -> dict[str, Any]:
        n = len(rs)
        c = {k: sum(r["outcome"] == k for r in rs) for k in ("exact", "wrong", "asked_back", "refused")}
        return {"n": n, **c, "exact_rate": round(c["exact"] / n, 3) if n else None,
                "asked_back_rate": round(c["asked_back"] / n, 3) if n else None}

    def rcounts(rs: list[dict]) -> dict[str, Any]:
        return {"n": len(rs), **{k: sum(r["outcome"] == k for r in rs)
                                 for k in ("refused_right", "refused_vague", "executed")}}

    tasks = sorted({r["task"] for r in rows} | {r["task"] for r in refusals})
    out = {"groundable": counts(rows), "must_refuse": rcounts(refusals),
           "per_task": {t: {"groundable": counts([r for r in rows if r["task"] == t]),
                            "must_refuse": rcounts([r for r in refusals if r["task"] == t])} for t in tasks},
           "misses": [r for r in rows if r["outcome"] != "exact"],
           "refusal_misses": [r for r in refusals if r["outcome"] != "refused_right"]}
    if lat_checked:
        out["latency_ms"] = {"checked_path": {"p50": _pct(lat_checked, 50), "p99": _pct(lat_checked, 99),
                                              "n": len(lat_checked)},
                             "model_only": {"p50": _pct(lat_model, 50), "p99": _pct(lat_model, 99),
                                            "n": len(lat_model)}}
    return out


def template_exactness(vla: Any, n: int) -> dict[str, Any]:
    """The simulator tasks' own instructions (seen split: seeds 100000+, unseen: 200000+, as scripts/eval_plans.py)
    through the checked path over the scene's objects: plan exact (kit_assembly: the same steps in any order),
    asked back, wrong plans executed, per split x task."""
    from keystone_vla.perception.objects import as_scene
    from keystone_vla.sim.rollout import make_world
    from keystone_vla.sim.tasks import TASKS, get_task
    from keystone_vla.types import EpisodeSpec

    world = make_world(EpisodeSpec("pick_place", 0, "seen"), (), 64)
    out: dict[str, Any] = {}
    try:
        for split, base in (("seen", 100_000), ("unseen", 200_000)):
            for name in TASKS:
                task = get_task(name)
                cell = {"n": 0, "exact": 0, "asked_back": 0, "refused": 0, "wrong": 0}
                for seed in range(base, base + n):
                    inst = task.reset(world, seed, split)
                    cell["n"] += 1
                    try:
                        plan = plan_checked(vla, inst.instruction, as_scene(list(world.objects.values())), PANDA,
                                            None, 0.9)
                    except AskBack:
                        cell["asked_back"] += 1
                        continue
                    except (GroundingError, ModelError):
                        cell["refused"] += 1
                        continue
                    got, want = plan.calls(), inst.plan.calls()
                    ok = sorted(got) == sorted(want) if name == "kit_assembly" else got == want
                    cell["exact" if ok else "wrong"] += 1
                cell["exact_rate"] = round(cell["exact"] / cell["n"], 3)
                out[f"{split}/{name}"] = cell
    finally:
        world.close()
    return out


def kit_plan_latency(vla: Any, n: int = 30) -> dict[str, Any]:
    """The 6-step kit plan of scripts/bench_vla.py ('assemble the kit' over 7 objects): the checked path beside
    the model decoding alone, one thread."""
    objs = ["bar_slot", "blue_square", "disc_slot", "kit", "red_disc", "square_slot", "yellow_bar"]
    scene = scene_objects(objs)
    times: dict[str, list[float]] = {"checked_path": [], "model_only": []}
    for _ in range(n):
        t0 = time.perf_counter()
        plan_checked(vla, "assemble the kit", scene, PANDA, None, 0.9)
        times["checked_path"].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        vla.plan("assemble the kit", objects=objs)
        times["model_only"].append((time.perf_counter() - t0) * 1000)
    return {k: {"p50": _pct(v, 50), "p99": _pct(v, 99), "n": len(v)} for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", type=Path, action="append", required=True, help="a phrasing set (JSON), repeatable")
    ap.add_argument("--checkpoint", default="vla/pretrained/keystone-base",
                    help="VLA checkpoint whose plan head plans (default: the shipped keystone-base); 'none': the "
                         "reader alone")
    ap.add_argument("--ablations", action="store_true", help="also run the reader alone without each aid")
    ap.add_argument("--templates", type=int, default=0, metavar="N",
                    help="also run N simulator instructions per task and split through the checked path")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    vla: Any = _Reader()
    if args.checkpoint != "none":
        from keystone_vla.vla.policy import VLAPolicy

        vla = VLAPolicy.from_pretrained(args.checkpoint)
    result: dict[str, Any] = {"checkpoint": args.checkpoint, "sets": {}}
    for path in args.set:
        data = load_set(path)
        read_instruction("put the red block in the green bowl", scene_objects(["red_block", "green_bowl"]))  # warm
        entry = {"model": run_rows(data, vla, Options(), latency=True)}
        if args.ablations:
            for name, opts in (("reader", Options()), ("reader_no_typos", Options(typos=False)),
                               ("reader_no_minilm", Options(minilm=False)),
                               ("reader_rules_only", Options(typos=False, minilm=False))):
                res = run_rows(data, _Reader(), opts)
                entry[name] = {k: res[k] for k in ("groundable", "must_refuse")}
        result["sets"][str(path)] = entry
        g, r = entry["model"]["groundable"], entry["model"]["must_refuse"]
        print(f"{path.name}: exact {g['exact']}/{g['n']}, wrong executed {g['wrong']}, asked back {g['asked_back']}, "
              f"refused {g['refused']}; must-refuse right {r['refused_right']}/{r['n']} (vague {r['refused_vague']}, "
              f"executed {r['executed']}); latency {entry['model'].get('latency_ms')}", file=sys.stderr)
        for name in ("reader", "reader_no_typos", "reader_no_minilm", "reader_rules_only"):
            if name in entry:
                g, r = entry[name]["groundable"], entry[name]["must_refuse"]
                print(f"  {name}: exact {g['exact']}/{g['n']} wrong {g['wrong']} asked {g['asked_back']}; "
                      f"refused right {r['refused_right']}/{r['n']} executed {r['executed']}", file=sys.stderr)
    if not isinstance(vla, _Reader):
        result["kit_plan_latency_ms"] = kit_plan_latency(vla)
        print(f"6-step kit plan: {result['kit_plan_latency_ms']}", file=sys.stderr)
    if args.templates:
        result["templates"] = template_exactness(vla, args.templates)
        for key, cell in result["templates"].items():
            print(f"  template {key}: exact {cell['exact']}/{cell['n']} asked {cell['asked_back']} "
                  f"refused {cell['refused']} wrong {cell['wrong']}", file=sys.stderr)
    result["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
