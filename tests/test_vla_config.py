"""VLA configuration: presets, strict JSON loading (unknown keys named), round trips, re-targeting."""

from __future__ import annotations

import json

import pytest

from keystone_vla.errors import ConfigError
from keystone_vla.vla.configuration import PRESETS, VLAConfig, get_preset
from keystone_vla.vla.data import adapt_to_image_size


def test_presets_round_trip_through_json(tmp_path):
    for name, cfg in PRESETS.items():
        assert cfg.preset == name
        cfg.save(tmp_path)
        assert VLAConfig.load(tmp_path) == cfg


def test_unknown_top_level_key_is_named():
    d = get_preset("tiny").to_dict()
    d["chunk_sise"] = 8
    with pytest.raises(ConfigError, match="unknown key 'chunk_sise'"):
        VLAConfig.from_dict(d)


def test_unknown_nested_key_is_named_with_its_section():
    d = get_preset("tiny").to_dict()
    d["vision"]["patchsize"] = 4
    with pytest.raises(ConfigError, match=r"unknown key 'patchsize' in config\.vision"):
        VLAConfig.from_dict(d)


def test_bad_choices_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown action_head 'diffusion'"):
        get_preset("tiny", action_head="diffusion")
    with pytest.raises(ConfigError, match="unknown object_frame 'camera'"):
        get_preset("tiny", object_frame="camera")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="config.json is missing"):
        VLAConfig.load(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        VLAConfig.load(tmp_path)


def test_actions_per_chunk_is_recorded_and_older_configs_load_with_two(tmp_path):
    cfg = get_preset("tiny").replace(n_action_steps=4)
    cfg.save(tmp_path)
    assert VLAConfig.load(tmp_path).n_action_steps == 4
    assert not list(tmp_path.glob(".*.tmp"))  # written to a temp name, then renamed into place
    old = get_preset("tiny").to_dict()
    del old["n_action_steps"]  # a checkpoint saved before the key existed
    assert VLAConfig.from_dict(old).n_action_steps == 2
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ConfigError, match="n_action_steps must be a whole number >= 1"):
            get_preset("tiny", n_action_steps=bad)


def test_overrides_and_derived_sizes():
    cfg = get_preset("base", cameras=("front", "wrist"), chunk_size=16)
    assert cfg.tokens_per_image == 64
    # two cameras of patch tokens, the instruction, proprioception, and the object token
    assert cfg.object_token
    assert cfg.action_prefix_len == 2 * 64 + cfg.max_instruction_tokens + 1 + 1
    no_obj = get_preset("base", cameras=("front", "wrist"), object_token=False)
    assert no_obj.action_prefix_len == cfg.action_prefix_len - 1
    assert json.loads(cfg.to_json())["cameras"] == ["front", "wrist"]


def test_adapt_to_image_size_keeps_token_count():
    tiny = get_preset("tiny")
    at128 = adapt_to_image_size(tiny, 128)
    assert at128.image_size == 128 and at128.tokens_per_image == tiny.tokens_per_image
