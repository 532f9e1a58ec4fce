import time, torch, sys, dataclasses, random, json
torch.set_num_threads(2)
from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.data import datasets_from_store, Collator
from keystone_vla.vla.train import build_tokenizer_and_config
from keystone_vla.vla.modeling import VLAModel
cfg = get_preset("base")
tr, va, ex, norm, info, cfg = datasets_from_store("data/fast19.zarr", cfg)
tok, config = build_tokenizer_and_config(cfg, ex)
random.seed(0)
samples=[[tr[random.randrange(len(tr))] for _ in range(32)] for _ in range(3)]
out={}
for name, vis in [("patch16 (base)", {}), ("patch32", {"patch_size": 32}), ("patch16, 2 ViT layers", {"num_layers": 2})]:
    c = dataclasses.replace(config, vision=dataclasses.replace(config.vision, **vis))
    col = Collator(c, tok, ex, 16, seed=0)
    bs=[col(s) for s in samples]
    torch.manual_seed(0); m=VLAModel(c); opt=torch.optim.AdamW(m.parameters(),lr=3e-4)
    ts=[]
    for i in range(8):
        t=time.perf_counter(); l=m(bs[i%3]); opt.zero_grad(); l["loss"].backward(); opt.step(); ts.append(time.perf_counter()-t)
    out[name]={"s_per_step_median_of_last6": sorted(ts[2:])[3], "image_tokens": c.num_image_tokens if hasattr(c,'num_image_tokens') else None}
    print(name, out[name], flush=True)
t=time.perf_counter(); [tr[random.randrange(len(tr))] for _ in range(64)]; print("fetch per 32 samples", (time.perf_counter()-t)/2)
