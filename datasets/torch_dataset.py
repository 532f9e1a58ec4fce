"""Training samples from an episode store: observation at tick t plus the action chunk t .. t+H-1.

`EpisodeWindowDataset[i]` is a dict (shapes for one sample; `collate_windows` stacks a batch):

    images           uint8 [n_cam, H, W, 3]   frames of `cameras` at t (augmented if `augment`)
    state            float32 [S]              (state - mean) / std, statistics from `store.normalization()`
    actions          float32 [chunk, A]       normalized actions t .. t+chunk-1, padded past the episode end
    action_mask      bool [chunk]             False on padding
    instruction      str                      the episode's instruction
    step_instruction str                      text of plan step plan_step[t] (the instruction if none)
    plan             str                      Plan JSON
    task             str
    episode_index, frame_index  int64 []      where the sample came from

Padding: for delta action spaces (``ee_delta``) the pad is "hold still": zero motion with the last gripper
command kept; repeating the last delta would command motion the demonstration never made. For absolute
action spaces (joint targets) the last action is repeated. Either way `action_mask` marks it.

Speed: every small array (state, action, plan_step) is loaded and normalized once, in RAM; images stay
encoded in an LRU cache of store chunks (`cache_mb` per process) and only the sampled frame is decoded, so
a worker does no zarr read once its chunks are cached. `make_loader` is the DataLoader recipe that keeps
2 CPU cores busy (2 worker processes, 1 torch thread each, prefetching).

This module must never write to the store (normalization statistics are computed by the store itself).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from keystone_vla.datasets.image_codec import decode_frame
from keystone_vla.datasets.store import Episode, EpisodeStore
from keystone_vla.datasets.writer import IMAGE_CHUNK
from keystone_vla.errors import DatasetError

DELTA_ACTION_SPACES = ("ee_delta",)


class EpisodeWindowDataset(Dataset):
    """Random-access (observation, action chunk) windows over the episodes of a store."""

    def __init__(self, store_path: str | os.PathLike[str], chunk_size: int = 8, cameras: Sequence[str] = ("front",),
                 augment: bool = False, episodes: Sequence[str] | None = None, cache_mb: int = 512,
                 shift_px: int = 4) -> None:
        if chunk_size < 1:
            raise DatasetError(f"chunk_size must be >= 1, got {chunk_size}")
        self.store_path = str(store_path)
        store = EpisodeStore(store_path, mode="r")
        names = list(episodes) if episodes is not None else store.episode_names()
        if not names:
            raise DatasetError(f"{store_path} has no episodes to train on")
        self.chunk_size = int(chunk_size)
        self.cameras = tuple(cameras)
        self.augment = bool(augment)
        self.shift_px = int(shift_px)
        self.norm = store.normalization()
        mean = {k: np.asarray(self.norm[k]["mean"], np.float32) for k in ("state", "action")}
        std = {k: np.asarray(self.norm[k]["std"], np.float32) for k in ("state", "action")}
        self.names = names
        self._state: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []  # normalized, padded to T + chunk - 1
        self._step_text: list[list[str]] = []
        self._meta: list[dict[str, str]] = []
        self._codec: list[dict[str, str]] = []
        lengths = []
        for name in names:
            ep = store.episode(name)
            missing = [c for c in self.cameras if c not in ep.cameras]
            if missing:
                raise DatasetError(f"{name} has no camera {missing}; it has {ep.cameras}. Pick --cameras from those")
            n = ep.length
            state = ep.array("state")
            action = ep.array("action")
            if state.shape[1] != len(mean["state"]) or action.shape[1] != len(mean["action"]):
                raise DatasetError(f"{name} state/action sizes differ from the store's normalization statistics")
            self._state.append(((state - mean["state"]) / std["state"]).astype(np.float32))
            pad = np.repeat(action[-1:], self.chunk_size - 1, axis=0)
            if ep.attrs.get("action_space", "ee_delta") in DELTA_ACTION_SPACES:
                pad[:, :-1] = 0.0  # hold still, keep the gripper command
            padded = np.concatenate([action, pad]).astype(np.float32)
            self._actions.append(((padded - mean["action"]) / std["action"]).astype(np.float32))
            plan_step = ep.array("plan_step")
            steps = json.loads(ep.attrs["plan"]).get("steps", [])
            texts = [s.get("text") or ep.attrs["instruction"] for s in steps]
            self._step_text.append([texts[i] if 0 <= i < len(texts) else ep.attrs["instruction"] for i in plan_step])
            self._meta.append({"instruction": str(ep.attrs["instruction"]), "plan": str(ep.attrs["plan"]),
                               "task": str(ep.attrs["task"])})
            self._codec.append({c: ep.image_codec(c) for c in self.cameras})
            lengths.append(n)
        self.lengths = np.asarray(lengths, np.int64)
        self._ep_of = np.repeat(np.arange(len(names)), self.lengths)
        self._t_of = np.concatenate([np.arange(n) for n in self.lengths])
        self._cache_bytes = int(cache_mb) * 2**20
        self._cache: OrderedDict[tuple[int, str, int], list[bytes]] = OrderedDict()
        self._cached = 0
        self._episodes: dict[int, Episode] = {}
        self._rng: np.random.Generator | None = None
        self._pid = -1
        self._rng_pid = -1

    def __len__(self) -> int:
        return int(len(self._t_of))

    # -- images ------------------------------------------------------------------------------------------
    def _frame_blob(self, e: int, cam: str, t: int) -> bytes:
        key = (e, cam, t // IMAGE_CHUNK)
        chunk = self._cache.get(key)
        if chunk is None:
            if os.getpid() != self._pid:  # a fresh DataLoader worker: open episodes in this process
                self._episodes, self._pid = {}, os.getpid()
            if e not in self._episodes:
                self._episodes[e] = EpisodeStore(self.store_path, mode="r").episode(self.names[e])
            start = key[2] * IMAGE_CHUNK
            chunk = self._episodes[e].encoded_frames(cam, start, min(start + IMAGE_CHUNK, int(self.lengths[e])))
            self._cache[key] = chunk
            self._cached += sum(len(b) for b in chunk)
            while self._cached > self._cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached -= sum(len(b) for b in old)
        else:
            self._cache.move_to_end(key)
        return chunk[t % IMAGE_CHUNK]

    def _augment(self, img: np.ndarray) -> np.ndarray:
        if self._rng is None or self._rng_pid != os.getpid():  # each worker draws its own augmentations
            self._rng = np.random.default_rng([torch.initial_seed() % 2**32, os.getpid()])
            self._rng_pid = os.getpid()
        rng = self._rng
        h, w = img.shape[:2]
        p = self.shift_px
        if p > 0:  # random shift: pad by replicating the border, crop back at a random offset
            padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="edge")
            dy, dx = rng.integers(0, 2 * p + 1, 2)
            img = padded[dy:dy + h, dx:dx + w]
        x = img.astype(np.float32)
        x = x * rng.uniform(0.8, 1.2)  # brightness
        grey = x.mean()
        x = (x - grey) * rng.uniform(0.8, 1.2) + grey  # contrast
        lum = x.mean(axis=2, keepdims=True)
        x = (x - lum) * rng.uniform(0.8, 1.2) + lum  # saturation
        return np.clip(x, 0, 255).astype(np.uint8)

    # -- samples -----------------------------------------------------------------------------------------
    def _batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Build a collated batch directly (numpy gathers, one decode per frame, no per-sample tensors)."""
        idx = np.asarray(indices, np.int64)
        idx = np.where(idx < 0, idx + len(self), idx)
        if np.any((idx < 0) | (idx >= len(self))):
            raise IndexError(f"sample index out of range for {len(self)} samples: {list(indices)}")
        eps, ts = self._ep_of[idx], self._t_of[idx]
        images: np.ndarray | None = None
        for b, (e, t) in enumerate(zip(eps.tolist(), ts.tolist())):
            for c, cam in enumerate(self.cameras):
                img = decode_frame(self._frame_blob(e, cam, t), self._codec[e][cam])
                if self.augment:
                    img = self._augment(img)
                if images is None:
                    images = np.empty((len(idx), len(self.cameras), *img.shape), np.uint8)
                if img.shape != images.shape[2:]:
                    raise DatasetError(f"{self.names[e]} camera {cam!r} frames are {img.shape}, other samples "
                                       f"{images.shape[2:]}; batch episodes with one image size")
                images[b, c] = img
        pairs = list(zip(eps.tolist(), ts.tolist()))
        mask = (ts[:, None] + np.arange(self.chunk_size)[None, :]) < self.lengths[eps][:, None]
        return {
            "images": torch.from_numpy(images),
            "state": torch.from_numpy(np.stack([self._state[e][t] for e, t in pairs])),
            "actions": torch.from_numpy(np.stack([self._actions[e][t:t + self.chunk_size] for e, t in pairs])),
            "action_mask": torch.from_numpy(mask),
            "instruction": [self._meta[e]["instruction"] for e, _ in pairs],
            "step_instruction": [self._step_text[e][t] for e, t in pairs],
            "plan": [self._meta[e]["plan"] for e, _ in pairs],
            "task": [self._meta[e]["task"] for e, _ in pairs],
            "episode_index": torch.from_numpy(eps.copy()),
            "frame_index": torch.from_numpy(ts.copy()),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        return {k: v[0] for k, v in self._batch([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        """A whole batch at once (the DataLoader calls this; `collate_windows` passes it through)."""
        return self._batch(indices)

    def denormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Undo the action normalization: float32 [..., A] -> the store's units."""
        mean = torch.as_tensor(self.norm["action"]["mean"], dtype=actions.dtype)
        std = torch.as_tensor(self.norm["action"]["std"], dtype=actions.dtype)
        return actions * std + mean


def collate_windows(samples: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Stack tensors along a new batch dim; strings become lists (images -> uint8 [B, n_cam, H, W, 3]).

    A batch already built by `EpisodeWindowDataset.__getitems__` passes through unchanged.
    """
    if isinstance(samples, dict):
        return samples
    out: dict[str, Any] = {}
    for key, value in samples[0].items():
        if isinstance(value, torch.Tensor):
            out[key] = torch.stack([s[key] for s in samples])
        else:
            out[key] = [s[key] for s in samples]
    return out


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def make_loader(dataset: EpisodeWindowDataset, batch_size: int = 64, num_workers: int = 2, shuffle: bool = True,
                seed: int = 0, drop_last: bool = True) -> DataLoader:
    """The DataLoader recipe for training: `num_workers` processes with one torch thread each, 4 batches of
    prefetch per worker, persistent workers (their image caches survive across epochs)."""
    generator = torch.Generator().manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": _worker_init}
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate_windows, drop_last=drop_last, generator=generator, **kwargs)
