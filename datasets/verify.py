"""Checking an episode store: find partial and corrupt episodes, name them, and (only when asked) remove them.

`verify_store` reads every episode in full: metadata, required attributes, array shapes and lengths, CRC32
checksums recorded at write time (a missing or truncated chunk file reads back as fill values in zarr, so
only the checksum catches it) and a decode of every image. Leftovers of killed writers in ``.partial/`` are
reported as partial; one whose writer process is still alive on this host is reported but never removed.
`store_info` summarises a store for `keystone data info`.

This module must never modify a good episode; `repair` removes only the entries a report names as bad.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keystone_vla.datasets.image_codec import decode_frame
from keystone_vla.datasets.store import STEP_ARRAYS, Episode, EpisodeStore
from keystone_vla.datasets.writer import OPTIONAL_ARRAYS, REQUIRED_ATTRS, checksum
from keystone_vla.errors import DatasetError


@dataclass
class VerifyReport:
    episodes: int
    good_episodes: int
    bad: list[dict[str, Any]] = field(default_factory=list)  # {episode, problem, removable}

    def summary(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "good_episodes": self.good_episodes,
                "bad": [{"episode": b["episode"], "problem": b["problem"]} for b in self.bad]}


def check_episode(episode: Episode) -> str | None:
    """The first problem found in a published episode, or None when it is intact."""
    attrs = episode.attrs
    missing = [k for k in (*REQUIRED_ATTRS, "length", "checksums") if k not in attrs]
    if missing:
        return f"missing attributes {missing}"
    n = int(attrs["length"])
    sums = attrs["checksums"]
    names = list(STEP_ARRAYS) + [a for a in OPTIONAL_ARRAYS if episode.has(a)]
    for name in names:
        if not episode.has(name):
            return f"missing array {name!r}"
        try:
            arr = episode.array(name)
        except Exception as exc:  # corrupt chunk bytes surface as codec errors
            return f"array {name!r} unreadable ({type(exc).__name__}: {exc})"
        if len(arr) != n:
            return f"array {name!r} has {len(arr)} steps, attrs say {n}"
        if sums.get(name) != checksum(arr):
            return f"array {name!r} fails its checksum (missing or damaged chunk)"
    for cam in episode.cameras:
        try:
            blobs = episode.encoded_frames(cam)
        except Exception as exc:
            return f"camera {cam!r} unreadable ({type(exc).__name__}: {exc})"
        if len(blobs) != n:
            return f"camera {cam!r} has {len(blobs)} frames, attrs say {n}"
        if sums.get(f"images/{cam}") != checksum(blobs):
            return f"camera {cam!r} fails its checksum (missing or damaged chunk)"
        codec = episode.image_codec(cam)
        shape = None
        for t, blob in enumerate(blobs):
            try:
                frame = decode_frame(blob, codec)
            except DatasetError as exc:
                return f"camera {cam!r} frame {t}: {exc}"
            shape = shape or frame.shape
            if frame.shape != shape:
                return f"camera {cam!r} frame {t} has shape {frame.shape}, frame 0 has {shape}"
    ts = episode.array("timestamp")
    if n > 1 and np.any(np.diff(ts) <= 0):
        return "timestamps are not strictly increasing"
    return None


def verify_store(store: EpisodeStore) -> VerifyReport:
    """Check every published episode and every leftover in ``.partial/``."""
    names = store.episode_names()
    bad: list[dict[str, Any]] = []
    for name in names:
        try:
            problem = check_episode(store.episode(name))
        except DatasetError as exc:
            problem = str(exc).split(";")[0].removeprefix(f"{name} ")
        except Exception as exc:  # unreadable metadata and the like
            problem = f"cannot be read ({type(exc).__name__}: {exc})"
        if problem:
            bad.append({"episode": name, "problem": problem, "removable": True})
    partial = sorted(store.partial_dir.iterdir()) if store.partial_dir.exists() else []
    for path in partial:
        alive = _writer_alive(path.name)
        what = "partial episode (writer still running)" if alive else "partial episode (its writer stopped before committing)"
        started = _partial_attr(path, "started")
        if started is not None and not alive:
            what += f", started at unix time {started:.0f}"
        bad.append({"episode": f".partial/{path.name}", "problem": what, "removable": not alive})
    good = len(names) - sum(1 for b in bad if not b["episode"].startswith(".partial/"))
    return VerifyReport(episodes=len(names) + len(partial), good_episodes=good, bad=bad)


def repair(store: EpisodeStore, report: VerifyReport) -> list[str]:
    """Remove the removable bad entries of `report`; returns what was removed."""
    removed = []
    for entry in report.bad:
        if entry["removable"]:
            store.remove_episode(entry["episode"])
            removed.append(entry["episode"])
    return removed


def _writer_alive(tmp_name: str) -> bool:
    """Whether the process that made a .partial folder still runs (names are episode-<host>-<pid>-<uuid>)."""
    parts = tmp_name.split("-")
    if len(parts) != 4 or parts[1] != socket.gethostname().replace("-", "_"):
        return False
    try:
        pid = int(parts[2])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:  # a killed writer can linger as a zombie until its parent reaps it: that is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _partial_attr(path: Any, key: str) -> Any:
    try:
        return json.loads((path / "zarr.json").read_text())["attributes"].get(key)
    except (OSError, ValueError, KeyError):
        return None


def _dir_bytes(path: Any) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def store_info(store: EpisodeStore, stats: bool = True) -> dict[str, Any]:
    """Episodes, steps, tasks, splits, robots, cameras, sizes and per-field statistics of a store."""
    tasks: dict[str, int] = {}
    splits: dict[str, int] = {}
    robots: dict[str, int] = {}
    cameras: dict[str, list[int]] = {}
    steps = 0
    unreadable = []
    image_bytes = 0
    good = []
    for name in store.episode_names():
        try:
            ep = store.episode(name)
        except DatasetError:
            unreadable.append(name)
            continue
        good.append(ep)
        steps += ep.length
        for key, counter in (("task", tasks), ("split", splits), ("robot", robots)):
            counter[str(ep.attrs[key])] = counter.get(str(ep.attrs[key]), 0) + 1
        for cam in ep.cameras:
            shape = ep._group[f"images/{cam}"].attrs.get("frame_shape")
            cameras[cam] = list(shape) if shape else []
            image_bytes += _dir_bytes(ep.path / "images" / cam)
    total = _dir_bytes(store.path)
    schema: dict[str, Any] = {}
    if good:  # the layout of one episode, as stored (see keystone_vla.datasets.store for the full schema)
        ep = good[0]
        for key in (*STEP_ARRAYS, *OPTIONAL_ARRAYS):
            if ep.has(key):
                arr = ep._group[key]
                schema[key] = f"{arr.dtype} [T, {', '.join(str(d) for d in arr.shape[1:])}]".replace(", ]", "]")
        for cam in ep.cameras:
            shape = ep._group[f"images/{cam}"].attrs.get("frame_shape", [])
            schema[f"images/{cam}"] = f"{ep.image_codec(cam)} frames of uint8 [T, {', '.join(map(str, shape))}]"
        schema["attrs"] = sorted(k for k in ep.attrs if k != "checksums")
    info: dict[str, Any] = {
        "store": str(store.path), "format": "keystone-episodes/1 (zarr v3)", "episodes": len(good),
        "unreadable_episodes": unreadable, "steps": steps, "tasks": tasks, "splits": splits, "robots": robots,
        "cameras": cameras, "schema": schema, "bytes_total": total, "bytes_images": image_bytes,
        "bytes_per_step": round(total / steps, 1) if steps else 0.0,
    }
    if stats and good:
        try:
            norm = store.normalization()
        except DatasetError as exc:
            info["stats"] = f"unavailable: {exc}"
            return info
        info["stats"] = {k: {s: [round(v, 4) for v in norm[k][s]] for s in ("mean", "std", "min", "max")}
                         for k in ("state", "action")}
    return info
