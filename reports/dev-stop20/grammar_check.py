"""Plans of a checkpoint for fresh descriptions from the plan adapter's relation grammar (the distribution it was
fitted on, new draws), per form and reading direction: does the fit learn its own training distribution?

    python reports/dev-stop20/grammar_check.py runs/pa20-k70 --n 40 --out reports/dev-stop20/grammar-k70.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from keystone_vla.errors import ModelError
from keystone_vla.vla.plan_phrasing import FORMS, describe_chain
from keystone_vla.vla.policy import VLAPolicy

COLOURS = ("red", "green", "blue", "yellow")  # seen colours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--n", type=int, default=40, help="descriptions per form")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    policy = VLAPolicy.from_pretrained(args.checkpoint, warmup=False)
    rng = random.Random(args.seed)
    res: dict = {}
    for form in FORMS:
        cell = res.setdefault(form, {"n": 0, "exact": 0, "rejected": 0, "top_first": [0, 0], "wrong": []})
        for _ in range(args.n):
            colours = rng.sample(COLOURS, 3)
            chain = [f"{c}_block" for c in colours]
            text = describe_chain(chain, rng, form)
            want = [f"pick({chain[1]})", f"place_on({chain[1]}, {chain[0]})", f"pick({chain[2]})",
                    f"place_on({chain[2]}, {chain[1]})"]
            objects = [f"{c}_block" for c in COLOURS]
            rng.shuffle(objects)
            cell["n"] += 1
            try:
                calls = policy.plan(text, objects=objects).calls()
            except ModelError:
                cell["rejected"] += 1
                continue
            ok = calls == want
            cell["exact"] += ok
            if text.find(colours[2]) < text.find(colours[0]):
                cell["top_first"][0] += ok
                cell["top_first"][1] += 1
            if not ok and len(cell["wrong"]) < 4:
                cell["wrong"].append({"instruction": text, "plan": calls})
        print(f"{form:10s} exact {cell['exact']:3d}/{cell['n']}  top-first {cell['top_first'][0]}/"
              f"{cell['top_first'][1]}  rejected (too long) {cell['rejected']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "seed": args.seed, "forms": res},
                                             indent=2) + "\n")


if __name__ == "__main__":
    main()
