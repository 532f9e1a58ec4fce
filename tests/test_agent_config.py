"""AgentConfig: presets, strict keys, --agent-set parsing, agent.json round trip, and how eval/demo/ROS resolve it."""

from __future__ import annotations

import json

import pytest

from keystone_vla.errors import ConfigError
from keystone_vla.policies.agent_config import (
    PRESETS,
    AgentConfig,
    get_agent_config,
    resolve_agent_config,
)


def test_presets_shipped_and_raw() -> None:
    shipped, raw = get_agent_config("shipped"), get_agent_config("raw")
    assert shipped.assists == ("alignment", "release_interlock", "still_release", "binary_gripper", "set_down")
    assert shipped.pair_order and shipped.regrasp.max_regrasps == 2 and shipped.relocate_every == 1
    assert raw.assists == () and not raw.pair_order and raw.regrasp.max_regrasps == 0 and raw.relocate_every == 0
    assert [type(a).__name__ for a in shipped.build_assists()] == [
        "FinalAlignment", "ReleaseInterlock", "StillHandRelease", "BinaryGripper", "SetDown"]
    assert raw.build_assists() == []
    blind = get_agent_config("blind")
    assert blind.images == "blank" and blind.assists == shipped.assists and shipped.images == "camera"
    with pytest.raises(ConfigError, match="images must be one of camera, blank"):
        shipped.with_overrides(["images=black"])
    with pytest.raises(ConfigError, match="unknown agent preset 'shiped' \\(did you mean 'shipped'\\?\\)"):
        get_agent_config("shiped")
    with pytest.raises(dataclasses_frozen()):
        shipped.pair_order = False  # type: ignore[misc]


def dataclasses_frozen() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_overrides_are_typed_and_strict() -> None:
    c = PRESETS["shipped"].with_overrides(["alignment.radius=0.03", "assists=binary_gripper,alignment",
                                           "pair_order=off", "actions_per_chunk=4"])
    assert c.alignment.radius == 0.03 and c.assists == ("binary_gripper", "alignment") and not c.pair_order
    assert c.actions_per_chunk == 4 and c.preset.startswith("shipped + ")
    assert c.with_overrides(["actions_per_chunk=none"]).actions_per_chunk is None
    assert PRESETS["shipped"].with_overrides(["assists="]).assists == ()
    for bad, message in (("alignment.radus=1", "unknown key 'alignment.radus' \\(did you mean 'radius'\\?\\)"),
                         ("alignmnt.radius=1", "did you mean 'alignment'"),
                         ("pair_order=maybe", "true or false"),
                         ("relocate_every=1.5", "an integer"),
                         ("assists=alignment,gripper", "unknown assist 'gripper'"),
                         ("assists=alignment,alignment", "lists one twice"),
                         ("alignment=1", "is a group"),
                         ("alignment.radius", "expected key=value"),
                         ("alignment.radius=-1", "alignment.radius must be > 0")):
        with pytest.raises(ConfigError, match=message):
            PRESETS["shipped"].with_overrides([bad])


def test_agent_json_round_trip_and_unknown_keys(tmp_path) -> None:
    c = PRESETS["shipped"].with_overrides(["still_release.speed=0.003"])
    c.save(tmp_path)
    assert AgentConfig.load(tmp_path) == c
    data = json.loads((tmp_path / "agent.json").read_text())
    data["still_release"]["sped"] = 1
    (tmp_path / "agent.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="agent.json: still_release: unknown key 'sped' \\(did you mean 'speed'\\?\\)"):
        AgentConfig.load(tmp_path)
    (tmp_path / "agent.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AgentConfig.load(tmp_path)
    assert AgentConfig.load(tmp_path / "nowhere") is None


def test_resolution_preset_then_agent_json_then_shipped(tmp_path) -> None:
    assert resolve_agent_config(tmp_path) == PRESETS["shipped"]  # no agent.json
    PRESETS["raw"].save(tmp_path)
    assert resolve_agent_config(tmp_path) == PRESETS["raw"]  # the checkpoint's own
    assert resolve_agent_config(tmp_path, "shipped") == PRESETS["shipped"]  # an explicit preset wins
    assert resolve_agent_config(tmp_path, None, ["relocate_every=2"]).relocate_every == 2


def test_the_shipped_checkpoint_carries_the_shipped_agent() -> None:
    from keystone_vla.policies.registry import agent_config_of, shipped_checkpoint

    folder = shipped_checkpoint()
    assert folder is not None and (folder / "agent.json").is_file()
    assert AgentConfig.load(folder) == PRESETS["shipped"]
    assert agent_config_of("keystone-base") == PRESETS["shipped"]
    assert agent_config_of("oracle") is None
