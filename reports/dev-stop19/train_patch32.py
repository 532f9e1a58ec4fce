"""Stage s of RECIPE=fast with 16 image tokens (ViT patch 32) instead of 64: the same data, steps, schedule and seed
as `keystone train --preset base --steps 1500 --val-every 250 --workers 1 --seed 0`, to compare validation action
error per step and wall time. Run from the repository root: python reports/dev-stop19/train_patch32.py STORE OUT"""
import dataclasses
import json
import sys

import torch

from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.data import datasets_from_store
from keystone_vla.vla.train import TrainConfig, train

store, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
config = get_preset("base", action_head="chunk", cameras=("front",), text_encoder="none", object_token=True,
                    object_frame="gripper")
config = dataclasses.replace(config, vision=dataclasses.replace(config.vision, patch_size=32))
steps = 1500
tcfg = TrainConfig(steps=steps, batch_size=32, lr=3e-4, seed=0, val_every=250, eval_every=0, bf16="auto",
                   num_workers=1, device="auto", augment_shift=0, plan_colour_swap=True,
                   warmup_steps=100, save_every=500)
train_ds, val_ds, examples, norm, info, config = datasets_from_store(store, config)
summary = train(config, tcfg, train_ds, examples, norm, out, data_info=info, val_dataset=val_ds)
print(json.dumps({"val": summary.get("val"), "wall_s": summary["wall_s"], "samples_per_s": summary["samples_per_s"],
                  "parameters": summary["parameters"]}))
