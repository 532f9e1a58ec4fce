"""Per-dimension check of a chunk-head checkpoint on held-out windows: does each action dimension move when the
demonstrations move it?

For every action dimension it reports, over the chunk entries whose label moves (|label| above a threshold in the
store's units): the mean |label|, the mean |prediction|, how often their signs agree, and the correlation of label
and prediction over all entries. A dimension whose prediction stays near zero while its label moves has collapsed
to its median (reports/dev-stop12: keystone-base's yaw).

    .venv/bin/python scripts/diag_action_dims.py --checkpoint vla/pretrained/keystone-base --data data/mix.zarr
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

DIMS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="chunk-head VLA checkpoint folder")
    ap.add_argument("--data", required=True, help="episode store the checkpoint was trained on")
    ap.add_argument("--windows", type=int, default=700, help="held-out windows to use (evenly spaced)")
    ap.add_argument("--moving", type=float, nargs=7, default=(0.002, 0.002, 0.002, 0.01, 0.01, 0.01, 0.5),
                    metavar="T", help="per-dimension |label| above which an entry counts as moving (store units)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from keystone_vla.errors import ConfigError
    from keystone_vla.vla.checkpoint import load_pretrained
    from keystone_vla.vla.data import Collator, datasets_from_store

    torch.set_num_threads(args.threads)
    bundle = load_pretrained(args.checkpoint)
    model = bundle.model.eval()
    if model.config.action_head != "chunk":
        raise ConfigError(f"{args.checkpoint} has a {model.config.action_head!r} action head; this checks chunk heads")
    _, val_ds, _, _, _, _ = datasets_from_store(args.data, model.config)
    if len(val_ds) == 0:
        raise ConfigError(f"{args.data} has no held-out windows")
    collate = Collator(model.config, bundle.tokenizer)
    step = max(1, len(val_ds) // args.windows)
    index = list(range(0, len(val_ds), step))[: args.windows]
    labels, preds = [], []
    for s in range(0, len(index), 64):
        batch = collate([val_ds[i] for i in index[s:s + 64]])
        with torch.inference_mode():
            prefix = model.action_prefix(batch["images"], batch["instruction_ids"], batch["state"],
                                         batch.get("text_features"), batch.get("object_features"))
            pred, _ = model.chunk_forward(prefix, batch.get("object_features"), batch["state"])
        ok = batch["action_mask"].numpy()
        labels.append(val_ds.base.denormalize_actions(batch["actions"]).numpy()[ok])
        preds.append(val_ds.base.denormalize_actions(pred.float()).numpy()[ok])
    label, pred = np.concatenate(labels), np.concatenate(preds)
    out = {"checkpoint": args.checkpoint, "data": args.data, "entries": int(len(label)), "dims": {}}
    for d, name in enumerate(DIMS):
        moving = np.abs(label[:, d]) > args.moving[d]
        row = {"moving_entries": int(moving.sum())}
        if moving.any():
            row.update(label_abs=float(np.abs(label[moving, d]).mean()), pred_abs=float(np.abs(pred[moving, d]).mean()),
                       sign_agreement=float(np.mean(np.sign(label[moving, d]) == np.sign(pred[moving, d]))))
        if label[:, d].std() > 0 and pred[:, d].std() > 0:
            row["correlation"] = float(np.corrcoef(label[:, d], pred[:, d])[0, 1])
        out["dims"][name] = row
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
