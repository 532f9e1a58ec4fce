"""State/action normalisation saved beside the weights (``normalization.json``), and the action-bin codec.

The statistics come from the episode store (`store.normalization()`: per-dimension mean/std/min/max of state
and action) and are copied into every checkpoint, never recomputed at load time. ``mode`` says how the data
loader normalised: ``mean_std`` (z = (x - mean) / std) or ``min_max`` (z = 2 (x - min) / (max - min) - 1).

`ActionBins` maps normalised actions to `n` uniform bins over [-range, range] (RT-2 / OpenVLA style) and back
to bin centres. This module must never import torch (numpy only) so the runtime can un-normalise cheaply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keystone_vla.errors import ModelError

NORMALIZATION_FILE = "normalization.json"
MODES = ("mean_std", "min_max")
_EPS = 1e-6


@dataclass(frozen=True)
class Stats:
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str, dim: int | None = None) -> Stats:
        try:
            arrays = {k: np.asarray(d[k], dtype=np.float64).reshape(-1) for k in ("mean", "std", "min", "max")}
        except KeyError as exc:
            raise ModelError(f"{NORMALIZATION_FILE}: {name} lacks {exc.args[0]!r} (need mean, std, min, max)") from exc
        sizes = {a.size for a in arrays.values()}
        if len(sizes) != 1 or (dim is not None and sizes != {dim}):
            raise ModelError(
                f"{NORMALIZATION_FILE}: {name} statistics have sizes {sorted(sizes)}, the model expects {dim}; "
                "the checkpoint's normalization.json does not match its config.json"
            )
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise ModelError(f"{NORMALIZATION_FILE}: {name} statistics contain NaN or inf")
        return cls(**arrays)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("mean", "std", "min", "max")}


@dataclass(frozen=True)
class Normalizer:
    state: Stats
    action: Stats
    mode: str = "mean_std"

    @classmethod
    def from_dict(cls, d: dict[str, Any], state_dim: int | None = None, action_dim: int | None = None) -> Normalizer:
        mode = d.get("mode", "mean_std")
        if mode not in MODES:
            raise ModelError(f"{NORMALIZATION_FILE}: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        for key in ("state", "action"):
            if key not in d:
                raise ModelError(f"{NORMALIZATION_FILE} lacks the {key!r} statistics")
        return cls(Stats.from_dict(d["state"], "state", state_dim), Stats.from_dict(d["action"], "action", action_dim), mode)

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> Normalizer:
        def s(n: int) -> Stats:
            return Stats(np.zeros(n), np.ones(n), -np.ones(n), np.ones(n))

        return cls(s(state_dim), s(action_dim), "mean_std")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "state": self.state.to_dict(), "action": self.action.to_dict()}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / NORMALIZATION_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path, state_dim: int, action_dim: int) -> Normalizer:
        path = Path(folder) / NORMALIZATION_FILE
        if not path.is_file():
            raise ModelError(f"{path} is missing; a checkpoint folder needs {NORMALIZATION_FILE}")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path} is not valid JSON ({exc})") from exc
        return cls.from_dict(d, state_dim, action_dim)

    # ---- transforms (float32 in, float32 out) ------------------------------------------------------------
    def _fwd(self, x: np.ndarray, s: Stats) -> np.ndarray:
        if self.mode == "mean_std":
            return ((x - s.mean) / np.maximum(s.std, _EPS)).astype(np.float32)
        return (2.0 * (x - s.min) / np.maximum(s.max - s.min, _EPS) - 1.0).astype(np.float32)

    def _inv(self, z: np.ndarray, s: Stats) -> np.ndarray:
        if self.mode == "mean_std":
            return (z * np.maximum(s.std, _EPS) + s.mean).astype(np.float32)
        return ((z + 1.0) / 2.0 * np.maximum(s.max - s.min, _EPS) + s.min).astype(np.float32)

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return self._fwd(np.asarray(state, dtype=np.float64), self.state)

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        return self._fwd(np.asarray(action, dtype=np.float64), self.action)

    def unnormalize_action(self, z: np.ndarray) -> np.ndarray:
        return self._inv(np.asarray(z, dtype=np.float64), self.action)


@dataclass(frozen=True)
class ActionBins:
    """Uniform bins over [-range, range] for normalised actions."""

    n: int = 256
    range: float = 3.0

    def encode(self, z: np.ndarray) -> np.ndarray:
        """Normalised actions -> int64 bin indices in [0, n)."""
        z = np.clip(np.asarray(z, dtype=np.float64), -self.range, self.range)
        idx = np.floor((z + self.range) / (2 * self.range) * self.n).astype(np.int64)
        return np.clip(idx, 0, self.n - 1)

    def decode(self, idx: np.ndarray) -> np.ndarray:
        """Bin indices -> bin centres (float32)."""
        idx = np.asarray(idx, dtype=np.float64)
        return ((idx + 0.5) / self.n * 2 * self.range - self.range).astype(np.float32)
