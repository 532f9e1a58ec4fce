"""Export an episode store as a LeRobotDataset v3.0 folder, so the data works with LeRobot tooling.

Layout written (one chunk, one file each; LeRobot's limits are 1000 files per chunk, 100 MB per data file,
500 MB per video file, far above what this project produces)::

    meta/info.json                        codebase_version v3.0, fps, features, path templates
    meta/stats.json                       per feature: min, max, mean, std, count (images: per channel, 0..1)
    meta/tasks.parquet                    task string (pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet   per episode: length, tasks, data/video offsets, stats
    data/chunk-000/file-000.parquet       per frame: observation.state, action, timestamp, frame_index,
                                          episode_index, index, task_index, plan_step
    videos/observation.images.<cam>/chunk-000/file-000.mp4   all episodes back to back, H.264

The LeRobot "task" of an episode is its instruction (the language input a VLA is trained on). Timestamps
are frame_index / fps, as LeRobot requires for video lookup. Video is lossy: the default (crf 10, yuv444p,
a keyframe every 2 frames like LeRobot's encoder) keeps the mean absolute pixel error well under 1 on
rendered scenes; ``crf=0`` is near-lossless (only the RGB <-> YUV rounding remains).

This module must never write into the source store; it refuses to overwrite a non-empty output folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from keystone_vla.datasets.store import EpisodeStore
from keystone_vla.errors import DatasetError

CODEBASE_VERSION = "v3.0"
CHUNK_FILE = "chunk-000/file-000"


def _video_key(cam: str) -> str:
    return f"observation.images.{cam}"


def _stats(x: np.ndarray) -> dict[str, list[float] | list[int]]:
    x = x.astype(np.float64)
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [int(len(x))]}


def _image_stats(frames: np.ndarray) -> dict[str, Any]:
    """Per-channel stats of uint8 [N, H, W, 3] frames, in LeRobot's [3, 1, 1] shape and 0..1 range."""
    x = frames.reshape(-1, 3).astype(np.float64) / 255.0

    def c11(v: np.ndarray) -> list:
        return v.reshape(3, 1, 1).tolist()

    return {"min": c11(x.min(0)), "max": c11(x.max(0)), "mean": c11(x.mean(0)), "std": c11(x.std(0)),
            "count": [int(len(frames))]}


def _tasks_table(tasks: list[str]) -> pa.Table:
    """tasks.parquet as pandas writes it: the task string is the (named) index, task_index a column."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"], "column_indexes": [],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _video_writer(path: Path, width: int, height: int, fps: int, crf: int, pix_fmt: str) -> Any:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out=pix_fmt,
        macro_block_size=1, quality=None, ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-g", "2", "-preset", "medium"])
    writer.send(None)
    return writer


def export_lerobot(store_path: str | Path, out: str | Path, crf: int = 10, pix_fmt: str = "yuv444p",
                   progress: bool = True) -> dict[str, Any]:
    """Write `store_path` as a LeRobotDataset v3.0 folder at `out`; returns a summary dict."""
    from tqdm import tqdm

    store = EpisodeStore(store_path, mode="r")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; export into a new folder")
    episodes = list(store.episodes())
    if not episodes:
        raise DatasetError(f"{store.path} has no episodes to export")
    first = episodes[0]
    cams = first.cameras
    fps_set = {float(e.attrs.get("fps", 10.0)) for e in episodes}
    for e in episodes:
        if e.cameras != cams:
            raise DatasetError(f"{e.name} has cameras {e.cameras}, {first.name} has {cams}; LeRobot needs one set")
        if e.array("state").shape[1] != first.attrs["state_dim"] or e.attrs["action_dim"] != first.attrs["action_dim"]:
            raise DatasetError(f"{e.name} state/action sizes differ from {first.name}; export one robot at a time")
    if len(fps_set) != 1 or not float(next(iter(fps_set))).is_integer():
        raise DatasetError(f"episodes have control rates {sorted(fps_set)} Hz; LeRobot needs one integer fps")
    fps = int(next(iter(fps_set)))
    tasks: list[str] = []
    for e in episodes:
        if e.attrs["instruction"] not in tasks:
            tasks.append(str(e.attrs["instruction"]))
    shapes = {c: tuple(first.images(c, 0, 1).shape[1:]) for c in cams}
    writers = {c: _video_writer(out / "videos" / _video_key(c) / f"{CHUNK_FILE}.mp4", shapes[c][1], shapes[c][0],
                                fps, crf, pix_fmt) for c in cams}
    cols: dict[str, list] = {k: [] for k in ("observation.state", "action", "timestamp", "frame_index",
                                             "episode_index", "index", "task_index", "plan_step")}
    ep_rows: list[dict[str, Any]] = []
    image_samples: dict[str, list[np.ndarray]] = {c: [] for c in cams}
    index = 0
    bar = tqdm(episodes, desc="export", unit="episode", file=sys.stderr, disable=not progress)
    for ep_index, e in enumerate(bar):
        n = e.length
        state, action = e.array("state"), e.array("action")
        task_index = tasks.index(e.attrs["instruction"])
        cols["observation.state"] += list(state.astype(np.float32))
        cols["action"] += list(action.astype(np.float32))
        cols["timestamp"] += list((np.arange(n) / fps).astype(np.float32))
        cols["frame_index"] += list(range(n))
        cols["episode_index"] += [ep_index] * n
        cols["index"] += list(range(index, index + n))
        cols["task_index"] += [task_index] * n
        cols["plan_step"] += list(e.array("plan_step").astype(np.int64))
        row: dict[str, Any] = {
            "episode_index": ep_index, "tasks": [e.attrs["instruction"]], "length": n,
            "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": index, "dataset_to_index": index + n,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0, "keystone/episode": e.name,
            "keystone/task": e.attrs["task"], "keystone/plan": e.attrs["plan"],
        }
        frames_done = index  # frames of this camera's video before this episode
        for c in cams:
            frames = e.images(c)
            if frames.shape[1:] != shapes[c]:
                raise DatasetError(f"{e.name} camera {c!r} frames are {frames.shape[1:]}, expected {shapes[c]}")
            for f in frames:
                writers[c].send(np.ascontiguousarray(f))
            image_samples[c].append(frames[:: max(1, n // 10)])
            vk = _video_key(c)
            row.update({f"videos/{vk}/chunk_index": 0, f"videos/{vk}/file_index": 0,
                        f"videos/{vk}/from_timestamp": frames_done / fps, f"videos/{vk}/to_timestamp": (frames_done + n) / fps})
            for stat, value in _image_stats(frames[:: max(1, n // 10)]).items():
                row[f"stats/{vk}/{stat}"] = np.asarray(value).reshape(-1).tolist()
        for key, arr in (("observation.state", state), ("action", action)):
            for stat, value in _stats(arr).items():
                row[f"stats/{key}/{stat}"] = value
        ep_rows.append(row)
        index += n
    for w in writers.values():
        w.close()
    bar.close()

    state_dim, action_dim = len(cols["observation.state"][0]), len(cols["action"][0])
    data = pa.table({
        "observation.state": pa.array(cols["observation.state"], pa.list_(pa.float32(), state_dim)),
        "action": pa.array(cols["action"], pa.list_(pa.float32(), action_dim)),
        **{k: pa.array(cols[k], pa.float32() if k == "timestamp" else pa.int64())
           for k in ("timestamp", "frame_index", "episode_index", "index", "task_index", "plan_step")},
    })
    (out / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(data, out / "data" / f"{CHUNK_FILE}.parquet")
    (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(ep_rows), out / "meta" / "episodes" / f"{CHUNK_FILE}.parquet")
    pq.write_table(_tasks_table(tasks), out / "meta" / "tasks.parquet")

    features: dict[str, Any] = {
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": _names(first, "state", state_dim)},
        "action": {"dtype": "float32", "shape": [action_dim], "names": _names(first, "action", action_dim)},
    }
    for c in cams:
        h, w, _ = shapes[c]
        features[_video_key(c)] = {
            "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": pix_fmt,
                     "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}}
    features.update({
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
        "plan_step": {"dtype": "int64", "shape": [1], "names": None},
    })
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": first.attrs["robot"], "total_episodes": len(episodes),
        "total_frames": index, "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500, "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4" if cams else None,
        "features": features,
    }
    stats: dict[str, Any] = {
        "observation.state": _stats(np.stack(cols["observation.state"])),
        "action": _stats(np.stack(cols["action"])),
        "timestamp": _stats(np.asarray(cols["timestamp"])[:, None]),
        **{k: _stats(np.asarray(cols[k])[:, None]) for k in ("frame_index", "episode_index", "index", "task_index")},
        **{_video_key(c): _image_stats(np.concatenate(image_samples[c])) for c in cams},
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    return {"store": str(store.path), "out": str(out), "episodes": len(episodes), "frames": index,
            "tasks": len(tasks), "cameras": cams, "fps": fps}


def _names(episode: Any, key: str, dim: int) -> list[str]:
    if key == "action" and episode.attrs.get("action_space") == "ee_delta" and dim == 7:
        return ["dx", "dy", "dz", "rx", "ry", "rz", "gripper"]
    if key == "state" and episode.attrs.get("source", {}).get("kind") != "bag":
        return [f"joint_{i}" for i in range(dim - 1)] + ["gripper"]
    return [f"{key}_{i}" for i in range(dim)]
