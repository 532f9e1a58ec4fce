"""Training-step cost of the base model and two cheaper image encoders, built side by side in one process (fp32,
2 threads, 32 windows of STORE per step, median of steps 3-8). Run from the repository root:
python reports/dev-stop19/step_cost.py [STORE]   (default data/fast19.zarr)"""
import dataclasses
import random
import sys
import time

import torch

from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.data import Collator, datasets_from_store
from keystone_vla.vla.modeling import VLAModel
from keystone_vla.vla.train import build_tokenizer_and_config

VARIANTS = [("patch16 (base)", {}), ("patch32", {"patch_size": 32}), ("patch16, 2 ViT layers", {"num_layers": 2})]


def main(store: str) -> None:
    torch.set_num_threads(2)
    train_set, _, examples, _, _, config = datasets_from_store(store, get_preset("base"))
    tokenizer, config = build_tokenizer_and_config(config, examples)
    random.seed(0)
    samples = [[train_set[random.randrange(len(train_set))] for _ in range(32)] for _ in range(3)]
    for name, vision in VARIANTS:
        c = dataclasses.replace(config, vision=dataclasses.replace(config.vision, **vision))
        collate = Collator(c, tokenizer, examples, 16, seed=0)
        batches = [collate(s) for s in samples]
        torch.manual_seed(0)
        model = VLAModel(c)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        times = []
        for i in range(8):
            t = time.perf_counter()
            loss = model(batches[i % 3])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        print(name, {"s_per_step_median_of_last6": sorted(times[2:])[3], "image_tokens": c.tokens_per_image},
              flush=True)
    t = time.perf_counter()
    for _ in range(64):
        train_set[random.randrange(len(train_set))]
    print("fetch per 32 samples", (time.perf_counter() - t) / 2)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/fast19.zarr")
