"""Checkpoint folders: exact round trip, safetensors + JSON only, and errors naming the missing/mismatched file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_vla_helpers import STEP_OBJECTS, observation, tiny_checkpoint

from keystone_vla.errors import ModelError
from keystone_vla.vla.checkpoint import CHECKPOINT_FILES, load_pretrained, save_pretrained
from keystone_vla.vla.policy import VLAPolicy


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), steps=2)


def test_folder_holds_exactly_the_documented_files_and_no_pickle(ckpt):
    names = {p.name for p in ckpt.iterdir()}
    assert set(CHECKPOINT_FILES) <= names
    assert names - set(CHECKPOINT_FILES) <= {"trainer_state.safetensors", "trainer_state.json"}
    for p in ckpt.iterdir():
        head = p.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"PK", f"{p.name} looks like a pickle/zip"
    info = json.loads((ckpt / "train_info.json").read_text())
    assert info["steps"] == 2 and "git_revision" in info and "train_config" in info


def test_round_trip_gives_identical_weights_and_outputs(ckpt, tmp_path):
    a = load_pretrained(ckpt)
    save_pretrained(tmp_path, a.model, a.tokenizer, a.normalizer, a.train_info)
    b = load_pretrained(tmp_path)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    obs = observation()
    ca = VLAPolicy(a, warmup=False).predict_chunk(obs, "pick up the red block", STEP_OBJECTS)
    cb = VLAPolicy(b, warmup=False).predict_chunk(obs, "pick up the red block", STEP_OBJECTS)
    np.testing.assert_array_equal(ca.actions, cb.actions)
    assert a.model.lm.get_input_embeddings().weight.data_ptr() == a.model.lm.get_output_embeddings().weight.data_ptr()


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "normalization.json", "tokenizer.json",
                                  "train_info.json"])
def test_missing_file_is_named(ckpt, tmp_path, name):
    broken = shutil.copytree(ckpt, tmp_path / "c")
    (broken / name).unlink()
    with pytest.raises(ModelError, match=name.replace(".", r"\.")):
        load_pretrained(broken)


def test_mismatched_files_are_named(ckpt, tmp_path):
    # tokenizer from a different vocabulary
    c1 = shutil.copytree(ckpt, tmp_path / "c1")
    from keystone_vla.vla.tokenizer import WordTokenizer

    WordTokenizer.build(["a completely different corpus with extra words"]).save(c1)
    with pytest.raises(ModelError, match=r"tokenizer\.json"):
        load_pretrained(c1)
    # normalisation with the wrong state size
    c2 = shutil.copytree(ckpt, tmp_path / "c2")
    d = json.loads((c2 / "normalization.json").read_text())
    d["state"] = {k: v[:5] for k, v in d["state"].items()}
    (c2 / "normalization.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match=r"normalization\.json"):
        load_pretrained(c2)
    # config that builds a different architecture than the weights
    c3 = shutil.copytree(ckpt, tmp_path / "c3")
    d = json.loads((c3 / "config.json").read_text())
    d["chunk_size"] = 6
    (c3 / "config.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        load_pretrained(c3)
    # unknown key in config.json
    c4 = shutil.copytree(ckpt, tmp_path / "c4")
    d = json.loads((c4 / "config.json").read_text())
    d["learning_rate"] = 1.0
    (c4 / "config.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match="unknown key 'learning_rate'"):
        load_pretrained(c4)
    # truncated weights
    c5 = shutil.copytree(ckpt, tmp_path / "c5")
    (c5 / "model.safetensors").write_bytes((c5 / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        load_pretrained(c5)
