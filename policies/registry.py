"""Policy names -> policy objects: `oracle`, `scripted`, `keystone-base`, a registered name, or a checkpoint folder.

One place decides how a ``--policy`` value is loaded (`keystone eval`, `keystone demo`, the evaluation workers
and the ROS policy node all call `load_policy`). Names map to loaders in one table, `POLICIES`
(`register_policy` adds one, e.g. a test's deliberately broken policy). A checkpoint folder's ``config.json``
says which kind it is (`CHECKPOINT_KINDS`): ``"model_type": "keystone-cnn-bc"`` is the language-free baseline,
anything else is a VLA checkpoint, driven by `VLAAgent` with the `AgentConfig` that `resolve_agent_config`
picks (an explicit preset, else the checkpoint's agent.json, else `shipped`). `scripted` is the no-learning
control (`keystone_vla.policies.scripted.ScriptedModel`) driven by the same `VLAAgent`, so it takes an agent
config like a checkpoint (`AGENT_POLICIES`; without a preset: `shipped`). This module must never guess: an
unknown name or an unreadable folder is an error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keystone_vla.errors import ConfigError

from .agent_config import AgentConfig

SHIPPED = "keystone-base"
BASELINE_MODEL_TYPE = "keystone-cnn-bc"

Loader = Callable[..., Any]  # (folder or None, agent config or None, **runtime) -> policy


def _oracle(folder: Path | None, agent: AgentConfig | None, **runtime: Any) -> Any:
    from .oracle import OraclePolicy

    return OraclePolicy()


def _baseline(folder: Path | None, agent: AgentConfig | None, **runtime: Any) -> Any:
    from .baseline import BaselinePolicy

    return BaselinePolicy.from_pretrained(folder, **runtime)


def _vla(folder: Path | None, agent: AgentConfig | None, **runtime: Any) -> Any:
    from .vla_agent import VLAAgent

    return VLAAgent.from_pretrained(folder, agent, **runtime)


def _scripted(folder: Path | None, agent: AgentConfig | None, **runtime: Any) -> Any:
    from .agent_config import resolve_agent_config
    from .runtime import RuntimeConfig
    from .scripted import ScriptedModel
    from .vla_agent import VLAAgent, actions_per_chunk

    model, config = ScriptedModel(), agent or resolve_agent_config(None)
    if runtime:
        return VLAAgent(model, config, RuntimeConfig(**{"n_action_steps": actions_per_chunk(model, config), **runtime}))
    return VLAAgent(model, config)


#: policy name -> loader of a policy that needs no checkpoint folder
POLICIES: dict[str, Loader] = {"oracle": _oracle, "scripted": _scripted}
#: the `POLICIES` names that are VLA agents (`VLAAgent` around another model): they take an agent config
AGENT_POLICIES: set[str] = {"scripted"}
#: checkpoint kind (from config.json's model_type) -> loader
CHECKPOINT_KINDS: dict[str, Loader] = {"baseline": _baseline, "vla": _vla}


def register_policy(name: str, agent: bool = False) -> Callable[[Loader], Loader]:
    """Decorator: make `name` a --policy value loaded by the decorated ``loader(folder, agent, **runtime)``;
    `agent`: the policy is a `VLAAgent` and takes an agent config (preset, overrides)."""
    if name == SHIPPED or name in POLICIES:
        raise ConfigError(f"policy name {name!r} is taken")

    def add(loader: Loader) -> Loader:
        POLICIES[name] = loader
        if agent:
            AGENT_POLICIES.add(name)
        return loader

    return add


def shipped_checkpoint(name: str = SHIPPED) -> Path | None:
    """Folder of a checkpoint shipped inside the package (``keystone_vla/vla/pretrained/<name>``), if present."""
    import importlib.util

    spec = importlib.util.find_spec("keystone_vla.vla")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "pretrained" / name
        if (folder / "config.json").is_file():
            return folder
    return None


def checkpoint_kind(path: Path) -> str:
    """'baseline' or 'vla' for a checkpoint folder; raises ConfigError when it is not one."""
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"--policy {path}: no config.json there; give oracle, {SHIPPED}, or a checkpoint folder "
                          "written by `keystone train` or policies.baseline")
    try:
        data = json.loads(config.read_text())
    except ValueError as exc:
        raise ConfigError(f"{config} is not valid JSON ({exc})") from exc
    return "baseline" if data.get("model_type") == BASELINE_MODEL_TYPE else "vla"


def resolve_policy_name(spec: str) -> tuple[str, Path | None]:
    """(a `POLICIES` name | 'baseline' | 'vla', checkpoint folder or None) for a --policy value."""
    if spec in POLICIES:
        return spec, None
    if spec == SHIPPED:
        folder = shipped_checkpoint()
        if folder is None:
            raise ConfigError(f"the {SHIPPED} checkpoint is not installed (no keystone_vla/vla/pretrained/{SHIPPED}/"
                              f"config.json); train one with `keystone train --recipe {SHIPPED}` and pass its folder "
                              "as --policy PATH, or use --policy oracle")
        return checkpoint_kind(folder), folder
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(f"unknown policy {spec!r}: not one of {', '.join([*POLICIES, SHIPPED])} and no such folder")
    return checkpoint_kind(path), path


def load_policy(spec: str, agent: AgentConfig | None = None, **runtime: Any) -> Any:
    """Build the policy named by `spec` (see module docstring). `agent` configures a VLA agent (None: the
    checkpoint's agent.json, else the `shipped` preset; other policies have no agent and ignore it); `runtime`
    goes to the chunk runtime config of chunk policies."""
    kind, folder = resolve_policy_name(spec)
    loader = POLICIES.get(kind) or CHECKPOINT_KINDS[kind]
    return loader(folder, agent, **runtime)


def agent_config_of(spec: str, preset: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> AgentConfig | None:
    """The agent config a --policy value runs with (`resolve_agent_config` on its checkpoint folder, none for
    `AGENT_POLICIES`); None for policies that are not VLA agents, which then must not be given a preset or
    overrides."""
    from .agent_config import resolve_agent_config

    kind, folder = resolve_policy_name(spec)
    if kind != "vla" and kind not in AGENT_POLICIES:
        if preset is not None or overrides:
            raise ConfigError(f"--agent / --agent-set configure a VLA agent; --policy {spec} is not one")
        return None
    return resolve_agent_config(folder, preset, overrides)
