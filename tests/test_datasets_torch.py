"""EpisodeWindowDataset: windows, padding, normalization, augmentation, collate and the DataLoader recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from keystone_vla.datasets import EpisodeStore
from keystone_vla.datasets.synthetic import synthetic_episode
from keystone_vla.datasets.torch_dataset import EpisodeWindowDataset, collate_windows, make_loader
from keystone_vla.errors import DatasetError

torch.set_num_threads(1)


@pytest.fixture()
def store_path(tmp_path: Path) -> Path:
    store = EpisodeStore(tmp_path / "s.zarr")
    for i, n in enumerate((12, 45)):  # 45 > one image chunk (32): exercises the chunk cache
        store.write_episode(synthetic_episode(i, steps=n, cameras=("front", "wrist"), size=32))
    return tmp_path / "s.zarr"


def test_sample_contents(store_path: Path) -> None:
    ds = EpisodeWindowDataset(store_path, chunk_size=8, cameras=("wrist", "front"))
    eps = [synthetic_episode(i, steps=n, cameras=("front", "wrist"), size=32) for i, n in enumerate((12, 45))]
    assert len(ds) == 57
    norm = EpisodeStore(store_path, mode="r").normalization()
    s_mean, s_std = np.float32(norm["state"]["mean"]), np.float32(norm["state"]["std"])
    a_mean, a_std = np.float32(norm["action"]["mean"]), np.float32(norm["action"]["std"])
    for index, (e, t) in {0: (0, 0), 11: (0, 11), 12: (1, 0), 12 + 40: (1, 40)}.items():
        s = ds[index]
        ep = eps[e]
        assert s["images"].dtype == torch.uint8 and s["images"].shape == (2, 32, 32, 3)
        assert np.array_equal(s["images"][0].numpy(), ep.images["wrist"][t])
        assert np.array_equal(s["images"][1].numpy(), ep.images["front"][t])
        assert np.allclose(s["state"].numpy(), (ep.state[t] - s_mean) / s_std, atol=1e-5)
        n = len(ep.action)
        valid = min(8, n - t)
        assert s["action_mask"].tolist() == [True] * valid + [False] * (8 - valid)
        raw = s["actions"].numpy() * a_std + a_mean
        assert np.allclose(raw[:valid], ep.action[t:t + valid], atol=1e-5)
        if valid < 8:  # hold still, keep the gripper command
            assert np.allclose(raw[valid:, :6], 0.0, atol=1e-5)
            assert np.allclose(raw[valid:, 6], ep.action[-1, 6], atol=1e-5)
        assert s["instruction"] == ep.instruction and s["task"] == "stack"
        assert s["step_instruction"] == ("pick up the red block" if ep.plan_step[t] == 0 else "place it on the blue block")
        assert json.loads(s["plan"])["steps"][0]["call"] == "pick(red_block)"
        assert int(s["episode_index"]) == e and int(s["frame_index"]) == t


def test_augmentation_changes_pixels_not_shape(store_path: Path) -> None:
    plain = EpisodeWindowDataset(store_path, cameras=("front",))
    aug = EpisodeWindowDataset(store_path, cameras=("front",), augment=True)
    torch.manual_seed(0)
    a, b = aug[5]["images"], plain[5]["images"]
    assert a.shape == b.shape and a.dtype == torch.uint8 and not torch.equal(a, b)
    assert torch.equal(aug[5]["actions"], plain[5]["actions"])


def test_collate_and_loader(store_path: Path) -> None:
    ds = EpisodeWindowDataset(store_path, chunk_size=4)
    batch = collate_windows([ds[0], ds[20]])
    assert batch["images"].shape == (2, 1, 32, 32, 3) and batch["actions"].shape == (2, 4, 7)
    assert batch["task"] == ["stack", "stack"] and isinstance(batch["step_instruction"], list)
    seen = []
    for b in make_loader(ds, batch_size=8, num_workers=2, seed=3):
        assert b["images"].shape == (8, 1, 32, 32, 3) and b["action_mask"].dtype == torch.bool
        seen += [(int(e), int(t)) for e, t in zip(b["episode_index"], b["frame_index"])]
    assert len(seen) == 56 and len(set(seen)) == 56  # one epoch, drop_last, no duplicates


def test_bad_requests(store_path: Path) -> None:
    with pytest.raises(DatasetError, match="no camera"):
        EpisodeWindowDataset(store_path, cameras=("top",))
    with pytest.raises(DatasetError, match="chunk_size"):
        EpisodeWindowDataset(store_path, chunk_size=0)
    with pytest.raises(IndexError):
        EpisodeWindowDataset(store_path)[57]
