"""Train the language-free CNN baseline (`keystone_vla.policies.baseline`) on an episode store.

    python -m keystone_vla.policies.train_baseline --store data/demos --out checkpoints/cnn-bc --steps 3000

Samples come from `keystone_vla.datasets.torch_dataset.EpisodeWindowDataset` (observation at t, normalised
action chunk t..t+H-1 with a padding mask, random-shift and colour augmentation); the loss is the masked mean
squared error in normalised units. The store's normalisation statistics are saved beside the weights.
This module must never modify the store.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from keystone_vla.errors import DatasetError

from .baseline import TASK_NAMES, BaselineConfig, BaselineNet, save_baseline


def train_baseline(store: str | Path, out: str | Path, *, steps: int = 3000, batch_size: int = 64, lr: float = 1e-3,
                   seed: int = 0, workers: int = 2, chunk_size: int = 8, camera: str = "front",
                   augment: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train for `steps` optimizer steps and save the checkpoint to `out`; returns the train info."""
    from tqdm import tqdm

    from keystone_vla.datasets.torch_dataset import EpisodeWindowDataset, make_loader

    torch.manual_seed(seed)
    ds = EpisodeWindowDataset(store, chunk_size=chunk_size, cameras=(camera,), augment=augment)
    first = ds[0]
    size = int(first["images"].shape[1])
    tasks = sorted({m["task"] for m in ds._meta}, key=lambda t: TASK_NAMES.index(t) if t in TASK_NAMES else 99)
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown:
        raise DatasetError(f"{store} holds episodes of unknown task(s) {unknown}; the baseline knows {TASK_NAMES}")
    config = BaselineConfig(tasks=TASK_NAMES, camera=camera, image_size=size, state_dim=int(first["state"].shape[0]),
                            action_dim=int(first["actions"].shape[1]), chunk_size=chunk_size)
    net = BaselineNet(config)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    loader = make_loader(ds, batch_size=min(batch_size, len(ds)), num_workers=workers, seed=seed)
    t0 = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(total=steps, desc="train cnn-bc", unit="step", file=sys.stderr, disable=not progress)
    step = 0
    net.train()
    while step < steps:
        for batch in loader:
            images = batch["images"][:, 0]  # one camera
            pred = net(images, batch["state"], net.task_onehot(batch["task"]))
            mask = batch["action_mask"].float().unsqueeze(-1)
            loss = (((pred - batch["actions"]) ** 2) * mask).sum() / (mask.sum() * config.action_dim).clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
            if step >= steps:
                break
    bar.close()
    net.eval()
    info = {
        "store": str(store), "episodes": len(ds.names), "samples": len(ds), "tasks_in_data": tasks,
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "augment": augment,
        "loss_first": losses[0], "loss_last_50": sum(losses[-50:]) / len(losses[-50:]),
        "parameters": sum(p.numel() for p in net.parameters()), "wall_s": time.perf_counter() - t0,
    }
    save_baseline(out, net, ds.norm, info)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the language-free CNN behaviour-cloning baseline.")
    parser.add_argument("--store", required=True, help="episode store folder (keystone data collect --out)")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=2, help="data loader processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = train_baseline(args.store, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, workers=args.workers)
    print(f"saved {args.out}: loss {info['loss_first']:.4f} -> {info['loss_last_50']:.4f} in {info['wall_s']:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
