"""The object token: features of the plan step's objects, their recording in oracle rollouts and stores, and
growing the token onto a checkpoint trained without one."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from keystone_vla.datasets import EpisodeStore
from keystone_vla.datasets.synthetic import synthetic_episode
from keystone_vla.errors import DatasetError, ModelError
from keystone_vla.vla.object_token import N_FEATURES, gripper_yaw, object_features

BLOCK = [0.5, 0.1, 0.02, 0.3, 0.04, 0.04, 0.04]
BOWL = [0.4, -0.2, 0.03, 0.0, 0.12, 0.12, 0.05]


def _ee(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    from keystone_vla.sim.geometry import top_down_quat

    return np.array([x, y, z, *top_down_quat(yaw)], np.float32)


def test_features_are_relative_to_the_gripper_and_respect_symmetry() -> None:
    # a placing step: the block is held (step began with the gripper at START), the bowl is the goal
    start = _ee(0.5, 0.1, 0.03, 0.0)
    so = np.array(BLOCK + BOWL + list(start), np.float32)
    f = object_features(so, _ee(0.4, 0.0, 0.3, 0.0))
    assert f.shape == (N_FEATURES,) and f.dtype == np.float32
    np.testing.assert_allclose(f[:3], [0.0, 0.0, -0.1], atol=1e-5)  # held block vs the gripper at the step's start
    np.testing.assert_allclose(f[12:15], [0.0, -2.0, -2.7], atol=1e-5)  # bowl vs the gripper now, 10 cm units
    moved = object_features(so, _ee(0.41, 0.0, 0.3, 0.0))
    np.testing.assert_allclose(moved[12], f[12] - 0.1, atol=1e-5)  # the gripper moved 1 cm towards the bowl
    np.testing.assert_allclose(moved[:12], f[:12], atol=1e-6)  # ... the grasp offset did not change
    # a goal turned by a quarter turn looks the same to the 4-fold features, not to the 1-fold ones
    turned = so.copy()
    turned[10] += math.pi / 2
    g = object_features(turned, _ee(0.4, 0.0, 0.3, 0.0))
    np.testing.assert_allclose(g[19:21], f[19:21], atol=1e-5)  # sin/cos(4 d)
    assert np.abs(g[15:17] - f[15:17]).max() > 0.5  # sin/cos(d)
    # batched input gives the same rows
    rows = object_features(np.stack([so, turned]), np.stack([_ee(0.4, 0, 0.3, 0)] * 2))
    np.testing.assert_allclose(rows, np.stack([f, g]), atol=1e-6)


def test_held_part_frame_measures_the_goal_from_the_part_in_the_hand() -> None:
    # the block was grasped 1 cm off-centre in x and 0.1 rad off in yaw; the bowl is the goal
    block = [0.51, 0.1, 0.02, 0.1, 0.04, 0.04, 0.04]
    start = _ee(0.5, 0.1, 0.03, 0.0)
    so = np.array(block + BOWL + list(start), np.float32)
    now = _ee(0.4, 0.0, 0.3, 0.0)
    grip = object_features(so, now)
    held = object_features(so, now, "held_part")
    np.testing.assert_allclose(held[:12], grip[:12], atol=1e-6)  # the hand's view of the part is unchanged
    np.testing.assert_allclose(held[12:15], grip[12:15] - [0.1, 0.0, 0.0], atol=1e-5)  # goal vs the part's x
    np.testing.assert_allclose(held[15], math.sin(-0.1), atol=1e-5)  # and vs its yaw
    # the gripper turned a quarter turn since the step began: the offset turns with it (+x becomes +y)
    turned = object_features(so, _ee(0.4, 0.0, 0.3, math.pi / 2), "held_part")
    np.testing.assert_allclose(turned[12:14], [0.0, -2.0 - 0.1], atol=1e-5)
    # a part held a half turn round must turn another half turn: the part frame's 1-fold yaw features flip
    # (2- and 4-fold ones do not), the gripper frame's do not change at all
    half = so.copy()
    half[3] += math.pi
    h = object_features(half, now, "held_part")
    np.testing.assert_allclose(h[15:17], -held[15:17], atol=1e-5)
    np.testing.assert_allclose(h[17:21], held[17:21], atol=1e-5)
    np.testing.assert_allclose(object_features(half, now)[15:21], grip[15:21], atol=1e-5)
    # a pick (one object) and a part that is not in the hand keep the gripper frame
    pick = np.array(block + block + list(_ee(0.5, 0.1, 0.3, 0.0)), np.float32)
    np.testing.assert_allclose(object_features(pick, now, "held_part"), object_features(pick, now), atol=1e-6)
    dropped = so.copy()
    dropped[0] += 0.08
    np.testing.assert_allclose(object_features(dropped, now, "held_part"), object_features(dropped, now), atol=1e-6)
    with pytest.raises(ModelError, match="unknown object frame"):
        object_features(so, now, "camera")


def test_jitter_moves_a_picks_single_object_once() -> None:
    from keystone_vla.vla.object_token import jitter

    pick = np.array(BLOCK + BLOCK, np.float32)
    out = jitter(np.stack([pick] * 8), np.random.default_rng(0))
    np.testing.assert_array_equal(out[:, 0:7], out[:, 7:14])
    assert np.abs(out[:, 0:3] - pick[:3]).max() > 1e-4  # it was perturbed
    place = np.array(BLOCK + BOWL, np.float32)
    moved = jitter(place, np.random.default_rng(0))
    assert np.abs(moved[0:3] - moved[7:10] - (place[0:3] - place[7:10])).max() > 1e-5  # two objects, two errors


def test_gripper_yaw_inverts_the_top_down_orientation() -> None:
    for yaw in (-2.5, -0.4, 0.0, 1.1, 3.0):
        assert gripper_yaw(_ee(0, 0, 0, yaw)[3:]) == pytest.approx(yaw, abs=1e-6)


@pytest.mark.parametrize("bad,match", [(np.zeros(14), "step_objects must be"), (np.full(21, np.nan), "NaN")])
def test_bad_feature_input_is_rejected(bad, match) -> None:
    with pytest.raises(ModelError, match=match):
        object_features(bad, _ee(0, 0, 0.3, 0))


def test_oracle_rollouts_record_each_steps_objects_as_the_step_began() -> None:
    from keystone_vla.sim.rollout import run_episode
    from keystone_vla.types import EpisodeSpec

    rec = run_episode(EpisodeSpec("stack", 5, "seen", "panda"), cameras=("front",), image_size=32)
    assert rec.success and rec.step_objects.shape == (rec.steps, 14)
    for k in range(len(rec.plan.steps)):
        rows = rec.step_objects[rec.plan_step == k]
        assert len(rows) and np.all(rows == rows[0])  # one snapshot per step, held while it runs
    pick, place = (rec.step_objects[rec.plan_step == k][0] for k in (0, 1))
    np.testing.assert_allclose(pick[:7], pick[7:])  # pick(x): first and last object are the same block
    assert pick[2] < 0.05  # ... resting on the table when the step began
    assert place[2] > pick[2] + 0.05  # place_on(x, y): x was already lifted when the step began
    assert place[9] < 0.05 and np.linalg.norm(place[7:9] - pick[:2]) > 0.05  # y: another block on the table


def test_store_keeps_step_objects_and_refuses_them_for_some_steps_only(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "s.zarr")
    data = synthetic_episode(1, steps=12)
    data.step_objects = np.random.default_rng(0).normal(size=(12, 14)).astype(np.float32)
    ep = store.episode(store.write_episode(data))
    np.testing.assert_array_equal(ep.array("step_objects"), data.step_objects)
    with pytest.raises(DatasetError, match="step_objects given for 1 of 2 steps"):
        with store.begin_episode(data.attrs()) as w:
            w.add_step({}, np.zeros(8), np.zeros(7), 0.0, step_objects=np.zeros(14))
            w.add_step({}, np.zeros(8), np.zeros(7), 0.1)
    assert store.episode_names() == [ep.name]  # the refused episode left nothing behind


def test_init_from_grows_an_object_token_onto_an_older_checkpoint(tmp_path: Path) -> None:
    from test_vla_helpers import tiny_checkpoint

    from keystone_vla.vla.checkpoint import load_pretrained
    from keystone_vla.vla.configuration import get_preset
    from keystone_vla.vla.data import plan_examples_from_samples
    from keystone_vla.vla.normalization import Normalizer
    from keystone_vla.vla.synthetic import SyntheticDataset
    from keystone_vla.vla.train import TrainConfig, train

    old = tiny_checkpoint(tmp_path / "old", steps=2, object_token=False)
    cfg = get_preset("tiny")
    ds = SyntheticDataset(n=16, image_size=cfg.image_size, chunk_size=cfg.chunk_size)
    train(cfg, TrainConfig(steps=1, batch_size=4, plan_batch_size=2, val_every=0, save_every=0, bf16="off",
                           warmup_steps=1, lr=1e-9),
          ds, plan_examples_from_samples(ds.samples), Normalizer.identity(8, 7).to_dict(), tmp_path / "new",
          progress=False, init_from=old)
    a, b = load_pretrained(old).model, load_pretrained(tmp_path / "new").model
    assert not a.config.object_token and b.config.object_token and hasattr(b, "object_proj")
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sb) - set(sa) == {k for k in sb if k.startswith("object_proj.")}
    for k, v in sa.items():  # every old weight carried over (lr ~0: one step changes nothing visible)
        torch.testing.assert_close(sb[k], v, atol=1e-5, rtol=0)


def test_init_from_swaps_the_action_head_keeping_the_trunk(tmp_path: Path) -> None:
    """The discrete-token variant warm-starts from a chunk model: trunk, vision and object token carry over."""
    from test_vla_helpers import tiny_checkpoint

    from keystone_vla.vla.checkpoint import load_pretrained
    from keystone_vla.vla.configuration import get_preset
    from keystone_vla.vla.data import plan_examples_from_samples
    from keystone_vla.vla.normalization import Normalizer
    from keystone_vla.vla.synthetic import SyntheticDataset
    from keystone_vla.vla.train import TrainConfig, train

    old = tiny_checkpoint(tmp_path / "old", steps=2)
    cfg = get_preset("tiny", action_head="tokens")
    ds = SyntheticDataset(n=16, image_size=cfg.image_size, chunk_size=cfg.chunk_size)
    train(cfg, TrainConfig(steps=1, batch_size=4, plan_batch_size=2, val_every=0, save_every=0, bf16="off",
                           warmup_steps=1, lr=1e-9),
          ds, plan_examples_from_samples(ds.samples), Normalizer.identity(8, 7).to_dict(), tmp_path / "new",
          progress=False, init_from=old)
    a, b = load_pretrained(old).model, load_pretrained(tmp_path / "new").model
    assert a.config.action_head == "chunk" and b.config.action_head == "tokens"
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) - set(sb) == {k for k in sa if k.startswith(("action_out.", "action_queries"))} != set()
    assert set(sb) <= set(sa)
    for k, v in sb.items():
        torch.testing.assert_close(v, sa[k], atol=1e-5, rtol=0)


def test_training_samples_carry_the_grasp_offset_and_the_live_goal(tmp_path: Path) -> None:
    from keystone_vla.datasets.torch_dataset import EpisodeWindowDataset
    from keystone_vla.datasets.writer import EpisodeData
    from keystone_vla.sim.rollout import run_episode
    from keystone_vla.types import EpisodeSpec
    from keystone_vla.vla.data import StepDoneDataset

    rec = run_episode(EpisodeSpec("pick_place", 2, "seen", "panda"), cameras=("front",), image_size=32)
    store = EpisodeStore(tmp_path / "s.zarr")
    store.write_episode(EpisodeData.from_record(rec))
    ds = StepDoneDataset(EpisodeWindowDataset(str(tmp_path / "s.zarr"), chunk_size=4), 4, object_token=True)
    feats = np.stack([ds[t]["object_features"] for t in range(len(ds))])
    place = np.flatnonzero(rec.plan_step == 1)
    held, goal = feats[place, :3], feats[place, 12:15]
    assert np.ptp(held, axis=0).max() < 1e-5  # the grasp offset is fixed for the whole placing step
    assert np.ptp(goal, axis=0).max() > 0.5  # the goal moves relative to the gripper as the arm carries the part
    t0 = place[0]
    np.testing.assert_allclose(held[0], (rec.step_objects[t0, :3] - rec.ee_pose[t0, :3]) / 0.1, atol=1e-4)
    assert np.linalg.norm(held[0]) < 0.5  # the part is in the hand: within 5 cm of the gripper
