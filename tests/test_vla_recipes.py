"""Training recipes: lookup by name, typo suggestions, frozen definitions, the shipped keystone-base recipe pinned
field by field, and the `tiny` recipe run end to end through `keystone train --recipe`."""

from __future__ import annotations

import dataclasses
import json

import pytest

from keystone_vla.cli import main
from keystone_vla.errors import ConfigError
from keystone_vla.vla.recipes import (
    RECIPES,
    CheckStage,
    CollectStage,
    PlanAdapterStage,
    Recipe,
    TrainStage,
    YawHeadStage,
    get_recipe,
)


def test_get_recipe_by_exact_name():
    assert {"keystone-base", "keystone-base-lineage", "tiny"} <= set(RECIPES)
    for name in RECIPES:
        assert get_recipe(name) is RECIPES[name] and get_recipe(name).name == name


def test_a_typo_names_the_nearest_recipes():
    with pytest.raises(ConfigError, match="unknown recipe 'keystone-bsae'.*did you mean 'keystone-base'"):
        get_recipe("keystone-bsae")
    with pytest.raises(ConfigError, match="valid choices: keystone-base, keystone-base-lineage, tiny$"):
        get_recipe("zzz")  # nothing near: the list alone
    with pytest.raises(ConfigError, match="unknown stage 'hh'.*did you mean 'h'"):
        get_recipe("keystone-base").select(["s", "hh"])


def test_recipes_are_frozen():
    recipe = get_recipe("keystone-base")
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.stages[1].steps = 10
    with pytest.raises(TypeError):
        RECIPES["mine"] = recipe
    assert isinstance(recipe.stages, tuple)


def test_keystone_base_is_the_shipped_recipe():
    recipe = get_recipe("keystone-base")
    assert recipe.stage_names == ("collect", "s", "h", "i", "check") and recipe.final_stage == "i"
    collect, s, h, i, check = recipe.stages
    assert type(collect) is CollectStage and dataclasses.asdict(collect) == {
        "name": "collect", "episodes_per_task": 60, "tasks": ("all",), "split": "seen", "image_size": 128,
        "cameras": ("front",), "seed": 0, "workers": 2, "store": "data", "learner": False, "learner_share": 0.5}
    assert type(s) is TrainStage and dataclasses.asdict(s) == {
        "name": "s", "steps": 2200, "preset": "base", "warm_start": False, "action_head": "chunk", "chunk_size": None,
        "cameras": ("front",), "batch_size": 32, "lr": 3e-4, "seed": 0, "val_every": 250, "patch_size": 32,
        "plan_batch_size": 4, "object_token": True, "object_frame": "gripper", "tasks": None, "text_encoder": "none",
        "plan_colour_swap": True, "action_loss_weights": None, "action_l2_dims": (), "loader_workers": 1,
        "actions_per_chunk": None, "store": "data"}
    assert type(h) is YawHeadStage and dataclasses.asdict(h) == {
        "name": "h", "steps": 6000, "seed": 0, "object_frame": "held_part", "batch_size": 512, "lr": 1e-3,
        "augment_copies": 2, "actions_per_chunk": None, "store": "data"}
    assert type(i) is PlanAdapterStage and dataclasses.asdict(i) == {
        "name": "i", "steps": 1100, "seed": 0, "rank": 8, "relation_phrasing": 0.5, "word_features": True,
        "batch_size": 32, "lr": 2e-3, "actions_per_chunk": 2, "store": "data"}
    assert type(check) is CheckStage and dataclasses.asdict(check) == {
        "name": "check", "tasks": ("all",), "split": "seen", "episodes": 2, "seed": 0, "workers": 2,
        "max_steps": None, "videos": True}
    assert [recipe.model_stage_before(n) for n in recipe.stage_names] == [None, None, "s", "h", "i"]


def test_lineage_recipe_runs_its_dagger_rounds_on_a_second_store():
    recipe = get_recipe("keystone-base-lineage")
    assert recipe.stage_names == ("collect", "a", "b", "c", "d", "e", "mix", "f-dagger", "f", "g-dagger", "g", "h",
                                  "i", "check")
    assert [recipe.stage(n).steps for n in "abcdefg"] == [2000, 2500, 3000, 2000, 2500, 2000, 1500]
    assert [n for n in recipe.stage_names if getattr(recipe.stage(n), "learner", False)] == ["f-dagger", "g-dagger"]
    assert recipe.model_stage_before("f-dagger") == "e" and recipe.model_stage_before("g-dagger") == "f"
    assert {recipe.stage(n).store for n in ("mix", "f-dagger", "f", "g-dagger", "g", "h", "i")} == {"mix"}


def test_a_recipe_is_checked_when_it_is_defined():
    s = TrainStage("s", steps=1)
    with pytest.raises(ConfigError, match="stage names must be unique"):
        Recipe("r", "", (s, s))
    with pytest.raises(ConfigError, match="reads store 'mix', which no collect stage before it writes"):
        Recipe("r", "", (s, YawHeadStage("h", store="mix")))
    with pytest.raises(ConfigError, match="stage 'x': relation_phrasing must be a fraction"):
        PlanAdapterStage("x", relation_phrasing=2.0)
    with pytest.raises(ConfigError, match="patch_size shapes a new model"):
        TrainStage("t", steps=1, warm_start=True, patch_size=32)


def test_recipe_flags_do_not_mix_with_plain_training_flags(tmp_path, capsys):
    assert main(["train", "--recipe", "tiny", "--out", str(tmp_path / "o"), "--steps", "5"]) == 2
    assert "--steps: a recipe's stages carry their own settings" in capsys.readouterr().err
    assert main(["train", "--list-recipes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in listed["recipes"]] == list(RECIPES)


def test_tiny_recipe_runs_end_to_end(tmp_path, capsys):
    from keystone_vla.vla.checkpoint import load_pretrained
    from keystone_vla.vla.policy import VLAPolicy

    out = tmp_path / "run"
    assert main(["train", "--recipe", "tiny", "--out", str(out), "--threads", "1", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert "== tiny [2/5] stage s" in captured.err  # progress lines on stderr
    assert summary["recipe"] == "tiny" and summary["final"] == str(out / "i")
    assert [(s["stage"], s["kind"]) for s in summary["stages"]] == [
        ("collect", "collect"), ("s", "train"), ("h", "yaw_head"), ("i", "plan_adapter"), ("check", "check")]
    assert summary["stages"][0]["episodes_written"] == 2 and summary["stages"][-1]["episodes"] == 1
    assert (out / "data.zarr").is_dir() and (out / "check" / "results.json").is_file()
    final = load_pretrained(out / "i")
    assert final.config.yaw_head and final.config.plan_adapter_rank == 8 and final.config.n_action_steps == 2
    assert final.train_info["recipe"]["name"] == "tiny" and final.train_info["recipe"]["stage"] == "i"
    assert final.train_info["recipe"]["lineage"] == ["s", "h", "i"]
    for stage in ("s", "h"):
        assert json.loads((out / stage / "train_info.json").read_text())["recipe"]["stage"] == stage
    VLAPolicy.from_pretrained(out / "i", warmup=False)
    from keystone_vla.policies.agent_config import PRESETS, AgentConfig

    # every model stage carries the agent it is checked and evaluated with; the check ran exactly that agent
    assert all(AgentConfig.load(out / stage) == PRESETS["shipped"] for stage in ("s", "h", "i"))
    assert json.loads((out / "check" / "results.json").read_text())["agent"]["preset"] == "shipped"
    # one stage again: the store exists, so collection is skipped; the refit replaces h only
    assert main(["train", "--recipe", "tiny", "--out", str(out), "--stages", "collect,h", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["stage"] for s in again["stages"]] == ["collect", "h"] and again["stages"][0]["skipped"] is True
    assert again["final"] == str(out / "h")
    # a DAgger round: stage s's checkpoint drives part of each episode into a second store, recorded once
    from keystone_vla.cli.recipe import run_recipe

    dagger = Recipe("tiny-dagger", "", (get_recipe("tiny").stage("s"),
                                        CollectStage("dagger", episodes_per_task=1, tasks=("pick_place",),
                                                     image_size=32, workers=1, store="mix", learner=True)))
    first = run_recipe(dagger, out, stages=["dagger"], progress=False)["stages"][0]
    assert first["skipped"] is False and first["episodes_written"] == 1 and (out / "mix.zarr").is_dir()
    assert json.loads((out / "dagger" / "collect.json").read_text())["learner"] == str(out / "s")
    assert run_recipe(dagger, out, stages=["dagger"], progress=False)["stages"][0]["skipped"] is True
