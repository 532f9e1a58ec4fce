"""Plan-head accuracy of a checkpoint on the simulator's own instructions, per split x task, written as JSON.

For each task, N instructions of the seen split (seeds 100000+) and of the unseen split (unseen templates,
colours and shapes; seeds 200000+) come from the task samplers, with the scene's object ids in shuffled order;
build_tower instructions of the seen split are also re-phrased with the task's two unseen templates (seen
colours), the templates-only test, and with `FRESH_TOWER_TEMPLATES` (eight phrasings used for nothing but this
score), and with the 16 blind phrasings of `blind_tower_phrasings.txt` (3 instructions each, seen colours, seeds
300000+; build_tower cells also count per phrasing). Two scores: ``exact`` (the oracle's steps in its order) and
``same_steps`` (the same steps in any order: kit_assembly's oracle orders parts by their position, which the plan
head is not shown). Each cell also counts the plans the agent's plan-confidence gate would refuse, wrong and
right, ``confidence`` gives the spread of target confidence over right and wrong plans, and ``gate_sweep`` counts,
per candidate threshold and set, the right plans refused and the wrong plans let through. No closed loop:
`keystone eval` measures that.

    python scripts/eval_plans.py --checkpoint vla/pretrained/keystone-base --n 20 --out plans.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vla import sim_plan_examples, unseen_template_towers  # noqa: E402

# Tower phrasings written *before* the plan adapter's compositional augmentation was designed, and
# never used to fit or tune anything: a second held-out check beside the simulator's two unseen templates (which
# that augmentation was designed after looking at). {a} bottom, {b} middle, {c} top.
FRESH_TOWER_TEMPLATES = (
    "tower, bottom to top: {a}, {b}, {c}",
    "put {a} down as the base, then {b} on it, then {c} on top",
    "i want {c} at the top, {b} under it and {a} under that",
    "the base is {a}, the middle is {b} and the top is {c}",
    "make {c} the top block, {b} the middle one and {a} the base",
    "from top to bottom the tower is {c}, {b}, {a}",
    "a three block tower: {a} under {b} under {c}",
    "build a tower where {b} sits on {a} and {c} sits on {b}",
)

# Tower phrasings written by a helper that saw neither this repository nor the plan adapter's relation
# grammar (`keystone_vla.vla.plan_phrasing`), committed before any fit with that grammar was scored; the grammar is
# not to be changed to suit them. The check for phrasings nobody tuned for. One template per line, {a} bottom, {b} middle, {c} top.
BLIND_TOWER_FILE = Path(__file__).resolve().parent / "blind_tower_phrasings.txt"


def blind_tower_templates() -> tuple[str, ...]:
    lines = tuple(line.strip() for line in BLIND_TOWER_FILE.read_text().splitlines() if line.strip())
    for line in lines:
        if sorted(line.count(k) for k in ("{a}", "{b}", "{c}")) != [1, 1, 1]:
            raise SystemExit(f"{BLIND_TOWER_FILE}: {line!r} must name each of {{a}}, {{b}}, {{c}} once")
    return lines


def _blank_colours(text: str, colours) -> str:
    return " ".join("_" if w.strip(",.:") in colours else w for w in text.split())


def evaluate(checkpoint: str, n: int, min_confidence: float) -> dict:
    from keystone_vla.errors import ModelError
    from keystone_vla.sim.tasks import TASKS
    from keystone_vla.vla.policy import VLAPolicy
    from keystone_vla.vocab import COLOURS

    policy = VLAPolicy.from_pretrained(checkpoint, warmup=False)
    seen = sim_plan_examples("seen", range(100_000, 100_000 + n), tuple(TASKS))
    sets = {"seen": seen, "unseen": sim_plan_examples("unseen", range(200_000, 200_000 + n), tuple(TASKS)),
            "build_tower_unseen_templates_seen_colours": unseen_template_towers(seen),
            "build_tower_fresh_phrasings_seen_colours": unseen_template_towers(seen, FRESH_TOWER_TEMPLATES)}
    blind = blind_tower_templates()
    towers = sim_plan_examples("seen", range(300_000, 300_000 + 3 * len(blind)), ("build_tower",))
    sets["build_tower_blind_phrasings_seen_colours"] = unseen_template_towers(towers, blind)
    rng = random.Random(0)
    out: dict = {}
    by_set: dict[str, list[tuple[float, bool]]] = {}  # (confidence, right) per plan, per set
    t0 = time.perf_counter()
    for name, examples in sets.items():
        for ex in examples:
            objs = list(ex.objects)
            rng.shuffle(objs)
            cell = out.setdefault(name, {}).setdefault(ex.task, {"n": 0, "exact": 0, "same_steps": 0, "wrong": [],
                                                                  "gate_refuses_right": 0, "gate_refuses_wrong": 0,
                                                                  "rejected": 0})
            cell["n"] += 1
            try:
                calls = [(s.skill, tuple(s.args)) for s in policy.plan(ex.instruction, objects=objs).steps]
            except ModelError as exc:  # e.g. longer than the model's prompt: the agent refuses it, not exact
                cell["rejected"] += 1
                cell["wrong"].append({"instruction": ex.instruction, "rejected": str(exc)})
                if ex.task == "build_tower":
                    cell.setdefault("by_phrasing", {}).setdefault(_blank_colours(ex.instruction, COLOURS), [0, 0])[1] += 1
                continue
            exact = calls == list(ex.calls)
            cell["exact"] += exact
            same = sorted(calls) == sorted(ex.calls)
            cell["same_steps"] += same
            # the agent's plan-confidence gate (VLAAgent.min_plan_confidence) on this plan; "right" = same steps
            # (kit_assembly's order is the agent's to set)
            by_set.setdefault(name, []).append((policy.last_plan_confidence, same))
            if policy.last_plan_confidence < min_confidence:
                cell["gate_refuses_right" if same else "gate_refuses_wrong"] += 1
            if ex.task == "build_tower":  # per phrasing: the instruction with its colour words blanked
                phr = cell.setdefault("by_phrasing", {}).setdefault(_blank_colours(ex.instruction, COLOURS), [0, 0])
                phr[0] += exact
                phr[1] += 1
            if not same and len(cell["wrong"]) < 3:
                cell["wrong"].append({"instruction": ex.instruction,
                                      "plan": [f"{s}({', '.join(a)})" for s, a in calls]})
    for cells in out.values():
        for cell in cells.values():
            cell["exact_rate"] = cell["exact"] / cell["n"]
            cell["same_steps_rate"] = cell["same_steps"] / cell["n"]
    rows = [r for set_rows in by_set.values() for r in set_rows]
    confidences = {"right": [c for c, ok in rows if ok], "wrong": [c for c, ok in rows if not ok]}
    quantiles = {k: {"n": len(v), **({q: float(np.quantile(v, x)) for q, x in
                                      (("min", 0), ("p05", 0.05), ("median", 0.5), ("max", 1))} if v else {})}
                 for k, v in confidences.items()}
    return {"checkpoint": checkpoint, "per_task": n, "min_plan_confidence": min_confidence, "confidence": quantiles,
            "gate_sweep": gate_sweep(by_set), "wall_s": round(time.perf_counter() - t0, 1), "results": out}


GATE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def gate_sweep(by_set: dict[str, list[tuple[float, bool]]]) -> dict:
    """For each candidate gate threshold and each set: right plans it would refuse, and wrong plans it would let
    through to motion (the number that matters for safety). Plans the policy rejected as input are not counted."""
    return {f"{t:g}": {name: {"right_refused": sum(ok and c < t for c, ok in rows),
                              "wrong_passed": sum(not ok and c >= t for c, ok in rows)}
                       for name, rows in by_set.items()} for t in GATE_THRESHOLDS}


def main() -> None:
    from keystone_vla.policies.agent_config import PRESETS

    gate = PRESETS["shipped"].min_plan_confidence

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="vla/pretrained/keystone-base")
    ap.add_argument("--n", type=int, default=20, help="instructions per task and split")
    ap.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    ap.add_argument("--min-plan-confidence", type=float, default=gate,
                    help="the gate whose refusals are counted (default: the agent's, %(default)s)")
    args = ap.parse_args()
    res = evaluate(args.checkpoint, args.n, args.min_plan_confidence)
    for name, cells in res["results"].items():
        for task, c in cells.items():
            print(f"{name:42s} {task:13s} exact {c['exact']:3d}/{c['n']}  same steps {c['same_steps']:3d}/{c['n']}  "
                  f"gate refuses {c['gate_refuses_wrong']} wrong, {c['gate_refuses_right']} right"
                  + (f", {c['rejected']} rejected (input)" if c["rejected"] else ""))
            for key, (ok, n) in c.get("by_phrasing", {}).items():
                print(f"{'':42s}   {ok:3d}/{n:<3d} {key}")
    for k, q in res["confidence"].items():
        spread = ", ".join(f"{a} {b:.3f}" for a, b in q.items() if a != "n")
        print(f"target confidence of {k} plans (n {q['n']}): {spread}")
    for t, sets in res["gate_sweep"].items():
        print(f"gate {t:>4s}: right refused " + ", ".join(f"{n} {c['right_refused']}" for n, c in sets.items())
              + " | wrong passed " + ", ".join(f"{n} {c['wrong_passed']}" for n, c in sets.items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
