"""The yaw head: the chunk's gripper turn from the object token's features and the proprio state.

Why it exists: the scripted experts turn the gripper in short bursts of up to 0.2 rad per tick, on 2-15 % of
ticks. At a given yaw gap "no turn" is the more common label (the lift before a transit also shows the gap), so
the chunk head's L1 optimum, the median, is no turn at all: an L1 trunk learns the median turn, which is none.
Measured on a trained base model, its predicted yaw was 0.0003 rad where the labels turn 0.15 rad, and the trunk
had learned to ignore the yaw features. A small MLP on the
24 object features alone predicts the label with correlation 0.90. This head is that MLP, with the proprio
state added (the height and gripper tell a lift from a transit), trained with squared error (its optimum is the
conditional mean: a steady turn where the expert would burst, which closes the same gap).

`fit_yaw_head` trains only this head on a store's object features, states and yaw labels, with no images and
no trunk pass, so adding it to a trained checkpoint takes minutes on a CPU (a recipe's `YawHeadStage`,
`keystone_vla.vla.recipes`); a model built with ``yaw_head=True`` from the start trains it with everything else.

This module must never import the simulator.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from keystone_vla.errors import ConfigError, DatasetError
from keystone_vla.vla.normalization import Normalizer
from keystone_vla.vla.object_token import jitter, object_features, with_step_start

YAW = 5


def yaw_table(ds: Any, normalizer: Normalizer, augment_copies: int = 0, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every window of a `StepDoneDataset` (built with the object token) as arrays, without images:
    inputs float32 [N, 24 + S] (object features, normalised state), yaw labels float32 [N, H] and the
    mask bool [N, H], both in `normalizer`'s units (the checkpoint's, which may differ from the store's).
    `augment_copies` > 0 appends that many copies with object poses jittered by the scene graph's error."""
    if not ds.step_objects:
        raise DatasetError("the dataset carries no step_objects; build it with the object token "
                           "(datasets_from_store with a config whose object_token is on)")
    base = ds.base
    s_mean = np.asarray(base.norm["state"]["mean"], np.float64)
    s_std = np.asarray(base.norm["state"]["std"], np.float64)
    a_mean = np.asarray(base.norm["action"]["mean"], np.float64)
    a_std = np.asarray(base.norm["action"]["std"], np.float64)
    h = base.chunk_size
    rng = np.random.default_rng(seed)
    xs, ys, ms = [], [], []
    for e in range(len(base.names)):
        n = int(base.lengths[e])
        state = normalizer.normalize_state(base._state[e] * s_std + s_mean)  # store units -> checkpoint units
        yaw = normalizer.normalize_action(base._actions[e] * a_std + a_mean)[:, YAW]  # padded to n + h - 1
        t = np.arange(n)
        windows = yaw[t[:, None] + np.arange(h)[None, :]]
        mask = (t[:, None] + np.arange(h)[None, :]) < n
        so, start_ee, ee = ds.step_objects[e], ds.step_start_ee[e], ds.ee_pose[e]
        for copy in range(1 + augment_copies):
            objs = so if copy == 0 else jitter(so, rng)
            feats = object_features(with_step_start(objs, start_ee), ee, ds.object_frame)
            xs.append(np.concatenate([feats, state], axis=1).astype(np.float32))
            ys.append(windows.astype(np.float32))
            ms.append(mask)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ms)


def _masked_mse(pred: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (((pred - y) ** 2) * m).sum() / m.sum().clamp(min=1.0)


def evaluate_yaw(head: torch.nn.Module, x: np.ndarray, y: np.ndarray, m: np.ndarray) -> dict[str, float]:
    """Masked squared error of the head, the labels' variance (the error of the best constant) and the
    label/prediction correlation."""
    with torch.inference_mode():
        pred = head(torch.from_numpy(x)).numpy()
    ok = m.astype(bool)
    p, t = pred[ok], y[ok]
    corr = float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 and t.std() > 0 else 0.0
    return {"mse": float(np.mean((p - t) ** 2)), "label_variance": float(t.var()),
            "correlation": corr, "entries": int(ok.sum())}


def fit_yaw_head(head: torch.nn.Module, train: tuple[np.ndarray, np.ndarray, np.ndarray],
                 val: tuple[np.ndarray, np.ndarray, np.ndarray], steps: int = 6000, batch_size: int = 512,
                 lr: float = 1e-3, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train `head` (`modeling.yaw_head_module`) on `yaw_table` arrays with masked squared error, cosine
    learning rate; returns the validation metrics before and after and the step count."""
    x, y, m = train
    if len(x) == 0:
        raise DatasetError("no training windows for the yaw head")
    if steps < 1:
        raise ConfigError(f"yaw head steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    before = evaluate_yaw(head.eval(), *val)
    xt, yt, mt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m.astype(np.float32))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="yaw head", unit="step", dynamic_ncols=True)
    head.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.from_numpy(gen.integers(0, len(x), batch_size))
        loss = _masked_mse(head(xt[idx]), yt[idx], mt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            if step % 200 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
    if bar is not None:
        bar.close()
    head.eval()
    return {"steps": steps, "train_windows": int(len(x)), "val_before": before, "val_after": evaluate_yaw(head, *val)}


def add_yaw_head(init_from: str, store_path: str, out: str, steps: int = 6000, batch_size: int = 512,
                 lr: float = 1e-3, seed: int = 0, augment_copies: int = 2, progress: bool = True,
                 object_frame: str | None = None) -> dict[str, Any]:
    """Copy the chunk-head checkpoint `init_from` to `out` with a yaw head fitted on `store_path` (every other
    weight unchanged). Returns the fit's summary, also stored under ``yaw_head`` in out's train_info.json;
    the copied ``closed_loop_eval`` is dropped, since it measured the model without the head.

    `object_frame` (``gripper`` / ``held_part``, default: init_from's) is the frame the copy measures the object
    token in; the head is fitted on features in that frame. The trunk is not retrained, which is sound for
    ``held_part`` on a ``gripper``-trained trunk because both frames agree on the centred grasps of clean
    demonstrations (see `keystone_vla.vla.object_token`); they differ only where a grasp is off-centre, and
    there ``held_part`` drives the part, not the gripper, over the target."""
    import time

    from keystone_vla.errors import ModelError
    from keystone_vla.vla.checkpoint import load_pretrained, save_pretrained, transfer_weights
    from keystone_vla.vla.data import datasets_from_store

    t0 = time.perf_counter()
    try:
        warm = load_pretrained(init_from)
    except ModelError as exc:
        raise ModelError(f"--init-from {init_from} is not a checkpoint a yaw head can be added to: {exc}") from exc
    config = warm.config
    if object_frame is not None:
        config = config.replace(object_frame=object_frame)  # VLAConfig rejects an unknown frame
    if not (config.object_token and config.action_head == "chunk"):
        raise ConfigError(f"{init_from} has object_token={config.object_token}, action_head={config.action_head!r}; "
                          "a yaw head needs a chunk-head model with the object token")
    # an existing head is refitted from its current weights; a new one starts fresh
    model = transfer_weights(warm.model.state_dict(), config.replace(yaw_head=True), init_from, fresh=("yaw_out.",))
    train_ds, val_ds, _, _, data_info, _ = datasets_from_store(store_path, config, augment=False)
    train = yaw_table(train_ds, warm.normalizer, augment_copies=augment_copies, seed=seed)
    val = yaw_table(val_ds, warm.normalizer)
    summary = fit_yaw_head(model.yaw_out, train, val, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                           progress=progress)
    summary.update(store=str(store_path), init_from=str(init_from), object_frame=config.object_frame,
                   augment_copies=augment_copies, lr=lr, batch_size=batch_size, seed=seed, wall_s=round(time.perf_counter() - t0, 1),
                   train_episodes=data_info["train_episodes"], val_episodes=data_info["val_episodes"])
    info = {k: v for k, v in warm.train_info.items() if k not in ("closed_loop_eval", "git_revision")}
    info["yaw_head"] = summary
    save_pretrained(out, model.eval(), warm.tokenizer, warm.normalizer, info)
    return summary
