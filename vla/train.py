"""Training loop for the VLA: seeded, cosine schedule with warm-up, gradient clipping, optional bf16 autocast,
periodic validation loss and closed-loop sim success, resumable, and DistributedDataParallel-ready.

Run it through `keystone train` or directly; under ``torchrun --nproc_per_node N`` the same code trains with
DDP (gloo on CPU, nccl on GPU): every rank builds the same tokenizer and model from the same seed, DDP
broadcasts rank 0's weights and averages gradients, and only rank 0 writes files or shows progress.

Resume state is saved without pickle: ``trainer_state.safetensors`` (optimizer tensors) and
``trainer_state.json`` (step, schedule, param-group settings). This module must never collect data or
change the dataset; it only reads samples.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from keystone_vla.errors import ConfigError, ModelError
from keystone_vla.vla.checkpoint import (
    WEIGHTS_FILE,
    load_pretrained,
    load_weights,
    save_pretrained,
    transfer_weights,
    weights_digest,
)
from keystone_vla.vla.configuration import VLAConfig
from keystone_vla.vla.data import Collator, PlanExample, known_objects, text_corpus
from keystone_vla.vla.modeling import VLAModel, count_parameters
from keystone_vla.vla.normalization import Normalizer
from keystone_vla.vla.plan_grammar import learn_step_templates
from keystone_vla.vla.tokenizer import TOKENIZER_FILE, WordTokenizer

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    plan_batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    val_every: int = 200
    val_batches: int = 4
    val_fraction: float = 0.05
    eval_every: int = 0  # closed-loop sim evaluation period in steps (0 = off)
    save_every: int = 500
    seed: int = 0
    bf16: str = "auto"  # auto | on | off
    augment_shift: int = 4
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    #: text-only augmentation of plan examples: colour words renamed consistently over every colour name in
    #: keystone_vla.vocab (unseen ones included; no unseen images, shapes or templates are used). Measured in
    #: benchmarks/vla.json "plan_generalisation": unseen-split stack plans 0 % -> 100 %, seen split unchanged.
    plan_colour_swap: bool = True
    #: per-dimension action loss weights (7 numbers, normalised to mean 1), e.g. to stop a rarely-moving dimension
    #: collapsing to zero; None weighs every dimension alike
    action_loss_weights: tuple[float, ...] | None = None
    #: action dimensions (0-6) the chunk head learns with squared error instead of L1, e.g. (5,) for yaw
    action_l2_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.bf16 not in ("auto", "on", "off"):
            raise ConfigError(f"bf16 must be auto, on or off, got {self.bf16!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be >= 1 (got {self.steps}, {self.batch_size})")
        w = self.action_loss_weights
        if w is not None and (len(w) != 7 or not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0):
            raise ConfigError(f"action_loss_weights must be 7 non-negative numbers, not all zero (dx dy dz droll "
                              f"dpitch dyaw gripper), got {list(w)}")
        if not all(isinstance(d, int) and 0 <= d < 7 for d in self.action_l2_dims):
            raise ConfigError(f"action_l2_dims must be action dimensions 0-6 (5 = yaw), got {list(self.action_l2_dims)}")


def bf16_helps(device: torch.device) -> bool:
    """bf16 autocast pays off on GPUs and on CPUs with native bf16 math (AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns (rank, world_size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _dist_info()


def build_tokenizer_and_config(model_config: VLAConfig, examples: Sequence[PlanExample]) -> tuple[WordTokenizer, VLAConfig]:
    """Deterministic in `examples`, so every DDP rank builds the same vocabulary without communicating."""
    tok = WordTokenizer.build(text_corpus(examples))
    steps = [(s, a, t) for ex in examples for (s, a), t in zip(ex.calls, ex.texts)]
    config = model_config.replace(vocab_size=tok.vocab_size, step_templates=learn_step_templates(steps),
                                  known_objects=known_objects(examples))
    return tok, config


def train(model_config: VLAConfig, cfg: TrainConfig, dataset: Any, plan_examples: Sequence[PlanExample],
          normalization: dict[str, Any], out_dir: str | os.PathLike[str], *, resume: bool = False,
          progress: bool = True, eval_fn: Callable[[VLAModel, WordTokenizer, Normalizer], dict[str, Any]] | None = None,
          data_info: dict[str, Any] | None = None, val_dataset: Any = None,
          init_from: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Train on `dataset` (map-style, `EpisodeWindowDataset` samples) and write a checkpoint to `out_dir`.

    `init_from` warm-starts from another checkpoint folder (its config, tokenizer and weights; a fresh optimizer
    and schedule), e.g. to specialise an all-task model on a few tasks; its cameras and chunk size must match
    `model_config`'s. An object token or a different action head asked for by `model_config` is grown on.

    `val_dataset` holds held-out samples (e.g. whole held-out episodes); without it a seeded random
    `val_fraction` of `dataset` is held out. Returns the summary also stored in ``train_info.json``."""
    out = Path(out_dir)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    rank, world = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    normalizer = Normalizer.from_dict(normalization, model_config.state_dim, model_config.action_dim)

    warm = None  # the checkpoint init_from names, loaded
    if resume and init_from is not None:
        raise ConfigError("pass either resume (continue this run) or init_from (warm-start a new run), not both")
    if resume and (out / TOKENIZER_FILE).is_file():
        tok = WordTokenizer.load(out)
        config = VLAConfig.load(out)
        if config.object_frame != model_config.object_frame:
            raise ConfigError(f"--resume: {out} was trained with object_frame={config.object_frame!r}, this run asks "
                              f"for {model_config.object_frame!r}; match the flag or start a new run")
    elif init_from is not None:
        try:  # the same cross-checked loader inference uses: every file present and consistent
            warm = load_pretrained(init_from)
        except ModelError as exc:
            raise ModelError(f"init_from {init_from} is not a checkpoint this run can start from: {exc}") from exc
        tok, config = warm.tokenizer, warm.model.config
        if config.plan_adapter_rank:
            # the adapter's low-rank deltas fit the trunk they were trained on; training the trunk voids them, so the
            # new run starts without one (refit it afterwards: a recipe's PlanAdapterStage, vla/recipes.py)
            config = config.replace(plan_adapter_rank=0)
            warm.model = transfer_weights(warm.model.state_dict(), config, f"init_from {init_from}",
                                          dropped=("plan_adapter.",))
        for key in ("cameras", "chunk_size"):
            if getattr(config, key) != getattr(model_config, key):
                raise ConfigError(f"init_from {init_from} has {key}={getattr(config, key)!r} but this run asks for "
                                  f"{getattr(model_config, key)!r}; match the flags to the checkpoint")
        # the object frame changes what the data feed the object token, not the weights: this run's choice holds
        config = config.replace(object_frame=model_config.object_frame)
        grow_object = model_config.object_token and not config.object_token
        new_head = model_config.action_head != config.action_head
        if grow_object or new_head:
            # grow an object token onto a model trained without one, and/or swap the action head (e.g. a chunk
            # model's trunk warm-starts the discrete-token variant): every shared weight carries over, the new
            # parts start fresh and the old head's weights are dropped
            config = config.replace(object_token=config.object_token or grow_object,
                                    action_head=model_config.action_head)
            fresh = ("object_proj.", "action_out.", "action_queries")
            warm.model = transfer_weights(warm.model.state_dict(), config, f"init_from {init_from}", fresh=fresh,
                                          dropped=fresh[1:] if new_head else ())
        else:
            warm.model.config = config  # the object frame, if it changed
    else:
        if resume:
            raise ModelError(f"--resume: {out} holds no checkpoint ({TOKENIZER_FILE} missing); drop --resume")
        tok, config = build_tokenizer_and_config(model_config, plan_examples)
    model = warm.model if warm is not None else VLAModel(config)
    model.augment_shift = cfg.augment_shift
    if cfg.action_loss_weights is not None:  # TrainConfig has checked them: 7 numbers, one per action dimension
        model.action_loss_weights = tuple(float(x) for x in cfg.action_loss_weights)
    model.action_l2_dims = tuple(cfg.action_l2_dims)
    start_step = 0
    if resume:
        load_weights(model, out / WEIGHTS_FILE)
    model.to(device)

    n = len(dataset)
    if n < 2:
        raise ModelError(f"dataset has {n} samples; training needs at least 2 (collect more episodes)")
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=g).tolist()
    if val_dataset is not None and len(val_dataset) > 0:
        train_set, val_set = dataset, val_dataset
    else:
        n_val = max(1, int(n * cfg.val_fraction))
        train_set, val_set = Subset(dataset, perm[n_val:]), Subset(dataset, perm[:n_val])
    plan_perm = torch.randperm(len(plan_examples), generator=g).tolist()
    n_pval = max(1, int(len(plan_examples) * cfg.val_fraction)) if len(plan_examples) > 1 else 0
    plan_val = [plan_examples[i] for i in plan_perm[:n_pval]]
    plan_train = [plan_examples[i] for i in plan_perm[n_pval:]] or list(plan_examples)

    text_encoder = None
    if config.text_encoder == "minilm":
        from keystone_vla.text_encoder import MiniLMEncoder

        text_encoder = MiniLMEncoder()
    from keystone_vla.vocab import COLOURS

    collate = Collator(config, tok, plan_train, cfg.plan_batch_size, seed=cfg.seed + rank, text_encoder=text_encoder,
                       colour_palette=tuple(COLOURS) if cfg.plan_colour_swap else ())
    sampler = (DistributedSampler(train_set, num_replicas=world, rank=rank, seed=cfg.seed) if world > 1
               else RandomSampler(train_set, generator=torch.Generator().manual_seed(cfg.seed)))
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers, drop_last=len(train_set) >= cfg.batch_size)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resume and (out / STATE_JSON).is_file():
        start_step = _load_trainer_state(out, opt)
    for group in opt.param_groups:  # the schedule restarts from the base lr, offset by the resumed step
        group["lr"] = group["initial_lr"] = cfg.lr
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s + start_step, cfg.steps, cfg.warmup_steps))
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    use_bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and bf16_helps(device))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext

    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    history: dict[str, list] = {"val": [], "closed_loop": []}
    t0, samples_seen = time.perf_counter(), 0
    last: dict[str, float] = {}
    step, epoch = start_step, 0
    model.train()
    while step < cfg.steps:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        for batch in loader:
            if step >= cfg.steps:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast():
                losses = ddp(batch)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            samples_seen += batch["images"].shape[0] * world
            last = {k: float(v.detach()) for k, v in losses.items()}
            last["grad_norm"] = float(grad_norm)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.3f}", act=f"{last['action']:.3f}", plan=f"{last['plan']:.3f}")
            if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps) and rank == 0:
                v = validate(model, val_set, plan_val, collate, cfg, autocast, device)
                history["val"].append({"step": step, **v})
                if bar is not None:
                    bar.write(f"step {step}: val " + ", ".join(f"{k} {x:.4f}" for k, x in v.items()), file=sys.stderr)
            if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0 and rank == 0:
                res = eval_fn(model, tok, normalizer)
                history["closed_loop"].append({"step": step, **res})
                model.train()
                if bar is not None:
                    bar.write(f"step {step}: closed loop {json.dumps(res)}", file=sys.stderr)
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                _checkpoint(out, model, tok, normalizer, opt, step, cfg, history, data_info, rank, {})
        epoch += 1
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    summary = {
        "steps": step, "world_size": world, "bf16": use_bf16, "device": str(device),
        "samples_per_s": samples_seen / max(wall, 1e-9), "wall_s": wall, "final_losses": last,
        "parameters": count_parameters(model), "train_samples": len(train_set), "val_samples": len(val_set),
        "plan_examples": len(plan_examples), "out": str(out), "weights_sha256": weights_digest(model),
    }
    if history["val"]:
        summary["val"] = history["val"][-1]
    _checkpoint(out, model, tok, normalizer, opt, step, cfg, history, data_info, rank, summary)
    return summary


@torch.no_grad()
def validate(model: VLAModel, val_set: Any, plan_val: Sequence[PlanExample], collate: Collator, cfg: TrainConfig,
             autocast: Callable, device: torch.device) -> dict[str, float]:
    """Mean action / done / plan losses on held-out samples and held-out plan examples."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    bs = min(cfg.batch_size, len(val_set))
    for b in range(cfg.val_batches):
        idx = [(b * bs + i) % len(val_set) for i in range(bs)]
        batch = collate([val_set[i] for i in idx])
        if plan_val:
            batch.update(collate.plan_batch([plan_val[(b * bs + i) % len(plan_val)] for i in range(min(bs, 16))]))
        with autocast():
            losses = model({k: v.to(device) for k, v in batch.items()})
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        count += 1
        if (b + 1) * bs >= len(val_set):
            break
    model.train()
    return {f"val_{k}": v / count for k, v in sums.items()}


def _checkpoint(out: Path, model: VLAModel, tok: WordTokenizer, normalizer: Normalizer, opt: torch.optim.Optimizer,
                step: int, cfg: TrainConfig, history: dict, data_info: dict | None, rank: int,
                summary: dict[str, Any]) -> None:
    if rank == 0:
        info = {"train_config": asdict(cfg), "data": data_info or {}, "history": history, **summary, "steps": step}
        save_pretrained(out, model, tok, normalizer, info)
        _save_trainer_state(out, opt, step)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _save_trainer_state(out: Path, opt: torch.optim.Optimizer, step: int) -> None:
    sd = opt.state_dict()
    tensors = {f"{pid}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
               for pid, st in sd["state"].items() for k, v in st.items()}
    save_file(tensors, str(out / STATE_TENSORS))
    (out / STATE_JSON).write_text(json.dumps({"step": step, "param_groups": sd["param_groups"]}, indent=2))


def _load_trainer_state(out: Path, opt: torch.optim.Optimizer) -> int:
    try:
        meta = json.loads((out / STATE_JSON).read_text())
        tensors = load_file(str(out / STATE_TENSORS))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"--resume: cannot read {STATE_JSON}/{STATE_TENSORS} in {out} ({exc})") from exc
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise ModelError(f"--resume: {STATE_JSON} does not match this model ({exc}); start a fresh --out") from exc
    return int(meta["step"])
