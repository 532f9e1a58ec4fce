"""The language-free baseline: a small CNN behaviour-cloning policy conditioned on a task one-hot.

It sees the front camera, the proprioceptive state and *which task* it runs (one-hot), never the instruction,
so on scenes with several candidate objects it cannot know which one was meant: the gap between it and the VLA
measures what language grounding adds. It predicts an action chunk (H x 7, normalised units) executed through
the same `ChunkRuntime` as the VLA, so the comparison isolates the model, not the runtime.

Network (float32, ~0.2 M parameters): 4 strided 3x3 convs -> spatial softmax keypoints (robomimic-style, good at
"where is the object") -> concat [keypoints, normalised state, task one-hot] -> MLP -> H x 7.

Checkpoint folder: ``model.safetensors``, ``config.json`` (``"model_type": "keystone-cnn-bc"`` + architecture,
tasks, camera, image size, chunk size), ``normalization.json`` (the training store's statistics, never
recomputed at load), ``train_info.json``. No pickle. Training lives in `keystone_vla.policies.train_baseline`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from keystone_vla.errors import ConfigError, ModelError
from keystone_vla.types import ActionChunk, Observation

from .registry import BASELINE_MODEL_TYPE
from .runtime import ChunkRuntime, RuntimeConfig

TASK_NAMES = ("pick_place", "stack", "insert", "kit_assembly", "build_tower")


@dataclass(frozen=True)
class BaselineConfig:
    """Architecture and I/O of the baseline; saved as config.json (unknown keys are an error)."""

    tasks: tuple[str, ...] = TASK_NAMES
    camera: str = "front"
    image_size: int = 128
    state_dim: int = 8
    action_dim: int = 7
    chunk_size: int = 8
    channels: tuple[int, ...] = (32, 64, 64, 64)
    hidden: int = 256
    model_type: str = BASELINE_MODEL_TYPE

    def save(self, folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> BaselineConfig:
        data = json.loads((folder / "config.json").read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{folder}/config.json: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        if data.get("model_type") != BASELINE_MODEL_TYPE:
            raise ConfigError(f"{folder} is not a baseline checkpoint (model_type {data.get('model_type')!r})")
        for key in ("tasks", "channels"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class SpatialSoftmax(nn.Module):
    """Per-channel expected (x, y) image coordinate of the softmax over the feature map: [B, C, H, W] -> [B, 2C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = torch.softmax(x.flatten(2), dim=-1).view(b, c, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        ex = (attn.sum(2) * xs).sum(-1)
        ey = (attn.sum(3) * ys).sum(-1)
        return torch.cat([ex, ey], dim=1)


class BaselineNet(nn.Module):
    """images uint8 [B, H, W, 3], state float32 [B, S] (normalised), task float32 [B, T] -> float32 [B, H_c, 7]."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 3
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.ReLU()]
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax()
        d_in = 2 * c_in + config.state_dim + len(config.tasks)
        self.head = nn.Sequential(nn.Linear(d_in, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.hidden),
                                  nn.ReLU(), nn.Linear(config.hidden, config.chunk_size * config.action_dim))

    def forward(self, images: torch.Tensor, state: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        feats = self.keypoints(self.encoder(x))
        out = self.head(torch.cat([feats, state, task], dim=1))
        return out.view(-1, self.config.chunk_size, self.config.action_dim)

    def task_onehot(self, names: list[str]) -> torch.Tensor:
        idx = []
        for n in names:
            if n not in self.config.tasks:
                raise ModelError(f"the baseline was trained on tasks {list(self.config.tasks)}, not {n!r}")
            idx.append(self.config.tasks.index(n))
        return torch.nn.functional.one_hot(torch.tensor(idx), len(self.config.tasks)).float()


def save_baseline(folder: str | os.PathLike[str], net: BaselineNet, normalization: dict[str, Any],
                  train_info: dict[str, Any]) -> Path:
    """Write the checkpoint folder (safetensors + JSON; see module docstring)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": BASELINE_MODEL_TYPE})
    net.config.save(folder)
    norm = {k: {s: list(map(float, normalization[k][s])) for s in ("mean", "std")} for k in ("state", "action")}
    (folder / "normalization.json").write_text(json.dumps(norm, indent=1) + "\n")
    (folder / "train_info.json").write_text(json.dumps(train_info, indent=2, default=str) + "\n")
    return folder


class BaselinePolicy:
    """Per-tick policy around a trained `BaselineNet`; `bind` tells it the task (its only conditioning)."""

    name = "cnn-bc"
    needs_images = True

    def __init__(self, net: BaselineNet, normalization: dict[str, Any], runtime: RuntimeConfig | None = None) -> None:
        self.net = net.eval()
        self.config = net.config
        self._state_mean = np.asarray(normalization["state"]["mean"], np.float32)
        self._state_std = np.asarray(normalization["state"]["std"], np.float32)
        self._act_mean = np.asarray(normalization["action"]["mean"], np.float32)
        self._act_std = np.asarray(normalization["action"]["std"], np.float32)
        self.task: str | None = None
        self.plan = None  # the baseline does not plan
        self.runtime = ChunkRuntime(self._predict, runtime or RuntimeConfig(n_action_steps=self.config.chunk_size))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], **runtime: Any) -> BaselinePolicy:
        from safetensors.torch import load_file

        folder = Path(folder)
        config = BaselineConfig.load(folder)
        net = BaselineNet(config)
        state = load_file(str(folder / "model.safetensors"))
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"{folder}/model.safetensors does not match config.json (missing {missing}, "
                             f"unexpected {unexpected})")
        normalization = json.loads((folder / "normalization.json").read_text())
        cfg = RuntimeConfig(**{"n_action_steps": config.chunk_size, **runtime}) if runtime else None
        return cls(net, normalization, cfg)

    @property
    def cameras(self) -> tuple[str, ...]:
        return (self.config.camera,)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def runtime_stats(self) -> Any:
        return self.runtime.stats

    def bind(self, world: Any, instance: Any) -> None:
        self.set_task(instance.task)

    def set_task(self, task: str) -> None:
        if task not in self.config.tasks:
            raise ModelError(f"the baseline was trained on tasks {list(self.config.tasks)}, not {task!r}")
        self.task = task

    def reset(self) -> None:
        self.runtime.reset()

    def act(self, observation: Observation) -> np.ndarray:
        if self.task is None:
            raise ConfigError("BaselinePolicy needs its task: call set_task(name) (keystone eval / run_episode "
                              "do it through bind)")
        return self.runtime.act(observation)

    def _predict(self, observation: Observation) -> ActionChunk:
        img = observation.images.get(self.config.camera)
        size = self.config.image_size
        if img is None or img.shape != (size, size, 3):
            raise ModelError(f"the baseline needs camera {self.config.camera!r} at {size}x{size}; got "
                             f"{None if img is None else list(img.shape)}")
        state = (observation.state - self._state_mean) / self._state_std
        with torch.inference_mode():
            z = self.net(torch.from_numpy(img[None].copy()), torch.from_numpy(state[None].astype(np.float32)),
                         self.net.task_onehot([self.task]))[0].numpy()
        actions = z * self._act_std + self._act_mean
        actions[:, 6] = np.clip(actions[:, 6], 0.0, 1.0)
        return ActionChunk(actions.astype(np.float32))
