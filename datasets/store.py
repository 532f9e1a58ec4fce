"""The episode store: demonstrations from the simulator and from real robot logs, in one zarr v3 folder.

Schema (format ``keystone-episodes/1``)::

    <store>/zarr.json                 root group; attrs: format, created
    <store>/.lock                     lock file: publishing an episode takes an exclusive flock on it
    <store>/.partial/                 episodes being written (or left by a killed writer; never read)
    <store>/normalization.json        state/action statistics, see `EpisodeStore.normalization`
    <store>/episode_NNNNNN/           one group per episode, N = 0, 1, 2 ... (gaps after a repair)
        attrs: task, instruction, plan (Plan.to_json(); steps empty for logs without a plan), split
               (seen/unseen/real), success, seed (int or null), robot, source ({kind: sim} or
               {kind: bag, bag, topics, ...}), fps, action_space (ee_delta | joint_position | ...),
               complete (true), length T, cameras, image_codec, checksums {array: crc32}, state_dim, action_dim
        state      float32 [T, S]   arm joints (+ gripper opening in [0, 1] for sim arms)
        action     float32 [T, A]   sim: 7-D EE delta (dx dy dz rx ry rz gripper); bags: the mapped command
        timestamp  float64 [T]      seconds from the episode's first tick, strictly increasing
        plan_step  int32 [T]        index of the plan step executed at tick t
        ee_pose    float32 [T, 7]   xyz + quaternion xyzw, base frame (sim; absent where a log has none)
        step_objects float32 [T, 14] the current plan step's first and last object as the step began: x y z yaw
                                    size_x size_y size_z each, base frame (sim oracle episodes; optional)
        images/<cam>  vlen-bytes [T]  frame t of camera <cam>, uint8 [H, W, 3] RGB encoded with the array's
                                      `codec` attr (default QOI lossless, chosen by measurement: see
                                      `keystone_vla.datasets.image_codec`); attr frame_shape = [H, W, 3]

Why frames are encoded blobs and not a uint8 [T, H, W, 3] array: rendered frames barely compress with zarr's
default zstd when stored raw per frame chunk, zarr has no image codec in the v3 core, and a training loader
needs random single frames. One blob per frame lets a loader cache the encoded episode (a few KB per frame)
and decode only the frames it samples; `Episode.images(cam)` still returns the uint8 [T, H, W, 3] array.

Atomicity and concurrency: see `keystone_vla.datasets.writer`. Writers in several processes can append to
one store at once: each builds its episode in a uniquely named folder and publishes it with one rename
under the lock, so numbering never collides and readers never see half an episode.

This module must never modify an existing episode: episodes are immutable once published (only
`keystone data verify --repair` removes bad ones).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from keystone_vla.datasets.image_codec import DEFAULT_CODEC, decode_frame
from keystone_vla.datasets.writer import EpisodeData, EpisodeWriter, write_episode
from keystone_vla.errors import DatasetError
from keystone_vla.types import Plan

STORE_FORMAT = "keystone-episodes/1"
EPISODE_RE = re.compile(r"^episode_(\d{6,})$")
STEP_ARRAYS = ("state", "action", "timestamp", "plan_step")
NORMALIZATION_FILE = "normalization.json"


class Episode:
    """Read access to one published episode (arrays are read on demand; attrs are cached)."""

    def __init__(self, path: Path) -> None:
        import zarr

        self.path = path
        self.name = path.name
        try:
            self._group = zarr.open_group(str(path), mode="r")
            self.attrs: dict[str, Any] = dict(self._group.attrs)
        except Exception as exc:
            raise DatasetError(f"{self.name} cannot be opened ({exc}); run keystone data verify --repair") from exc
        if not self.attrs.get("complete"):
            raise DatasetError(f"{self.name} is incomplete; run keystone data verify --repair")

    @property
    def length(self) -> int:
        return int(self.attrs["length"])

    @property
    def cameras(self) -> list[str]:
        return list(self.attrs.get("cameras", []))

    @property
    def plan(self) -> Plan:
        return Plan.from_json(self.attrs["plan"])

    def has(self, name: str) -> bool:
        return name in self._group

    def array(self, name: str) -> np.ndarray:
        """A whole per-step array (state, action, timestamp, plan_step, ee_pose, step_objects)."""
        try:
            return np.asarray(self._group[name][...])
        except KeyError:
            raise DatasetError(f"{self.name} has no array {name!r}; run keystone data verify") from None

    def encoded_frames(self, cam: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Encoded frames start..stop-1 of camera `cam` (decode with `decode_frame(blob, image_codec(cam))`)."""
        if cam not in self.cameras:
            raise DatasetError(f"{self.name} has no camera {cam!r}; cameras: {self.cameras}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [bytes(b) for b in self._group[f"images/{cam}"][start:stop]]

    def image_codec(self, cam: str) -> str:
        return str(self._group[f"images/{cam}"].attrs.get("codec", self.attrs.get("image_codec", DEFAULT_CODEC)))

    def images(self, cam: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Decoded frames: uint8 [n, H, W, 3]."""
        codec = self.image_codec(cam)
        return np.stack([decode_frame(b, codec) for b in self.encoded_frames(cam, start, stop)])

    def step_text(self, t: int, plan_step: np.ndarray | None = None) -> str:
        """The imperative text of the plan step executed at tick t (the instruction when there is none)."""
        steps = json.loads(self.attrs["plan"]).get("steps", [])
        idx = int((plan_step if plan_step is not None else self.array("plan_step"))[t])
        if 0 <= idx < len(steps) and steps[idx].get("text"):
            return str(steps[idx]["text"])
        return str(self.attrs["instruction"])


class EpisodeStore:
    """A folder of episodes (see the module docstring for the schema).

    mode ``"r"`` opens an existing store read-only; ``"a"`` (default) opens or creates one for appending.
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a") -> None:
        if mode not in ("r", "a"):
            raise DatasetError(f"EpisodeStore mode must be 'r' or 'a', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        meta = self.path / "zarr.json"
        if not meta.exists():
            if mode == "r":
                raise DatasetError(f"no episode store at {self.path} (no zarr.json); create one with "
                                   "`keystone data collect` or `keystone data ingest-bag`")
            self._create()
        self._check_format()

    # -- layout ------------------------------------------------------------------------------------------
    @property
    def partial_dir(self) -> Path:
        return self.path / ".partial"

    def _create(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise DatasetError(f"{self.path} is a file, not an episode store folder")
        self.path.mkdir(parents=True, exist_ok=True)
        with self.lock():
            if (self.path / "zarr.json").exists():  # another process won the race to create it
                return
            if any(p.name not in (".lock", ".partial") for p in self.path.iterdir()):
                raise DatasetError(f"{self.path} exists, is not empty and is not an episode store; pick a new --out")
            meta = {"zarr_format": 3, "node_type": "group",
                    "attributes": {"format": STORE_FORMAT, "created": time.time()}}
            _atomic_write_text(self.path / "zarr.json", json.dumps(meta))

    def _check_format(self) -> None:
        try:
            meta = json.loads((self.path / "zarr.json").read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{self.path}/zarr.json is unreadable ({exc})") from exc
        fmt = meta.get("attributes", {}).get("format")
        if fmt != STORE_FORMAT:
            raise DatasetError(f"{self.path} is a zarr group but not a Keystone episode store "
                               f"(format {fmt!r}, expected {STORE_FORMAT!r})")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive inter-process lock on the store (flock on ``<store>/.lock``)."""
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- reading -----------------------------------------------------------------------------------------
    def episode_names(self) -> list[str]:
        """Names of published episodes, in index order (includes corrupt ones; `verify` finds those)."""
        names = [p.name for p in self.path.iterdir() if EPISODE_RE.match(p.name) and p.is_dir()]
        return sorted(names, key=lambda n: int(EPISODE_RE.match(n).group(1)))

    def __len__(self) -> int:
        return len(self.episode_names())

    def episode(self, name: str | int) -> Episode:
        if isinstance(name, int):
            name = f"episode_{name:06d}"
        path = self.path / name
        if not path.is_dir():
            raise DatasetError(f"{self.path} has no episode {name!r}")
        return Episode(path)

    def episodes(self) -> Iterator[Episode]:
        for name in self.episode_names():
            yield self.episode(name)

    # -- writing -----------------------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.mode == "r":
            raise DatasetError(f"{self.path} was opened read-only; open it with mode='a' to write")

    def begin_episode(self, attrs: dict[str, Any], codec: str = DEFAULT_CODEC) -> EpisodeWriter:
        """Start streaming an episode; use as ``with store.begin_episode(attrs) as w: w.add_step(...)``."""
        self._require_writable()
        return EpisodeWriter(self, attrs, codec)

    def write_episode(self, data: EpisodeData, codec: str = DEFAULT_CODEC) -> str:
        """Write a whole in-memory episode atomically; returns its name."""
        self._require_writable()
        return write_episode(self, data, codec)

    def _publish(self, tmp: Path) -> str:
        """Rename a finished temporary episode folder to the next free index (called by EpisodeWriter)."""
        with self.lock():
            names = self.episode_names()
            index = int(EPISODE_RE.match(names[-1]).group(1)) + 1 if names else 0
            while True:
                final = self.path / f"episode_{index:06d}"
                try:
                    os.rename(tmp, final)  # fails if `final` exists and is not empty: never overwrite
                    break
                except OSError:
                    if not final.exists():
                        raise
                    index += 1
            _fsync_dir(self.path)
        return final.name

    def remove_episode(self, name: str) -> None:
        """Delete one episode folder (used only by `verify --repair`)."""
        import shutil

        self._require_writable()
        if not (EPISODE_RE.match(name) or name.startswith(".partial/")):
            raise DatasetError(f"refusing to remove {name!r}: not an episode of this store")
        with self.lock():
            shutil.rmtree(self.path / name)

    # -- statistics --------------------------------------------------------------------------------------
    def normalization(self, recompute: bool = False) -> dict[str, Any]:
        """Per-dimension mean/std/min/max of `state` and `action` over all complete episodes.

        Computed once and cached in ``<store>/normalization.json``; recomputed only when the set of episodes
        changed (or `recompute`). Returns {"episodes": [...], "steps": N, "state": {"mean": [...], ...},
        "action": {...}}; std is floored at 1e-6 so dividing by it is safe.
        """
        path = self.path / NORMALIZATION_FILE
        names = self.episode_names()
        # names alone are not enough: a repaired store reuses the index of a removed last episode
        fingerprint = _fingerprint(self.path, names)
        if path.exists() and not recompute:
            try:
                cached = json.loads(path.read_text())
                if cached.get("episodes") == names and cached.get("fingerprint") == fingerprint:
                    return cached
            except ValueError:
                pass
        stats = compute_normalization([self.episode(n) for n in names])
        stats["episodes"] = names
        stats["fingerprint"] = fingerprint
        if self.mode == "a":
            with self.lock():
                _atomic_write_text(path, json.dumps(stats))
        return stats


def _fingerprint(root: Path, names: list[str]) -> str:
    import hashlib

    h = hashlib.sha1()
    for n in names:
        try:
            h.update(f"{n}:{(root / n / 'zarr.json').stat().st_mtime_ns};".encode())
        except OSError:
            h.update(f"{n}:missing;".encode())
    return h.hexdigest()


def compute_normalization(episodes: list[Episode]) -> dict[str, Any]:
    """Statistics of `state` and `action` over `episodes` (see `EpisodeStore.normalization`)."""
    if not episodes:
        raise DatasetError("cannot compute normalization statistics of an empty store; add episodes first")
    out: dict[str, Any] = {"steps": int(sum(e.length for e in episodes))}
    for key in ("state", "action"):
        rows = [e.array(key) for e in episodes]
        dims = {r.shape[1] for r in rows}
        if len(dims) != 1:
            raise DatasetError(f"episodes disagree on {key} size {sorted(dims)}; keep one robot per store")
        x = np.concatenate(rows).astype(np.float64)
        out[key] = {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-6).tolist(),
                    "min": x.min(0).tolist(), "max": x.max(0).tolist()}
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
