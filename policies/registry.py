"""Policy names -> policy objects: `oracle`, `broken`, `keystone-base`, or a checkpoint folder.

One place decides how a ``--policy`` value is loaded (the `keystone eval` and `keystone demo` commands and the
evaluation workers all call `load_policy`). A checkpoint folder's ``config.json`` says which kind it is:
``"model_type": "keystone-cnn-bc"`` is the language-free baseline, anything else is a VLA checkpoint driven by
`VLAAgent`. This module must never guess: an unknown name or an unreadable folder is an error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from keystone_vla.errors import ConfigError

SHIPPED = "keystone-base"
BUILTIN = ("oracle", "broken", SHIPPED)
BASELINE_MODEL_TYPE = "keystone-cnn-bc"


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
    """('oracle' | 'broken' | 'baseline' | 'vla', checkpoint folder or None) for a --policy value."""
    if spec in ("oracle", "broken"):
        return spec, None
    if spec == SHIPPED:
        folder = shipped_checkpoint()
        if folder is None:
            raise ConfigError(f"the {SHIPPED} checkpoint is not installed (no keystone_vla/vla/pretrained/{SHIPPED}/"
                              "config.json); train one with `keystone train --preset base` and pass its folder as "
                              "--policy PATH, or use --policy oracle")
        return checkpoint_kind(folder), folder
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(f"unknown policy {spec!r}: not one of {', '.join(BUILTIN)} and no such folder")
    return checkpoint_kind(path), path


def load_policy(spec: str, max_regrasps: int | None = None, order_pairs: bool | None = None,
                relocate_every: int | None = None, align_radius: float | None = None,
                binary_gripper: bool | None = None, min_plan_confidence: float | None = None,
                still_release: float | None = None, **runtime: Any) -> Any:
    """Build the policy named by `spec` (see module docstring); `runtime` goes to the chunk runtime config,
    `max_regrasps`, `order_pairs`, `relocate_every`, `align_radius`, `binary_gripper`, `min_plan_confidence` and
    `still_release` to a VLA agent (None: its default; ignored by the other policies, which have no plan)."""
    kind, folder = resolve_policy_name(spec)
    if kind == "oracle":
        from keystone_vla.policies.oracle import OraclePolicy

        return OraclePolicy()
    if kind == "broken":
        from keystone_vla.policies.oracle import BrokenPolicy

        return BrokenPolicy()
    if kind == "baseline":
        from keystone_vla.policies.baseline import BaselinePolicy

        return BaselinePolicy.from_pretrained(folder, **runtime)
    from keystone_vla.policies.vla_agent import VLAAgent

    agent: dict[str, Any] = {} if max_regrasps is None else {"max_regrasps": max_regrasps}
    if order_pairs is not None:
        agent["order_pairs"] = order_pairs
    if relocate_every is not None:
        agent["relocate_every"] = relocate_every
    if align_radius is not None:
        agent["align_radius"] = align_radius
    if binary_gripper is not None:
        agent["binary_gripper"] = binary_gripper
    if min_plan_confidence is not None:
        agent["min_plan_confidence"] = min_plan_confidence
    if still_release is not None:
        agent["still_release"] = still_release
    return VLAAgent.from_pretrained(folder, **agent, **runtime)
