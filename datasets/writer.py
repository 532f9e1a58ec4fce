"""Writing one episode into an `EpisodeStore` atomically.

An episode is built in a private temporary zarr group under ``<store>/.partial/`` and becomes visible only
when it is complete: its arrays, attributes and checksums are written and flushed, then, under the store's
lock file, the folder is renamed to the next free ``episode_NNNNNN``. A rename is atomic on POSIX, so readers
see either the whole episode or nothing. A writer killed mid-episode (kill -9, power loss) leaves its folder in
``.partial/`` with ``complete: false``; `keystone data verify` names it and ``--repair`` removes it.
An exception (including Ctrl-C) inside ``with store.begin_episode(...)`` removes the partial folder itself.

Frames are encoded as they arrive (`add_step`), so memory grows by a few KB per step, not by raw frames.
This module must never rename into, delete or modify an episode it did not create.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keystone_vla.datasets.image_codec import DEFAULT_CODEC, encode_frame
from keystone_vla.errors import DatasetError

if TYPE_CHECKING:
    from keystone_vla.datasets.store import EpisodeStore

#: attributes every episode carries (see the schema in keystone_vla.datasets.store)
REQUIRED_ATTRS = ("task", "instruction", "plan", "split", "success", "seed", "robot", "source")
OPTIONAL_ARRAYS = ("ee_pose", "step_objects")  # per-step vectors an episode has every step or never
IMAGE_CHUNK = 32  # frames per stored image chunk: one file per 32 frames, ~20-50 KB each


def checksum(values: np.ndarray | list[bytes]) -> int:
    """CRC32 of a numeric array's bytes or of a sequence of encoded frames (length-prefixed)."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return zlib.crc32(np.ascontiguousarray(values).tobytes())
    crc = 0
    for blob in values:
        crc = zlib.crc32(len(blob).to_bytes(8, "little"), crc)
        crc = zlib.crc32(bytes(blob), crc)
    return crc


@dataclass
class EpisodeData:
    """A whole episode in memory, e.g. from the simulator or a bag (shapes: T steps).

    images[cam] uint8 [T, H, W, 3]; state float32 [T, S]; action float32 [T, A]; timestamp float64 [T] s;
    plan_step int32 [T]; ee_pose float32 [T, 7] or None; step_objects float32 [T, 14] or None (the current plan
    step's first and last object at the step's start: x, y, z, yaw, size x/y/z each, cell frame).
    """

    task: str
    instruction: str
    plan: str
    split: str
    success: bool
    seed: int | None
    robot: str
    source: dict[str, Any]
    state: np.ndarray
    action: np.ndarray
    timestamp: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)
    plan_step: np.ndarray | None = None
    ee_pose: np.ndarray | None = None
    step_objects: np.ndarray | None = None
    fps: float = 10.0
    action_space: str = "ee_delta"
    extra: dict[str, Any] = field(default_factory=dict)

    def attrs(self) -> dict[str, Any]:
        return {
            "task": self.task, "instruction": self.instruction, "plan": self.plan, "split": self.split,
            "success": bool(self.success), "seed": None if self.seed is None else int(self.seed),
            "robot": self.robot, "source": self.source, "fps": float(self.fps),
            "action_space": self.action_space, **self.extra,
        }

    @classmethod
    def from_record(cls, record: Any, source: dict[str, Any] | None = None, fps: float = 10.0) -> EpisodeData:
        """Convert a `keystone_vla.sim.rollout.EpisodeRecord` (duck-typed: sim is not imported here)."""
        return cls(
            task=record.task, instruction=record.instruction, plan=record.plan.to_json(), split=record.split,
            success=bool(record.success), seed=int(record.seed), robot=record.arm,
            source=source or {"kind": "sim"}, state=record.state, action=record.action,
            timestamp=record.timestamp, images=dict(record.frames), plan_step=record.plan_step,
            ee_pose=record.ee_pose, step_objects=getattr(record, "step_objects", None), fps=fps,
            action_space="ee_delta",
            extra={"interventions": int(getattr(record, "interventions", 0)), "steps": int(record.steps)},
        )


class EpisodeWriter:
    """Streams one episode into a temporary group; `commit` publishes it atomically.

    Use as a context manager: a clean exit commits, an exception aborts (removes the temporary folder).
    `attrs` may be updated until commit (e.g. ``writer.attrs["success"] = True`` once it is known).
    """

    def __init__(self, store: EpisodeStore, attrs: dict[str, Any], codec: str = DEFAULT_CODEC) -> None:
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise DatasetError(f"episode attributes missing {missing}; every episode needs {list(REQUIRED_ATTRS)}")
        self.store = store
        self.attrs = dict(attrs)
        self.codec = codec
        host = socket.gethostname().replace("-", "_")
        self.tmp = store.partial_dir / f"episode-{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._frames: dict[str, list[bytes]] = {}
        self._frame_shape: dict[str, tuple[int, ...]] = {}
        self._steps: dict[str, list[np.ndarray]] = {"state": [], "action": [], "timestamp": [], "plan_step": []}
        self._optional: dict[str, list[np.ndarray]] = {name: [] for name in OPTIONAL_ARRAYS}
        self._done = False
        store.partial_dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        # Marked partial from the first byte on, so a killed writer's leftovers are recognisable.
        header = {"zarr_format": 3, "node_type": "group",
                  "attributes": {**_jsonable(self.attrs), "complete": False, "writer_pid": os.getpid(),
                                 "writer_host": socket.gethostname(), "started": time.time()}}
        (self.tmp / "zarr.json").write_text(json.dumps(header))

    def add_step(self, images: dict[str, np.ndarray], state: np.ndarray, action: np.ndarray, timestamp: float,
                 plan_step: int = 0, ee_pose: np.ndarray | None = None,
                 step_objects: np.ndarray | None = None) -> None:
        """Append one control tick: images[cam] uint8 [H, W, 3], state [S], action [A] (optional: ee_pose [7],
        step_objects [14]; give each every step or never)."""
        if self._done:
            raise DatasetError("this episode was already committed or aborted; start a new one")
        if self._frames and set(images) != set(self._frames):
            raise DatasetError(f"step has cameras {sorted(images)}, episode has {sorted(self._frames)}")
        for cam, frame in images.items():
            if cam not in self._frames:
                if self._steps["state"]:
                    raise DatasetError(f"camera {cam!r} appeared after step 0; every step needs the same cameras")
                self._frames[cam] = []
                self._frame_shape[cam] = tuple(np.shape(frame))
            elif tuple(np.shape(frame)) != self._frame_shape[cam]:
                raise DatasetError(f"camera {cam!r} frame shape {np.shape(frame)} != {self._frame_shape[cam]}")
            self._frames[cam].append(encode_frame(frame, self.codec))
        self._steps["state"].append(np.asarray(state, np.float32))
        self._steps["action"].append(np.asarray(action, np.float32))
        self._steps["timestamp"].append(np.float64(timestamp))
        self._steps["plan_step"].append(np.int32(plan_step))
        for name, value in (("ee_pose", ee_pose), ("step_objects", step_objects)):
            if value is not None:
                self._optional[name].append(np.asarray(value, np.float32))

    def __len__(self) -> int:
        return len(self._steps["state"])

    def commit(self) -> str:
        """Write arrays + attrs, flush, and rename into the store; returns the episode name."""
        import zarr
        import zarr.dtype

        if self._done:
            raise DatasetError("this episode was already committed or aborted")
        n = len(self)
        if n == 0:
            self.abort()
            raise DatasetError("refusing to commit an empty episode (no steps were added)")
        for name, rows in self._optional.items():
            if rows and len(rows) != n:
                raise DatasetError(f"{name} given for {len(rows)} of {n} steps; give it every step or never")
        arrays = {
            "state": _stack("state", self._steps["state"]),
            "action": _stack("action", self._steps["action"]),
            "timestamp": np.asarray(self._steps["timestamp"], np.float64),
            "plan_step": np.asarray(self._steps["plan_step"], np.int32),
        }
        arrays.update({name: _stack(name, rows) for name, rows in self._optional.items() if rows})
        if np.any(np.diff(arrays["timestamp"]) <= 0):
            raise DatasetError("episode timestamps must increase strictly from step to step")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that vlen-bytes is not in the v3 core spec yet
            group = zarr.open_group(str(self.tmp), mode="w")
            for name, arr in arrays.items():
                z = group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape)
                z[...] = arr
            for cam, blobs in self._frames.items():
                z = group.create_array(f"images/{cam}", shape=(n,), dtype=zarr.dtype.VariableLengthBytes(),
                                       chunks=(min(n, IMAGE_CHUNK),), compressors=None,
                                       attributes={"codec": self.codec, "frame_shape": list(self._frame_shape[cam])})
                column = np.empty(n, dtype=object)
                column[:] = blobs
                z[:] = column
        sums = {name: checksum(arr) for name, arr in arrays.items()}
        sums.update({f"images/{cam}": checksum(blobs) for cam, blobs in self._frames.items()})
        attrs = {**_jsonable(self.attrs), "complete": True, "length": n, "cameras": sorted(self._frames),
                 "image_codec": self.codec, "checksums": sums, "state_dim": int(arrays["state"].shape[1]),
                 "action_dim": int(arrays["action"].shape[1]), "written": time.time()}
        group.attrs.put(attrs)
        _fsync_tree(self.tmp)
        name = self.store._publish(self.tmp)
        self._done = True
        return name

    def abort(self) -> None:
        """Throw the partial episode away."""
        self._done = True
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_episode(store: EpisodeStore, data: EpisodeData, codec: str = DEFAULT_CODEC) -> str:
    """Write a whole in-memory episode atomically; returns its name (``episode_NNNNNN``)."""
    n = len(data.state)
    lengths = {"action": len(data.action), "timestamp": len(data.timestamp),
               **{f"images/{c}": len(v) for c, v in data.images.items()}}
    if data.plan_step is not None:
        lengths["plan_step"] = len(data.plan_step)
    for name in OPTIONAL_ARRAYS:
        if getattr(data, name) is not None:
            lengths[name] = len(getattr(data, name))
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise DatasetError(f"episode arrays disagree on length: state has {n} steps but {bad}")
    plan_step = data.plan_step if data.plan_step is not None else np.zeros(n, np.int32)
    with EpisodeWriter(store, data.attrs(), codec) as w:
        for t in range(n):
            w.add_step({c: v[t] for c, v in data.images.items()}, data.state[t], data.action[t],
                       float(data.timestamp[t]), int(plan_step[t]),
                       None if data.ee_pose is None else data.ee_pose[t],
                       None if data.step_objects is None else data.step_objects[t])
        return w.commit()


def _stack(name: str, rows: list[np.ndarray]) -> np.ndarray:
    shapes = {r.shape for r in rows}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise DatasetError(f"every step's {name} must be a 1-D vector of one length, got shapes {sorted(shapes)}")
    return np.stack(rows)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` so a power loss cannot publish half-written chunks."""
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
