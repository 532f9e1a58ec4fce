"""EpisodeStore: schema round trip, atomic publish, concurrent writers, killed writers, verify/repair."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from keystone_vla.datasets import EpisodeStore
from keystone_vla.datasets.image_codec import CODECS, decode_frame, encode_frame
from keystone_vla.datasets.synthetic import synthetic_episode
from keystone_vla.datasets.verify import repair, verify_store
from keystone_vla.errors import DatasetError
from keystone_vla.types import Plan

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_round_trip_exact(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "s.zarr")
    data = synthetic_episode(3, steps=37, cameras=("front", "wrist"))
    name = store.write_episode(data)
    assert name == "episode_000000"
    ep = EpisodeStore(tmp_path / "s.zarr", mode="r").episode(name)
    assert ep.length == 37 and ep.cameras == ["front", "wrist"]
    for cam in ("front", "wrist"):
        assert np.array_equal(ep.images(cam), data.images[cam])
        assert np.array_equal(ep.images(cam, 5, 9), data.images[cam][5:9])
    for key in ("state", "action", "timestamp", "plan_step", "ee_pose"):
        got = ep.array(key)
        assert got.dtype == getattr(data, key).dtype and np.array_equal(got, getattr(data, key)), key
    for key in ("task", "instruction", "split", "success", "seed", "robot", "source"):
        assert ep.attrs[key] == data.attrs()[key]
    assert Plan.from_json(ep.attrs["plan"]).calls() == ["pick(red_block)", "place_on(red_block, blue_block)"]
    assert ep.step_text(0) == "pick up the red block" and ep.step_text(36) == "place it on the blue block"


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_codecs_round_trip(codec: str) -> None:
    frame = synthetic_episode(1, steps=1, size=48).images["front"][0]
    back = decode_frame(encode_frame(frame, codec), codec)
    if CODECS[codec][2]:
        assert np.array_equal(back, frame)
    else:
        assert np.abs(back.astype(int) - frame).mean() < 3.0


def test_append_and_numbering(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    EpisodeStore(path).write_episode(synthetic_episode(0, steps=5))
    store = EpisodeStore(path)  # reopen = append
    assert [store.write_episode(synthetic_episode(i, steps=5)) for i in (1, 2)] == ["episode_000001", "episode_000002"]
    assert len(store) == 3 and os.listdir(path / ".partial") == []


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no episode store"):
        EpisodeStore(tmp_path / "missing", mode="r")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not an episode store"):
        EpisodeStore(tmp_path / "junk")
    store = EpisodeStore(tmp_path / "s.zarr")
    data = synthetic_episode(0, steps=5)
    data.action = data.action[:4]
    with pytest.raises(DatasetError, match="disagree on length"):
        store.write_episode(data)
    with pytest.raises(DatasetError, match="missing"):
        store.begin_episode({"task": "x"})
    assert len(store) == 0 and not (tmp_path / "s.zarr" / ".partial").exists()


def test_exception_mid_episode_leaves_nothing(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "s.zarr")
    store.write_episode(synthetic_episode(0, steps=5))
    data = synthetic_episode(1, steps=5)
    with pytest.raises(KeyboardInterrupt), store.begin_episode(data.attrs()) as w:
        w.add_step({"front": data.images["front"][0]}, data.state[0], data.action[0], 0.0)
        raise KeyboardInterrupt
    assert store.episode_names() == ["episode_000000"]
    assert os.listdir(tmp_path / "s.zarr" / ".partial") == []


_WRITER = """
import sys
from keystone_vla.datasets import EpisodeStore
from keystone_vla.datasets.synthetic import synthetic_episode
store = EpisodeStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.write_episode(synthetic_episode(int(sys.argv[3]) * 1000 + i, steps=12))
"""


def test_concurrent_writers(tmp_path: Path) -> None:
    path = str(tmp_path / "s.zarr")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, path, "4", str(w)], env=ENV) for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = EpisodeStore(path, mode="r")
    assert store.episode_names() == [f"episode_{i:06d}" for i in range(12)]
    seeds = sorted(store.episode(n).attrs["seed"] for n in store.episode_names())
    assert seeds == sorted(w * 1000 + i for w in range(3) for i in range(4))
    report = verify_store(store)
    assert report.good_episodes == 12 and report.bad == []
    for name in store.episode_names():  # every episode holds exactly the data its seed produced
        ep = store.episode(name)
        assert np.array_equal(ep.images("front"), synthetic_episode(ep.attrs["seed"], steps=12).images["front"])


_KILLED = """
import sys, time
from keystone_vla.datasets import EpisodeStore
from keystone_vla.datasets.synthetic import synthetic_episode
store = EpisodeStore(sys.argv[1])
for i in range(3):
    store.write_episode(synthetic_episode(i, steps=10))
data = synthetic_episode(99, steps=10)
w = store.begin_episode(data.attrs())
for t in range(5):
    w.add_step({"front": data.images["front"][t]}, data.state[t], data.action[t], t / 10)
print("MID-EPISODE", flush=True)
time.sleep(60)
"""


def test_kill_9_mid_episode_then_verify_and_repair(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(path)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "MID-EPISODE"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    store = EpisodeStore(path)
    report = verify_store(store)
    assert report.good_episodes == 3 and report.episodes == 4
    assert len(report.bad) == 1 and report.bad[0]["episode"].startswith(".partial/episode-")
    assert "writer stopped before committing" in report.bad[0]["problem"]
    for i in range(3):  # earlier episodes intact
        assert np.array_equal(store.episode(i).images("front"), synthetic_episode(i, steps=10).images["front"])
    assert repair(store, report) == [report.bad[0]["episode"]]
    assert verify_store(store).bad == [] and len(store) == 3


def _corrupt_store(tmp_path: Path) -> EpisodeStore:
    store = EpisodeStore(tmp_path / "s.zarr")
    for i in range(4):
        store.write_episode(synthetic_episode(i, steps=40))
    # 1: a lost image chunk (zarr would silently read fill values), 2: a truncated state chunk, 3: bad attrs
    os.remove(tmp_path / "s.zarr" / "episode_000001" / "images" / "front" / "c" / "1")
    chunk = tmp_path / "s.zarr" / "episode_000002" / "state" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    meta_path = tmp_path / "s.zarr" / "episode_000003" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"]["task"]
    meta_path.write_text(json.dumps(meta))
    return store


def test_verify_names_corrupt_episodes(tmp_path: Path) -> None:
    store = _corrupt_store(tmp_path)
    report = verify_store(store)
    problems = {b["episode"]: b["problem"] for b in report.bad}
    assert report.episodes == 4 and report.good_episodes == 1
    assert "camera 'front'" in problems["episode_000001"] and "checksum" in problems["episode_000001"]
    assert "'state'" in problems["episode_000002"]
    assert "missing attributes ['task']" in problems["episode_000003"]
    assert repair(store, report) == ["episode_000001", "episode_000002", "episode_000003"]
    assert store.episode_names() == ["episode_000000"] and verify_store(store).bad == []


def test_normalization_cached_and_refreshed(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "s.zarr")
    eps = [synthetic_episode(i, steps=20) for i in range(2)]
    store.write_episode(eps[0])
    norm = store.normalization()
    assert np.allclose(norm["state"]["mean"], eps[0].state.mean(0), atol=1e-6)
    assert (tmp_path / "s.zarr" / "normalization.json").exists()
    store.write_episode(eps[1])
    both = np.concatenate([e.action for e in eps])
    norm2 = EpisodeStore(tmp_path / "s.zarr", mode="r").normalization()
    assert norm2["steps"] == 40 and np.allclose(norm2["action"]["max"], both.max(0))
    assert np.allclose(norm2["action"]["std"], np.maximum(both.std(0), 1e-6), atol=1e-6)
    # a repair removes the last episode and a new one reuses its name: the cache must not be reused
    store.remove_episode("episode_000001")
    other = synthetic_episode(7, steps=20)
    assert store.write_episode(other) == "episode_000001"
    norm3 = store.normalization()
    assert np.allclose(norm3["state"]["max"], np.concatenate([eps[0].state, other.state]).max(0))


def test_partial_of_live_writer_is_not_removed(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "s.zarr")
    data = synthetic_episode(0, steps=3)
    w = store.begin_episode(data.attrs())
    report = verify_store(store)
    assert report.bad[0]["problem"] == "partial episode (writer still running)"
    assert repair(store, report) == [] and w.tmp.exists()
    for t in range(3):
        w.add_step({"front": data.images["front"][t]}, data.state[t], data.action[t], t / 10)
    assert w.commit() == "episode_000000"
    time.sleep(0)
    assert verify_store(store).bad == []
