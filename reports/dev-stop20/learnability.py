"""Can the plan path learn the relation grammar at all? Fit on build_tower plans only, every instruction
re-described (relation phrasing 1.0), then score fresh grammar draws per form, in one process.

Modes: ``lora`` (the plan adapter as shipped, rank 8, trunk frozen) and ``full`` (the adapter plus every LM
weight trained: the capacity ceiling of this trunk; not a deployable fit, the action path would change).
``--words``: the adapter embeds the order words the tokenizer calls [UNK] (`plan_adapter_words`), as a fit with
relation phrasing does. Scores are split by whether the description holds such a word.
``--word-features``: each instruction word's prompt embedding also gets a trained projection of MiniLM's
contextual vector for that word (averaged over its word pieces; MiniLM reads the whole sentence both ways, the
causal LM only leftwards). Prompts are then shown without word dropout, so the two tokenizations line up.

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
from keystone_vla.vla.plan_adapter import (
    PlanAdapterCollator,
    lm_vocab_size,
    plan_adapter_loss,
    plan_prompt_ids,
)
from keystone_vla.vla.plan_grammar import PlanGrammar
from keystone_vla.vla.plan_phrasing import FORMS, ORDER_WORDS, describe_chain
from keystone_vla.vla.text_encoder import MiniLMEncoder
from keystone_vla.vocab import COLOURS


class WordFeatures(torch.nn.Module):
    """MiniLM's contextual vector per word of the word tokenizer, projected and added to the plan prompt."""

    def __init__(self, enc, tok, d: int) -> None:
        super().__init__()
        self.enc, self.tok = enc, tok
        self.proj = torch.nn.Linear(384, d)
        torch.nn.init.normal_(self.proj.weight, std=0.02)
        torch.nn.init.zeros_(self.proj.bias)
        self.current: torch.Tensor | None = None  # [B, n_words, 384] for the batch being embedded

    def vectors(self, texts: list[str]) -> torch.Tensor:
        spans = [self.tok.tokenizer.encode(t, add_special_tokens=False).offsets for t in texts]
        return self.enc.encode_words(texts, spans).clone()  # a normal tensor: the projection trains on it

    def add(self, embeds: torch.Tensor) -> torch.Tensor:
        if self.current is None:
            return embeds
        n = self.current.shape[1]
        extra = self.proj(self.current).to(embeds.dtype)
        return torch.cat([embeds[:, :2], embeds[:, 2:2 + n] + extra, embeds[:, 2 + n:]], dim=1)


def install(model, wf: WordFeatures) -> None:
    """model.plan_adapter.prompt_embeds, followed by the word features of `wf.current`."""
    original = model.plan_adapter.prompt_embeds

    def prompt_embeds(lm, ids, text_features):
        return wf.add(original(lm, ids, text_features))
    model.plan_adapter.prompt_embeds = prompt_embeds


def tower_right(model, tok, enc, wf: WordFeatures | None, text: str, chain: list[str], objs: list[str]) -> bool:
    """Whether the model plans `text` as the tower `chain` (bottom first) among `objs`."""
    prompt = plan_prompt_ids(tok, text, objs, model.config.plan_adapter_words, lm_vocab_size(model.config))
    if wf is not None:
        wf.current = wf.vectors([text])
    g = model.generate_plan(prompt, PlanGrammar(tok, objs, model.config.max_plan_steps),
                            model.config.max_plan_tokens, enc.encode([text]))
    want = [("pick", (chain[1],)), ("place_on", (chain[1], chain[0])), ("pick", (chain[2],)),
            ("place_on", (chain[2], chain[1]))]
    return [(s, tuple(a)) for s, a in g.steps] == want


def score(model, tok, enc, n: int, seed: int, wf: WordFeatures | None = None) -> dict:
    rng = random.Random(seed)
    cols = ("red", "green", "blue", "yellow")
    out = {}
    oov = {w for w in ORDER_WORDS if tok.token_id(w) == tok.unk_id}
    split = {"oov_order_word": [0, 0], "known_words_only": [0, 0]}
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
            right = tower_right(model, tok, enc, wf, text, chain, objs)
            ok += right
            tot += 1
            cell = split["oov_order_word" if oov & set(text.replace(",", " ").split()) else "known_words_only"]
            cell[0] += right
            cell[1] += 1
        out[form] = [ok, tot]
    out.update(split)
    # held-out phrasings (seen colours): the blind file's 16, 3 each, and the simulator's two unseen templates
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from eval_plans import FRESH_TOWER_TEMPLATES, blind_tower_templates

    from keystone_vla.sim.tasks import get_task

    held = {"blind": blind_tower_templates() * 3, "fresh": FRESH_TOWER_TEMPLATES * 3,
            "sim_unseen": tuple(t.text for t in get_task("build_tower").templates if t.split == "unseen") * 10}
    for name, templates in held.items():
        ok = 0
        for template in templates:
            c = rng.sample(cols, 3)
            chain = [f"{x}_block" for x in c]
            text = template.format(a=c[0], b=c[1], c=c[2])
            objs = [f"{x}_block" for x in cols]
            rng.shuffle(objs)
            if len(tok.encode(text)) >= model.config.max_instruction_tokens:
                continue  # the policy refuses it as too long: not right
            ok += tower_right(model, tok, enc, wf, text, chain, objs)
        out[name] = [ok, len(templates)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--data", default="data/mix16.zarr")
    ap.add_argument("--mode", choices=("lora", "full"), default="lora")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--words", action="store_true", help="the adapter's own embeddings for unknown order words")
    ap.add_argument("--word-features", action="store_true", help="MiniLM's per-word vectors in the prompt")
    ap.add_argument("--clean", action="store_true", help="no word dropout (as --word-features has), for comparison")
    args = ap.parse_args()
    torch.manual_seed(0)
    warm = load_pretrained(args.base)
    words = tuple(sorted(w for w in ORDER_WORDS if warm.tokenizer.token_id(w) == warm.tokenizer.unk_id)
                  ) if args.words else ()
    model = transfer_weights(warm.model.state_dict(), warm.config.replace(plan_adapter_rank=8,
                                                                          plan_adapter_words=words), args.base,
                             fresh=("plan_adapter.",))
    tok, enc = warm.tokenizer, MiniLMEncoder()
    towers = [e for e in plan_examples_from_store(EpisodeStore(args.data, mode="r")) if e.task == "build_tower"]
    wf = WordFeatures(enc, tok, model.config.lm.hidden_size) if args.word_features else None
    seen_texts: list[str] = []

    class Recording:  # the collator's MiniLM calls, recording the instruction texts of each batch
        def encode(self, texts):
            seen_texts[:] = list(texts)
            return enc.encode(texts)

    coll = PlanAdapterCollator(model.config, tok, Recording(), towers, tuple(COLOURS), relation_phrasing=1.0,
                               noise=wf is None and not args.clean)
    if wf is not None:
        install(model, wf)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.plan_adapter.parameters()) + (list(model.lm.parameters()) if args.mode == "full" else [])
    params += list(wf.proj.parameters()) if wf is not None else []
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
        if wf is not None:
            wf.current = wf.vectors(seen_texts)
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
    res = score(model, tok, enc, args.n, 777, wf)
    print(json.dumps({"mode": args.mode, "words": list(words), "word_features": wf is not None,
                      "word_dropout": wf is None and not args.clean, "steps": args.steps, "final_loss_50": sum(losses[-50:]) / 50,
                      "forms": res, "wall_s": round(time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
