"""LeRobot v3 export: read the parquet files and videos back and compare them with the store."""

from __future__ import annotations

import json
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow.parquet as pq
import pytest

from keystone_vla.datasets import EpisodeStore
from keystone_vla.datasets.lerobot import export_lerobot
from keystone_vla.datasets.synthetic import synthetic_episode
from keystone_vla.errors import DatasetError


def read_video(path: Path) -> np.ndarray:
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(gen)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen])


@pytest.fixture()
def store(tmp_path: Path) -> EpisodeStore:
    s = EpisodeStore(tmp_path / "s.zarr")
    for i, n in enumerate((14, 21, 9)):
        ep = synthetic_episode(i, steps=n, cameras=("front", "wrist"), size=48, task="stack")
        if i == 2:
            ep.instruction = "stack the green block on the red block"
        s.write_episode(ep)
    return s


@pytest.mark.parametrize(("crf", "mae_limit"), [(10, 1.0), (0, 0.6)])
def test_round_trip(tmp_path: Path, store: EpisodeStore, crf: int, mae_limit: float) -> None:
    out = tmp_path / "lerobot"
    summary = export_lerobot(store.path, out, crf=crf, progress=False)
    assert summary["episodes"] == 3 and summary["frames"] == 44 and summary["tasks"] == 2
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_frames"] == 44
    assert info["features"]["observation.images.front"]["shape"] == [48, 48, 3]
    assert info["features"]["action"]["names"][-1] == "gripper"
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    tasks = pq.read_table(out / "meta" / "tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    task_names = tasks.column("task").to_pylist()
    stats = json.loads((out / "meta" / "stats.json").read_text())
    videos = {c: read_video(out / "videos" / f"observation.images.{c}" / "chunk-000" / "file-000.mp4")
              for c in ("front", "wrist")}
    assert all(len(v) == 44 for v in videos.values())
    all_state = []
    for row, name in zip(episodes, store.episode_names()):
        ep = store.episode(name)
        a, b = row["dataset_from_index"], row["dataset_to_index"]
        assert row["length"] == ep.length == b - a and row["tasks"] == [ep.attrs["instruction"]]
        assert np.array_equal(np.float32(data["observation.state"][a:b]), ep.array("state"))
        assert np.array_equal(np.float32(data["action"][a:b]), ep.array("action"))
        assert data["frame_index"][a:b] == list(range(ep.length))
        assert set(data["episode_index"][a:b]) == {row["episode_index"]}
        assert np.allclose(data["timestamp"][a:b], np.arange(ep.length) / 10, atol=1e-6)
        assert [task_names[i] for i in set(data["task_index"][a:b])] == [ep.attrs["instruction"]]
        for cam, video in videos.items():
            start = round(row[f"videos/observation.images.{cam}/from_timestamp"] * 10)
            got = video[start:start + ep.length].astype(int)
            err = np.abs(got - ep.images(cam))
            assert err.mean() < mae_limit, (cam, crf, err.mean())
        all_state.append(ep.array("state"))
    assert np.allclose(stats["observation.state"]["mean"], np.concatenate(all_state).mean(0), atol=1e-5)
    assert stats["observation.images.front"]["count"][0] > 0 and len(stats["observation.images.front"]["mean"]) == 3


def test_refuses_non_empty_output(tmp_path: Path, store: EpisodeStore) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        export_lerobot(store.path, tmp_path / "busy", progress=False)
