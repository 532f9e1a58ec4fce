"""`keystone data ...`: collect (parallel, reproducible, killed mid-run), ingest-bag, info, verify, export-lerobot."""

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
import yaml
from rosbags.rosbag2 import StoragePlugin
from test_data_ingest import MAP, make_bag

from keystone_vla.cli import main
from keystone_vla.datasets import EpisodeStore
from keystone_vla.datasets.collect import collect, collect_one, episode_seed
from keystone_vla.datasets.synthetic import synthetic_episode
from keystone_vla.policies.registry import shipped_checkpoint
from keystone_vla.sim.rollout import run_episode
from keystone_vla.types import EpisodeSpec

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    return code, (json.loads(out[-1]) if out else {})


@pytest.mark.slow
def test_collect_parallel_and_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sim.zarr"
    code, summary = run_cli(capsys, "data", "collect", "--tasks", "pick_place", "--episodes-per-task", "2",
                            "--workers", "2", "--seed", "5", "--out", str(out), "--json")
    assert code == 0 and summary["out"] == str(out)
    assert summary["episodes_written"] + summary["episodes_dropped"] == 2 and summary["episodes_written"] >= 1
    store = EpisodeStore(out, mode="r")
    assert len(store) == summary["episodes_written"]
    by_index = {e.attrs["collect_index"]: e for e in store.episodes()}
    for i, ep in by_index.items():
        assert ep.attrs["seed"] == episode_seed(5, "pick_place", i) and ep.attrs["success"] is True
        assert ep.attrs["task"] == "pick_place" and ep.attrs["robot"] == "panda" and ep.attrs["split"] == "seen"
        assert ep.attrs["source"]["kind"] == "sim" and ep.plan.steps
    # the same (task, index) collected again in this process gives the same episode, bit for bit
    i, ep = next(iter(by_index.items()))
    again = collect_one(str(tmp_path / "again.zarr"), "pick_place", i, episode_seed(5, "pick_place", i), "seen",
                        "panda", ("front",), 128)
    ep2 = EpisodeStore(tmp_path / "again.zarr", mode="r").episode(again["episode"])
    for key in ("action", "state", "plan_step"):
        assert np.array_equal(ep.array(key), ep2.array(key)), key
    assert np.array_equal(ep.images("front"), ep2.images("front"))
    code, verify = run_cli(capsys, "data", "verify", str(out), "--json")
    assert code == 0 and verify == {"episodes": len(store), "good_episodes": len(store), "bad": [], "removed": []}


@pytest.mark.slow
def test_collect_killed_with_sigkill_keeps_earlier_episodes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sim.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "keystone_vla.cli", "data", "collect", "--tasks", "pick_place", "--episodes-per-task",
         "6", "--workers", "2", "--out", str(out)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        # the store's folder appears before its zarr.json (written atomically under the store lock): poll the latter
        meta = out / "zarr.json"
        while time.time() < deadline and not (meta.exists() and len(EpisodeStore(out, mode="r")) >= 1):
            time.sleep(0.2)
        assert meta.exists() and len(EpisodeStore(out, mode="r")) >= 1, "collection published nothing in time"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its workers, mid-run
        proc.wait(timeout=30)
        _wait_group_gone(proc.pid)
    published = EpisodeStore(out, mode="r").episode_names()
    code, report = run_cli(capsys, "data", "verify", str(out), "--json")
    assert all("writer stopped" in b["problem"] for b in report["bad"]), report["bad"]
    assert report["good_episodes"] == len(published) >= 1
    assert all(b["episode"].startswith(".partial/") for b in report["bad"])  # only unfinished work is flagged
    assert code == (1 if report["bad"] else 0)
    code, _ = run_cli(capsys, "data", "verify", str(out), "--repair", "--yes", "--json")
    assert code == 0 and EpisodeStore(out, mode="r").episode_names() == published


def _wait_group_gone(pgid: int, timeout: float = 20.0) -> None:
    """SIGKILL is asynchronous: wait until no live process of the group remains (zombies count as gone)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        live = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(pid)
        if not live:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {pgid} still alive after SIGKILL: {live}")


def test_ingest_bag_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_bag(tmp_path / "bag", StoragePlugin.SQLITE3)
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(MAP))
    code, summary = run_cli(capsys, "data", "ingest-bag", str(tmp_path / "bag"), "--map", str(tmp_path / "map.yaml"),
                            "--out", str(tmp_path / "real.zarr"), "--instruction", "stack them", "--json")
    assert code == 0 and summary["episodes_written"] >= 2 and summary["frames_dropped"] > 0
    store = EpisodeStore(tmp_path / "real.zarr", mode="r")
    assert {e.attrs["instruction"] for e in store.episodes()} == {"stack them"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**MAP, "camera": {}}))
    code = main(["data", "ingest-bag", str(tmp_path / "bag"), "--map", str(tmp_path / "bad.yaml"), "--out",
                 str(tmp_path / "x.zarr")])
    assert code == 2 and "unknown key 'camera' in bad.yaml" in capsys.readouterr().err


def test_verify_info_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "s.zarr"
    store = EpisodeStore(path)
    for i in range(3):
        store.write_episode(synthetic_episode(i, steps=12, size=32))
    code, info = run_cli(capsys, "data", "info", str(path), "--json")
    assert code == 0 and info["episodes"] == 3 and info["steps"] == 36 and info["tasks"] == {"stack": 3}
    assert info["cameras"] == {"front": [32, 32, 3]} and len(info["stats"]["action"]["mean"]) == 7
    code, exp = run_cli(capsys, "data", "export-lerobot", str(path), "--out", str(tmp_path / "lr"), "--json")
    assert code == 0 and exp["frames"] == 36 and (tmp_path / "lr" / "meta" / "info.json").exists()
    chunk = path / "episode_000001" / "action" / "c" / "0" / "0"
    chunk.write_bytes(b"\x00" * 7)
    code, report = run_cli(capsys, "data", "verify", str(path), "--json")
    assert code == 1 and report["episodes"] == 3 and report["good_episodes"] == 2
    assert [b["episode"] for b in report["bad"]] == ["episode_000001"] and "'action'" in report["bad"][0]["problem"]
    code, report = run_cli(capsys, "data", "verify", str(path), "--repair", "--json")  # no terminal, no --yes
    assert code == 1 and report["removed"] == [] and len(EpisodeStore(path, mode="r")) == 3
    code, report = run_cli(capsys, "data", "verify", str(path), "--repair", "--yes", "--json")
    assert code == 0 and report["removed"] == ["episode_000001"]
    assert EpisodeStore(path, mode="r").episode_names() == ["episode_000000", "episode_000002"]
    code = main(["data", "info", str(tmp_path / "nope")])
    assert code == 2 and "no episode store" in capsys.readouterr().err


@pytest.mark.skipif(shipped_checkpoint() is None, reason="keystone-base is not installed")
def test_collect_with_a_learner_records_the_oracles_labels_on_the_learners_path(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """DAgger: the shipped VLA drives about half of each episode; what is stored is the oracle's action there."""
    out = tmp_path / "dagger.zarr"
    # seed 4: an episode the oracle completes after the learner's half (a learner can leave the oracle a scene it
    # does not finish; such an episode is dropped, which is also the collector's contract)
    code, summary = run_cli(capsys, "data", "collect", "--tasks", "stack", "--episodes-per-task", "1", "--workers",
                            "1", "--seed", "4", "--learner", "keystone-base", "--out", str(out), "--json")
    assert code == 0 and summary["episodes_written"] == 1 and 0.2 < summary["learner_tick_share"] < 0.8
    ep = next(iter(EpisodeStore(out, mode="r").episodes()))
    assert ep.attrs["source"]["learner"].endswith("keystone-base") and ep.attrs["learner_ticks"] > 10
    # the same scene run by the oracle alone: same first label (same start), but a different path afterwards
    clean = run_episode(EpisodeSpec("stack", episode_seed(4, "stack", 0)), image_size=32)
    actions, ee = ep.array("action"), ep.array("ee_pose")
    np.testing.assert_allclose(actions[0], clean.action[0], atol=1e-6)
    n = min(len(ee), len(clean.ee_pose))
    assert np.abs(ee[:n, :3] - clean.ee_pose[:n, :3]).max() > 0.005
    # every stored action is an oracle action: bounded by the oracle's speed limit (0.24 m/s at 10 Hz)
    assert np.linalg.norm(actions[:, :3], axis=1).max() <= 0.024 + 1e-6


def test_collect_learner_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from keystone_vla.cli.data import dagger_learner
    from keystone_vla.errors import ConfigError
    from keystone_vla.policies.dagger import DaggerLearner

    with pytest.raises(ConfigError, match="needs a VLA checkpoint"):
        dagger_learner("oracle")
    with pytest.raises(ConfigError, match="no such folder"):
        dagger_learner(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="learner-share"):
        DaggerLearner(str(tmp_path), share=0.0)
    # the collector checks what it is handed, and never loads a model to do so
    learner = DaggerLearner(str(tmp_path / "never-loaded"), share=0.5)
    with pytest.raises(ConfigError, match="exclusive"):
        collect("stack", 1, tmp_path / "b.zarr", learner=learner, action_noise=0.005, progress=False)
    code = main(["data", "collect", "--tasks", "stack", "--episodes-per-task", "1", "--learner", "oracle",
                 "--out", str(tmp_path / "a.zarr")])
    assert code == 2 and "needs a VLA checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()  # refused before any store
