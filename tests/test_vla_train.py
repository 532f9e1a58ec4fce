"""Training: seeded and reproducible, learns, resumes, runs under torchrun with DDP (gloo), and `keystone train`
end to end on a real simulator store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from test_vla_helpers import tiny_checkpoint

from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.data import plan_examples_from_samples
from keystone_vla.vla.normalization import Normalizer
from keystone_vla.vla.synthetic import SyntheticDataset
from keystone_vla.vla.train import TrainConfig, cosine_lr, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _run(tmp, steps=4, seed=0, resume=False, out="ck", **kw):
    ds = SyntheticDataset(n=48, seed=1)
    cfg = TrainConfig(steps=steps, batch_size=8, plan_batch_size=4, val_every=kw.pop("val_every", 0), save_every=0,
                      seed=seed, bf16="off", warmup_steps=2, **kw)
    return train(get_preset("tiny"), cfg, ds, plan_examples_from_samples(ds.samples),
                 Normalizer.identity(8, 7).to_dict(), tmp / out, resume=resume, progress=False)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = _run(tmp_path, out="a")
    b = _run(tmp_path, out="b")
    c = _run(tmp_path, out="c", seed=1)
    assert a["weights_sha256"] == b["weights_sha256"] != c["weights_sha256"]


def test_training_lowers_validation_loss(tmp_path):
    s = _run(tmp_path, steps=120, val_every=40, lr=2e-3)
    hist = json.loads((tmp_path / "ck" / "train_info.json").read_text())["history"]["val"]
    assert [h["step"] for h in hist] == [40, 80, 120]
    first = _run(tmp_path, steps=1, val_every=1, out="first", lr=2e-3)["val"]
    assert s["val"]["val_action"] < 0.8 * first["val_action"]
    assert s["val"]["val_plan"] < 0.5 * first["val_plan"]


def test_resume_continues_to_the_same_weights_as_one_run(tmp_path):
    straight = _run(tmp_path, steps=6, out="straight")
    _run(tmp_path, steps=3, out="resumed")
    # a resumed run restarts the data order at its own epoch start, so compare against the optimizer/step
    # state rather than bit-equality of data: step counter, schedule and weights must continue, not restart
    resumed = _run(tmp_path, steps=6, out="resumed", resume=True)
    assert resumed["steps"] == 6 and straight["steps"] == 6
    state = json.loads((tmp_path / "resumed" / "trainer_state.json").read_text())
    assert state["step"] == 6
    assert state["param_groups"][0]["lr"] == pytest.approx(3e-4 * cosine_lr(6, 6, 2))
    with pytest.raises(Exception, match="drop --resume"):
        _run(tmp_path, steps=2, out="nothing_here", resume=True)


def test_cosine_schedule_shape():
    assert cosine_lr(0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(10, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(55, 100, 10) == pytest.approx(0.55)


WORKER = """
import json, os, sys
from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.data import plan_examples_from_samples
from keystone_vla.vla.normalization import Normalizer
from keystone_vla.vla.synthetic import SyntheticDataset
from keystone_vla.vla.train import TrainConfig, train
out = sys.argv[1]
ds = SyntheticDataset(n=32, seed=0)
s = train(get_preset("tiny"), TrainConfig(steps=2, batch_size=4, plan_batch_size=4, val_every=0, save_every=0,
          bf16="off", warmup_steps=1), ds, plan_examples_from_samples(ds.samples), Normalizer.identity(8, 7).to_dict(),
          out + "/ckpt", progress=False)
with open(f"{out}/rank{os.environ['RANK']}.json", "w") as f:
    json.dump(s, f)
"""


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2 and r0["steps"] == r1["steps"] == 2
    assert r0["weights_sha256"] == r1["weights_sha256"]
    # the weights moved away from the initialisation (DDP really stepped)
    init = _run(tmp_path, steps=1, out="init", lr=0.0)
    assert init["weights_sha256"] != r0["weights_sha256"]
    from keystone_vla.vla.checkpoint import load_pretrained
    from keystone_vla.vla.train import weights_digest

    assert weights_digest(load_pretrained(tmp_path / "ckpt").model) == r0["weights_sha256"]


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory):
    """Three real oracle episodes (PyBullet, 32 px) written to a real episode store."""
    from keystone_vla.datasets.store import EpisodeStore
    from keystone_vla.datasets.writer import EpisodeData
    from keystone_vla.sim.rollout import run_episode
    from keystone_vla.types import EpisodeSpec

    path = tmp_path_factory.mktemp("store") / "sim.zarr"
    store = EpisodeStore(path)
    for i, task in enumerate(["pick_place", "stack", "pick_place"]):
        rec = run_episode(EpisodeSpec(task, i), image_size=32)
        assert rec.success
        store.write_episode(EpisodeData.from_record(rec))
    return path


@pytest.mark.slow
def test_keystone_train_cli_on_a_sim_store(sim_store, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "keystone_vla.cli", "train", "--data", str(sim_store), "--out", str(out),
           "--preset", "tiny", "--steps", "3", "--batch-size", "4", "--workers", "0", "--json"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["episodes"] == 3 and summary["out"] == str(out)
    assert "train" in proc.stderr  # tqdm progress on stderr
    info = json.loads((out / "train_info.json").read_text())
    assert info["data"]["tasks"] == {"pick_place": 2, "stack": 1}
    from keystone_vla.vla.policy import VLAPolicy

    policy = VLAPolicy.from_pretrained(out)
    assert {"pick", "place_in", "place_on"} <= set(policy.config.step_templates)
    assert policy.normalizer.action.std.shape == (7,)
    # resuming to more steps continues the same run
    proc = subprocess.run(cmd + ["--resume", "--steps", "5"], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["steps"] == 5
    # warm start on one task: the weights start from the run above, only pick_place episodes feed the action head
    spec = [sys.executable, "-m", "keystone_vla.cli", "train", "--data", str(sim_store), "--preset", "tiny",
            "--steps", "1", "--batch-size", "4", "--workers", "0", "--lr", "1e-9", "--json"]
    proc = subprocess.run(spec + ["--out", str(tmp_path / "spec"), "--tasks", "pick_place", "--init-from", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "spec" / "train_info.json").read_text())
    assert info["data"]["tasks"] == {"pick_place": 2} and info["data"]["init_from"] == str(out)
    from keystone_vla.vla.checkpoint import load_pretrained

    before, after = load_pretrained(out).model, load_pretrained(tmp_path / "spec").model
    drift = max((a - b).abs().max().item() for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    assert drift < 1e-5  # started from those weights (lr 1e-9: one step barely moves them)
    # the object frame is this run's choice on a warm start
    proc = subprocess.run(spec + ["--out", str(tmp_path / "held"), "--init-from", str(out), "--object-frame",
                                  "held_part"], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_pretrained(tmp_path / "held").model.config.object_frame == "held_part"
    assert load_pretrained(out).model.config.object_frame == "gripper"
    # a cheaper model from scratch: bigger patches (fewer image tokens) and no plan batches next to the actions
    # (and the actions per chunk an agent runs it with, recorded in its config.json)
    proc = subprocess.run(spec + ["--out", str(tmp_path / "p16"), "--patch-size", "16", "--plan-batch-size", "0",
                                  "--actions-per-chunk", "3"], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cheap = load_pretrained(tmp_path / "p16").model.config
    assert cheap.vision.patch_size == 16 and cheap.tokens_per_image == 4
    assert cheap.n_action_steps == 3 and load_pretrained(out).model.config.n_action_steps == 2
    from keystone_vla.policies.vla_agent import VLAAgent

    assert VLAAgent.from_pretrained(tmp_path / "p16").runtime_config.n_action_steps == 3
    assert VLAAgent.from_pretrained(tmp_path / "p16", n_action_steps=1).runtime_config.n_action_steps == 1
    assert VLAAgent.from_pretrained(out).runtime_config.n_action_steps == 2
    assert load_pretrained(out).model.config.tokens_per_image == 16
    assert json.loads((tmp_path / "p16" / "train_info.json").read_text())["train_config"]["plan_batch_size"] == 0
    for bad, msg in ((["--tasks", "juggle"], "no episodes of task"), (["--init-from", str(tmp_path)], "not a checkpoint"),
                     (["--init-from", str(out), "--patch-size", "16"], "--patch-size shapes a new model"),
                     (["--patch-size", "5"], "must be a multiple of patch_size 5"),
                     (["--plan-batch-size", "-1"], "--plan-batch-size must be >= 0"),
                     (["--actions-per-chunk", "0"], "--actions-per-chunk must be >= 1"),
                     (["--actions-per-chunk", "5"], "more than the chunk size 4"),
                     (["--init-from", str(out), "--chunk-size", "12"], "chunk_size"),
                     (["--object-frame", "camera"], "unknown object_frame"),
                     (["--fit-yaw-head"], "unrecognized arguments"),  # fits are recipe stages now
                     (["--stages", "s"], "name it with --recipe")):
        proc = subprocess.run(spec + ["--out", str(tmp_path / "bad")] + bad, env=ENV, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode != 0 and msg in proc.stderr, (bad, proc.stderr[-2000:])


def _recipe(*stages):
    from keystone_vla.vla.recipes import Recipe

    return Recipe("test", "a test recipe", stages)


def _tiny_stage(name="run", **kw):
    from keystone_vla.vla.recipes import TrainStage

    return TrainStage(name, **{"steps": 1, "preset": "tiny", "batch_size": 4, "loader_workers": 0, **kw})


@pytest.mark.slow
def test_warm_start_stage_takes_its_own_object_frame_and_loss_weights(sim_store, tmp_path):
    from keystone_vla.cli.recipe import run_recipe
    from keystone_vla.errors import ConfigError
    from keystone_vla.vla.checkpoint import load_pretrained

    held = _tiny_stage("held", warm_start=True, lr=1e-9, object_frame="held_part",
                       action_loss_weights=(1, 1, 1, 1, 1, 5, 1), action_l2_dims=(5,))
    run_recipe(_recipe(_tiny_stage(), held), tmp_path, data=sim_store, progress=False)
    info = json.loads((tmp_path / "held" / "train_info.json").read_text())
    assert info["train_config"]["action_loss_weights"] == [1, 1, 1, 1, 1, 5, 1]
    assert info["train_config"]["action_l2_dims"] == [5]
    assert info["data"]["init_from"] == str(tmp_path / "run")
    assert load_pretrained(tmp_path / "held").model.config.object_frame == "held_part"
    assert load_pretrained(tmp_path / "run").model.config.object_frame == "gripper"
    for bad, msg in (({"action_loss_weights": (1, 2)}, "7 non-negative numbers"),
                     ({"action_l2_dims": (9,)}, "action dimensions 0-6")):
        with pytest.raises(ConfigError, match=msg):
            run_recipe(_recipe(_tiny_stage(), _tiny_stage("bad", warm_start=True, **bad)), tmp_path, data=sim_store,
                       stages=["bad"], progress=False)


@pytest.mark.slow
def test_yaw_head_stage_adds_a_head_and_keeps_every_other_weight(sim_store, tmp_path, capfd):
    from keystone_vla.cli.recipe import run_recipe
    from keystone_vla.errors import ConfigError, ModelError
    from keystone_vla.vla.checkpoint import load_pretrained
    from keystone_vla.vla.recipes import YawHeadStage

    def yaw(**kw):
        return YawHeadStage("yaw", **{"steps": 50, "object_frame": "held_part", **kw})

    out = run_recipe(_recipe(_tiny_stage(actions_per_chunk=3), yaw()), tmp_path, data=sim_store)
    summary = out["stages"][1]
    assert summary["stage"] == "yaw" and summary["kind"] == "yaw_head" and out["final"] == str(tmp_path / "yaw")
    assert summary["steps"] == 50 and summary["train_windows"] > 0 and np.isfinite(summary["val_mse"])
    assert summary["object_frame"] == "held_part"
    assert "yaw head" in capfd.readouterr().err  # progress bar
    before, after = load_pretrained(tmp_path / "run").model, load_pretrained(tmp_path / "yaw").model
    assert after.config.yaw_head and not before.config.yaw_head
    assert before.config.object_frame == "gripper" and after.config.object_frame == "held_part"
    assert before.config.n_action_steps == after.config.n_action_steps == 3  # a fitted copy keeps the recorded count
    kept = before.state_dict()
    for k, v in after.state_dict().items():
        if not k.startswith("yaw_out."):
            assert torch.equal(v, kept[k]), k
    info = json.loads((tmp_path / "yaw" / "train_info.json").read_text())
    assert info["yaw_head"]["init_from"] == str(tmp_path / "run") and info["yaw_head"]["steps"] == 50
    assert info["recipe"]["stage"] == "yaw" and info["recipe"]["lineage"] == ["run", "yaw"]
    assert "closed_loop_eval" not in info
    with pytest.raises(ConfigError, match="no model stage comes before it"):
        _recipe(yaw(), _tiny_stage())
    with pytest.raises(ConfigError, match="actions_per_chunk must be >= 1"):
        yaw(actions_per_chunk=-2)
    for stage, where, error, msg in (
            (yaw(), tmp_path / "fresh", ConfigError, "which does not exist"),
            (yaw(object_frame="palm"), tmp_path, ConfigError, "unknown object_frame 'palm'"),
            (yaw(actions_per_chunk=5), tmp_path, ConfigError, "chunk size 4")):
        with pytest.raises((error, ModelError), match=msg):
            run_recipe(_recipe(_tiny_stage(), stage), where, data=sim_store, stages=["yaw"], progress=False)


def test_cli_rejects_a_missing_store(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "keystone_vla.cli", "train", "--data", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "o"), "--preset", "tiny"], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "keystone data collect" in proc.stderr


def test_tiny_checkpoint_helper_is_loadable(tmp_path):
    from keystone_vla.vla.policy import VLAPolicy

    assert VLAPolicy.from_pretrained(tiny_checkpoint(tmp_path, steps=1), warmup=False).config.preset == "tiny"


@pytest.mark.slow
def test_minilm_sentence_token_trains_and_stays_out_of_the_checkpoint(tmp_path):
    from test_vla_helpers import STEP_OBJECTS, observation

    from keystone_vla.vla.checkpoint import load_pretrained
    from keystone_vla.vla.policy import VLAPolicy

    folder = tiny_checkpoint(tmp_path, steps=2, text_encoder="minilm")
    keys = load_pretrained(folder).model.state_dict().keys()
    assert any(k.startswith("text_proj.") for k in keys)
    assert (folder / "model.safetensors").stat().st_size < 2_000_000  # the 22 M-param encoder is not copied in
    policy = VLAPolicy.from_pretrained(folder)
    a = policy.predict_chunk(observation(), "pick up the red block", STEP_OBJECTS).actions
    b = policy.predict_chunk(observation(), "grab the crimson cube", STEP_OBJECTS).actions
    assert a.shape == b.shape and not (a == b).all()  # the sentence token changes the prediction
    enc = policy.text_encoder
    sims = torch.nn.functional.cosine_similarity(enc.encode(["pick up the red block"]),
                                                 enc.encode(["grab the red cube", "insert the peg into the hole"]))
    assert sims[0] > sims[1]


def test_train_base_script_runs_the_keystone_base_recipe():
    # the script is one `keystone train --recipe keystone-base` call: a bad stage fails before anything runs
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "train_base.sh")
    proc = subprocess.run(["bash", script, "--stages", "x"], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "recipe 'keystone-base': unknown stage 'x'" in proc.stderr and "collect, h, i, s" in proc.stderr
