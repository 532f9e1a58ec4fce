"""Benchmark the VLA side by side in one run and write `benchmarks/vla.json`.

Measured (the `base` preset, 1 camera at 128 px, random weights saved and reloaded as a real checkpoint):
- batch-1 latency p50/p99 of `VLAPolicy.predict_chunk` with the chunk head (fp32 and bf16) and with
  discrete-token decoding (H x 7 tokens, KV cache), and the resulting actions/s ratio (goal: chunk p50 <= 25 ms,
  >= 8x the actions/s of token decoding);
- plan latency (grammar-constrained decoding of a 4-step build_tower plan), and of the shipped keystone-base on a
  6-step kit plan with its plan adapter merged into the weights (what VLAPolicy does), hooked per layer (how it is
  fitted) and absent (the trunk alone) (`--only-shipped-plan` runs just that section);
- training throughput (samples/s, batch 32, forward + backward + AdamW) in fp32 and under bf16 autocast;
- the chunk-query ablation (H query tokens vs. pooled last state): latency and validation L1 after the same
  short training on the synthetic dataset;
- peak resident memory of the process.

Goals are reported, never asserted. Other processes share this machine's 2 cores: the load average before and
after is recorded so a noisy run can be recognised. Usage: ``python scripts/bench_vla.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from keystone_vla.types import Observation
from keystone_vla.vla.checkpoint import load_pretrained, save_pretrained
from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.data import Collator, plan_examples_from_samples
from keystone_vla.vla.modeling import VLAModel, count_parameters
from keystone_vla.vla.normalization import Normalizer
from keystone_vla.vla.policy import VLAPolicy
from keystone_vla.vla.synthetic import SyntheticDataset
from keystone_vla.vla.tokenizer import WordTokenizer
from keystone_vla.vla.train import TrainConfig, train

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "vla.json"
CORPUS = ["build a tower: red at the bottom, then green, then blue", "pick up the red block",
          "place the red block on the blue block", "put the red block in the green bowl"]


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(xs)}


def timed(fn, n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


SO = np.array([0.5, 0.0, 0.02, 0.3, 0.04, 0.04, 0.04] * 2 + [0.4, 0, 0.3, 1, 0, 0, 0], np.float32)  # the step's objects (object token)


def make_policy(tmp: Path, tok: WordTokenizer, bf16: bool = False, **overrides) -> VLAPolicy:
    torch.manual_seed(0)
    cfg = get_preset("base", vocab_size=tok.vocab_size, known_objects=("red_block", "green_block", "blue_block"),
                     **overrides)
    model = VLAModel(cfg)
    folder = tmp / f"{cfg.action_head}_{cfg.chunk_query}"
    save_pretrained(folder, model, tok, Normalizer.identity(8, 7))
    return VLAPolicy(load_pretrained(folder, torch.bfloat16 if bf16 else torch.float32))


def train_rate(tok: WordTokenizer, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    cfg = get_preset("base", vocab_size=tok.vocab_size)
    ds = SyntheticDataset(n=64, image_size=128, chunk_size=cfg.chunk_size)
    collate = Collator(cfg, tok, plan_examples_from_samples(ds.samples), plan_batch_size=16)
    model = VLAModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = collate(ds.samples[:32])

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    times = timed(step, steps, warmup=1)
    return 32 / float(np.median(times))


def ablation(steps: int) -> dict[str, dict[str, float]]:
    """queries vs pooled: same data, steps, seed; validation L1 (normalised units) and batch-1 latency."""
    out = {}
    ds = SyntheticDataset(n=256, image_size=32, chunk_size=8, seed=0)
    val = SyntheticDataset(n=64, image_size=32, chunk_size=8, seed=1)
    ex = plan_examples_from_samples(ds.samples)
    for query in ("queries", "pooled"):
        runs = []
        for seed in (0, 1):
            with tempfile.TemporaryDirectory() as d:
                cfg = get_preset("tiny", chunk_size=8, chunk_query=query)
                s = train(cfg, TrainConfig(steps=steps, batch_size=16, plan_batch_size=4, val_every=steps,
                                           val_batches=4, save_every=0, bf16="off", lr=2e-3, warmup_steps=20,
                                           augment_shift=0, seed=seed),
                          ds, ex, Normalizer.identity(8, 7).to_dict(), d, progress=False, val_dataset=val)
                runs.append(s["val"]["val_action"])
        out[query] = {"val_l1_per_seed": runs, "val_l1_mean": float(np.mean(runs))}
    return out


def shipped_plan_latency(n: int) -> dict | None:
    """Plan latency of the shipped keystone-base (a 6-step kit plan over 7 objects), side by side: the plan adapter
    with merged weights (what VLAPolicy does), with per-layer hooks (how it is fitted), and with no adapter; with
    word features, also MiniLM's sentence + word vectors for one instruction and for a fit batch of 32.
    None when the package ships no checkpoint."""
    from keystone_vla.vla.policy import VLAPolicy

    folder = Path(__file__).resolve().parents[1] / "vla" / "pretrained" / "keystone-base"
    if not (folder / "config.json").exists():
        return None
    policy = VLAPolicy.from_pretrained(folder)
    objs = ["bar_slot", "blue_square", "disc_slot", "kit", "red_disc", "square_slot", "yellow_bar"]  # kit seed 0
    instr = "assemble the kit"
    out: dict = {"instruction": instr, "objects": objs}
    adapter = getattr(policy.model, "plan_adapter", None)
    if adapter is None:
        return {**out, "no_adapter": percentiles(timed(lambda: policy.plan(instr, objects=objs), n))}
    out["plan_steps"] = len(policy.plan(instr, objects=objs).steps)
    out["adapter_merged"] = percentiles(timed(lambda: policy.plan(instr, objects=objs), n))
    adapter.merge = False
    out["adapter_hooks"] = percentiles(timed(lambda: policy.plan(instr, objects=objs), n))
    adapter.merge = True
    from keystone_vla.vla.plan_grammar import PlanGrammar

    def trunk_only() -> None:  # the same decoding with the trunk alone (no adapter, no MiniLM token)
        grammar = PlanGrammar(policy.tokenizer, objs, policy.config.max_plan_steps)
        with torch.inference_mode():
            policy.model._decode_plan(policy.tokenizer.plan_prompt(instr, objs), grammar,
                                      policy.config.max_plan_tokens, None)
    out["no_adapter"] = percentiles(timed(trunk_only, n))
    out["merged_vs_hooks_speedup"] = out["adapter_hooks"]["p50_ms"] / out["adapter_merged"]["p50_ms"]
    if policy.config.plan_word_features:  # what the adapter reads from MiniLM: once per plan, and per fit batch
        from keystone_vla.vla.plan_adapter import plan_text_features

        enc = policy._plan_encoder()
        batch = [instr, "build a tower with red on top of green on top of blue",
                 "assemble a tower: first blue, next green, last red", "put the yellow block in the red bowl"] * 8
        out["word_features_one"] = percentiles(timed(
            lambda: plan_text_features(enc, policy.tokenizer, [instr], True), n))
        out["word_features_batch32"] = percentiles(timed(
            lambda: plan_text_features(enc, policy.tokenizer, batch, True), max(5, n // 3)))
    return out


def sim_plan_examples(split: str, seeds: range, tasks: tuple[str, ...]) -> list:
    """(instruction, oracle plan, scene object ids) from the simulator's own task sampler."""
    from keystone_vla.sim.tasks import get_task
    from keystone_vla.sim.world import SimWorld
    from keystone_vla.vla.data import plan_example

    world = SimWorld(image_size=32, cameras=("front",))
    try:
        out = []
        for task in tasks:
            for seed in seeds:
                inst = get_task(task).reset(world, seed, split)
                out.append(plan_example(inst.instruction, inst.plan, sorted(world.objects), task))
        return out
    finally:
        world.close()


def unseen_template_towers(examples: list, templates: tuple[str, ...] = ()) -> list:
    """build_tower examples re-phrased with `templates` (default: the task's unseen templates; {a} bottom, {b}
    middle, {c} top), colours staying from the examples' split."""
    import dataclasses

    from keystone_vla.sim.tasks import get_task

    templates = templates or tuple(t.text for t in get_task("build_tower").templates if t.split == "unseen")
    out = []
    for i, ex in enumerate(e for e in examples if e.task == "build_tower"):
        (_, (a_top, a_bottom)), (_, (b_top, _)) = ex.calls[1], ex.calls[3]
        colour = {o: o.split("_")[0] for o in (a_top, a_bottom, b_top)}
        text = templates[i % len(templates)].format(a=colour[a_bottom], b=colour[a_top], c=colour[b_top])
        out.append(dataclasses.replace(ex, instruction=text))
    return out


def plan_generalisation(steps: int, n_train: int, n_eval: int, colour_swap: bool) -> dict:
    """Train only the plan head (base LM) on seen-split instructions; exact-match plan accuracy on held-out
    seeds of the seen split, the unseen split (unseen templates + colours + shapes), and build_tower
    instructions in unseen templates with seen colours."""
    import random

    from keystone_vla.sim.tasks import TASKS
    from keystone_vla.vla.plan_grammar import PlanGrammar
    from keystone_vla.vla.train import build_tokenizer_and_config, cosine_lr
    from keystone_vla.vocab import COLOURS

    tasks = tuple(TASKS)
    train_ex = sim_plan_examples("seen", range(n_train), tasks)
    seen = sim_plan_examples("seen", range(100_000, 100_000 + n_eval), tasks)
    unseen = sim_plan_examples("unseen", range(200_000, 200_000 + n_eval), tasks)
    towers_unseen_template = unseen_template_towers(seen)
    torch.manual_seed(0)
    tok, cfg = build_tokenizer_and_config(get_preset("base"), train_ex)
    model = VLAModel(cfg)
    collate = Collator(cfg, tok, train_ex, plan_batch_size=32, colour_palette=tuple(COLOURS) if colour_swap else ())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rng = random.Random(0)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * cosine_lr(step, steps, 20)
        b = collate.plan_batch([rng.choice(train_ex) for _ in range(32)])
        loss = model.lm(input_ids=b["plan_ids"], labels=b["plan_labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    model.eval()

    def accuracy(examples: list) -> dict:
        per: dict[str, list[int]] = {}
        for ex in examples:
            objs = list(ex.objects)
            rng.shuffle(objs)
            g = model.generate_plan(tok.plan_prompt(ex.instruction, objs), PlanGrammar(tok, objs, cfg.max_plan_steps),
                                    cfg.max_plan_tokens)
            per.setdefault(ex.task, []).append(int(g.steps == list(ex.calls)))
        return {t: round(float(np.mean(v)), 3) for t, v in per.items()}

    return {"steps": steps, "train_examples": len(train_ex), "eval_per_task": n_eval, "colour_swap": colour_swap,
            "final_plan_loss": float(loss.detach()), "train_s": train_s, "exact_match": {
                "seen": accuracy(seen), "unseen_split": accuracy(unseen),
                "build_tower_unseen_template_seen_colours": accuracy(towers_unseen_template)["build_tower"]}}


def _merge(path: Path, update: dict) -> None:
    """Write `update` into the JSON at `path`, keeping sections measured by another invocation."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**old, **update}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 by default: with other jobs on the 2 cores, 2 threads spin and run 10x slower")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--only-plan", action="store_true", help="run only the plan-generalisation section")
    ap.add_argument("--only-shipped-plan", action="store_true",
                    help="run only the shipped checkpoint's plan latency (adapter merged / hooks / none)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.only_shipped_plan:
        load_before = os.getloadavg()[0]
        shipped = shipped_plan_latency(10 if args.quick else 30)
        if shipped is None:
            raise SystemExit("no shipped checkpoint under vla/pretrained/keystone-base")
        shipped["load_avg_before_after"] = [load_before, os.getloadavg()[0]]
        shipped["threads"] = args.threads
        _merge(Path(args.out), {"shipped_plan": shipped})
        print(json.dumps(shipped, indent=1))
        return
    if args.only_plan:
        res = {("colour_swap" if k else "plain"): plan_generalisation(
            100 if args.quick else 600, 40 if args.quick else 200, 20 if args.quick else 40, k) for k in (False, True)}
        _merge(Path(args.out), {"plan_generalisation": res})
        print(json.dumps(res, indent=1))
        return
    n = 20 if args.quick else 100
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    tok = WordTokenizer.build(CORPUS)
    obs = Observation(images={"front": np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)},
                      state=np.zeros(8, np.float32), ee_pose=np.array([0.4, 0, 0.3, 1, 0, 0, 0], np.float32))
    result: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                                "threads": args.threads, "cores": os.cpu_count(),
                                "cpu_capability": torch.backends.cpu.get_cpu_capability()},
                    "config": {"preset": "base", "cameras": 1, "image_size": 128, "chunk_size": 8}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        chunk = make_policy(tmp, tok)
        result["parameters"] = count_parameters(chunk.model)
        lat = {"chunk_fp32": percentiles(timed(lambda: chunk.predict_chunk(obs, "pick up the red block", SO), n))}
        chunk_bf = make_policy(tmp, tok, bf16=True)
        lat["chunk_bf16"] = percentiles(timed(lambda: chunk_bf.predict_chunk(obs, "pick up the red block", SO), n))
        other_q = "pooled" if chunk.config.chunk_query == "queries" else "queries"
        other = make_policy(tmp, tok, chunk_query=other_q)
        lat[f"chunk_{other_q}_fp32"] = percentiles(timed(lambda: other.predict_chunk(obs, "pick up the red block", SO), n))
        result["config"]["chunk_query"] = chunk.config.chunk_query
        tokens = make_policy(tmp, tok, action_head="tokens")
        lat["tokens_fp32"] = percentiles(timed(lambda: tokens.predict_chunk(obs, "pick up the red block", SO),
                                               max(5, n // 10), warmup=1))
        tokens_bf = make_policy(tmp, tok, bf16=True, action_head="tokens")
        lat["tokens_bf16"] = percentiles(timed(lambda: tokens_bf.predict_chunk(obs, "pick up the red block", SO),
                                               max(5, n // 10), warmup=1))
        objs = ["red_block", "green_block", "blue_block", "yellow_block"]
        instr = "build a tower: red at the bottom, then green, then blue"
        lat["plan_fp32"] = percentiles(timed(lambda: chunk.plan(instr, objects=objs), max(5, n // 4)))
        plan = chunk.plan(instr, objects=objs)
        result["plan_steps_generated"] = len(plan.steps)
    shipped = shipped_plan_latency(max(5, n // 4))
    if shipped is not None:
        result["shipped_plan"] = shipped
    h = 8
    best_chunk = min(lat["chunk_fp32"]["p50_ms"], lat["chunk_bf16"]["p50_ms"])
    best_tokens = min(lat["tokens_fp32"]["p50_ms"], lat["tokens_bf16"]["p50_ms"])
    result["latency"] = lat
    result["actions_per_s"] = {"chunk_fp32": h / lat["chunk_fp32"]["p50_ms"] * 1e3,
                               "chunk_bf16": h / lat["chunk_bf16"]["p50_ms"] * 1e3,
                               "tokens_fp32": h / lat["tokens_fp32"]["p50_ms"] * 1e3,
                               "tokens_bf16": h / lat["tokens_bf16"]["p50_ms"] * 1e3}
    ratio_same = lat["tokens_fp32"]["p50_ms"] / lat["chunk_fp32"]["p50_ms"]
    result["goals"] = {
        "chunk_p50_ms_best": best_chunk, "chunk_p50_le_25ms": best_chunk <= 25.0,
        "chunk_vs_tokens_actions_per_s_ratio_fp32": ratio_same,
        "chunk_vs_tokens_ratio_best_each": best_tokens / best_chunk,
        "ratio_ge_8x": ratio_same >= 8.0,
    }
    steps = 3 if args.quick else 6
    result["train_samples_per_s"] = {"fp32": train_rate(tok, False, steps), "bf16_autocast": train_rate(tok, True, steps)}
    result["chunk_query_ablation"] = ablation(60 if args.quick else 300)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["wall_s"] = time.perf_counter() - t_start
    result["load_avg_before_after"] = [load_before[0], os.getloadavg()[0]]
    _merge(Path(args.out), result)
    print(json.dumps({"latency_p50_ms": {k: round(v["p50_ms"], 2) for k, v in lat.items()},
                      "goals": result["goals"], "train_samples_per_s": result["train_samples_per_s"],
                      "ablation": result["chunk_query_ablation"], "peak_rss_mb": result["peak_rss_mb"]}, indent=1))


if __name__ == "__main__":
    main()
