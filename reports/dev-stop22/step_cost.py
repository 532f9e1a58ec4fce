"""Training-step cost of four layouts side by side in one process (fp32, 2 threads, 32 windows of the store per
step, median of steps 3-7, two repetitions): ViT patch 16 / 32 and 16 / 4 / 0 plan examples per step. Stop 22 ran
it on data/fast19.zarr before the fast recipe (reports/dev-stop22/README.md quotes the numbers; this machine drifts
~30 % between repetitions). Run from the repository root: python reports/dev-stop22/step_cost.py [STORE]"""
import dataclasses
import random
import sys
import time

import torch

from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.data import Collator, datasets_from_store
from keystone_vla.vla.modeling import VLAModel
from keystone_vla.vla.train import build_tokenizer_and_config

LAYOUTS = [("p16 pb16", 16, 16), ("p32 pb16", 32, 16), ("p32 pb4", 32, 4), ("p32 pb0", 32, 0)]


def main(store: str) -> None:
    torch.set_num_threads(2)
    train_set, _, examples, _, _, config = datasets_from_store(store, get_preset("base"))
    tokenizer, config = build_tokenizer_and_config(config, examples)
    random.seed(0)
    samples = [[train_set[random.randrange(len(train_set))] for _ in range(32)] for _ in range(3)]
    res: dict[str, list[float]] = {}
    for _ in range(2):
        for name, patch, plan_batch in LAYOUTS:
            c = dataclasses.replace(config, vision=dataclasses.replace(config.vision, patch_size=patch))
            collate = Collator(c, tokenizer, examples, plan_batch, seed=0)
            batches = [collate(s) for s in samples]
            torch.manual_seed(0)
            model = VLAModel(c).train()
            opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
            times = []
            for i in range(7):
                t0 = time.perf_counter()
                loss = model(batches[i % 3])["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            res.setdefault(name, []).append(round(sorted(times[2:])[2], 3))
            print(name, "s/step per repetition:", res[name], flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/fast19.zarr")
