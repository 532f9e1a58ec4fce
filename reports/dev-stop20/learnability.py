"""Can the plan path learn the relation grammar at all? Fit on build_tower plans only, every instruction
re-described (relation phrasing 1.0), then score fresh grammar draws per form, in one process.

Modes: ``lora`` (the plan adapter as shipped, rank 8, trunk frozen) and ``full`` (the adapter plus every LM
weight trained: the capacity ceiling of this trunk; not a deployable fit, the action path would change).

    python reports/dev-stop20/learnability.py runs/kb-h --mode lora --steps 300
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch

from keystone_vla.datasets.store import EpisodeStore
from keystone_vla.vla.checkpoint import load_pretrained, transfer_weights
from keystone_vla.vla.data import plan_examples_from_store
from keystone_vla.vla.plan_adapter import PlanAdapterCollator, plan_adapter_loss
from keystone_vla.vla.plan_grammar import PlanGrammar
from keystone_vla.vla.plan_phrasing import FORMS, describe_chain
from keystone_vla.vla.text_encoder import MiniLMEncoder
from keystone_vla.vocab import COLOURS


def score(model, tok, enc, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    cols = ("red", "green", "blue", "yellow")
    out = {}
    for form in FORMS:
        ok = tot = 0
        for _ in range(n):
            c = rng.sample(cols, 3)
            chain = [f"{x}_block" for x in c]
            text = describe_chain(chain, rng, form)
            if len(tok.encode(text)) >= model.config.max_instruction_tokens:
                continue
            objs = [f"{x}_block" for x in cols]
            rng.shuffle(objs)
            g = model.generate_plan(tok.plan_prompt(text, objs), PlanGrammar(tok, objs, model.config.max_plan_steps),
                                    model.config.max_plan_tokens, enc.encode([text]))
            want = [("pick", (chain[1],)), ("place_on", (chain[1], chain[0])), ("pick", (chain[2],)),
                    ("place_on", (chain[2], chain[1]))]
            ok += [(s, tuple(a)) for s, a in g.steps] == want
            tot += 1
        out[form] = [ok, tot]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--data", default="data/mix16.zarr")
    ap.add_argument("--mode", choices=("lora", "full"), default="lora")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    warm = load_pretrained(args.base)
    model = transfer_weights(warm.model.state_dict(), warm.config.replace(plan_adapter_rank=8), args.base,
                             fresh=("plan_adapter.",))
    tok, enc = warm.tokenizer, MiniLMEncoder()
    towers = [e for e in plan_examples_from_store(EpisodeStore(args.data, mode="r")) if e.task == "build_tower"]
    coll = PlanAdapterCollator(model.config, tok, enc, towers, tuple(COLOURS), relation_phrasing=1.0)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.plan_adapter.parameters()) + (list(model.lm.parameters()) if args.mode == "full" else [])
    for p in params:
        p.requires_grad_(True)
    model.eval()
    opt = torch.optim.AdamW(params, lr=args.lr if args.mode == "lora" else args.lr / 4, weight_decay=0.01)
    t0 = time.perf_counter()
    losses = []
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = g.setdefault("base_lr", g["lr"]) * min(1.0, (step + 1) / 50) * 0.5 * (
                1 + math.cos(math.pi * step / args.steps))
        batch = coll.plan_batch([coll.rng.choice(coll.plan_examples) for _ in range(32)])
        loss = plan_adapter_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            print(f"step {step} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} {time.perf_counter() - t0:.0f}s",
                  flush=True)
    model.eval()
    res = score(model, tok, enc, args.n, 777)
    print(json.dumps({"mode": args.mode, "steps": args.steps, "final_loss_50": sum(losses[-50:]) / 50,
                      "forms": res, "wall_s": round(time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
