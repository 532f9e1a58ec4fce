"""`AgentConfig`: every rule the VLA agent applies around the model, as one frozen, named, saved configuration.

The agent (`keystone_vla.policies.vla_agent.VLAAgent`) is the model plus this config: which assists run, in which
order (`assists`, applied first to last each tick), each assist's bounds, how steps hand over and regrasp, whether
a kit's independent put-downs are reordered, how often a held part is located again, how sure a plan must be to
run, and how many actions of each chunk run before the model predicts again.

Presets (`PRESETS`, `get_agent_config(name)`):
- `shipped`: what keystone-base is evaluated and deployed with; see docs/agent.md for why each rule exists;
- `raw`: the model alone: no assist, no reordering, no regrasp, the held part located once per step (the object
  token as the step began). The plan gate and the step hand-over stay: they decide *whether* and *which* step
  runs, not how the arm moves;
- `blind`: a control, not for deployment: `shipped` with every camera frame the model sees replaced by one
  constant grey frame (`images="blank"`), which measures what vision contributes.

A checkpoint folder may hold `agent.json` (`save` / `load`): the config it was measured with. `keystone eval`,
`keystone demo` and the ROS policy node all resolve the agent with `resolve_agent_config`, so an evaluated
configuration is the deployed one. Unknown keys are an error that names the key and the nearest valid one;
a config is never guessed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keystone_vla.errors import ConfigError, near_names

from .assists.alignment import AlignmentConfig, FinalAlignment
from .assists.binary_gripper import BinaryGripper, BinaryGripperConfig
from .assists.regrasp import RegraspConfig
from .assists.release_interlock import ReleaseInterlock, ReleaseInterlockConfig
from .assists.set_down import SetDown, SetDownConfig
from .assists.still_release import StillHandRelease, StillReleaseConfig
from .plan_sequencer import SequencerConfig

AGENT_FILE = "agent.json"

#: assist name (also the name of its config field on AgentConfig) -> the class built from that config
ASSISTS: dict[str, type] = {
    "alignment": FinalAlignment,
    "release_interlock": ReleaseInterlock,
    "still_release": StillHandRelease,
    "binary_gripper": BinaryGripper,
    "set_down": SetDown,
}
SHIPPED_ASSISTS = ("alignment", "release_interlock", "still_release", "binary_gripper", "set_down")
IMAGE_SOURCES = ("camera", "blank")


@dataclass(frozen=True)
class AgentConfig:
    preset: str = "shipped"  # the preset this config was made from (reports show it)
    assists: tuple[str, ...] = SHIPPED_ASSISTS  # applied in this order to every commanded action
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    release_interlock: ReleaseInterlockConfig = field(default_factory=ReleaseInterlockConfig)
    still_release: StillReleaseConfig = field(default_factory=StillReleaseConfig)
    binary_gripper: BinaryGripperConfig = field(default_factory=BinaryGripperConfig)
    set_down: SetDownConfig = field(default_factory=SetDownConfig)
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)
    regrasp: RegraspConfig = field(default_factory=RegraspConfig)
    pair_order: bool = True  # independent put-downs (a kit) in the demonstrations' order, largest y first
    relocate_every: int = 1  # ticks between locating a held part again during its put-down (0: once per step)
    min_plan_confidence: float = 0.9  # refuse a plan less sure than this of where a part goes (0: never)
    look_lift: float = 0.08  # m: lift the open hand up to this to see a released part it hides (0: judge it unseen)
    actions_per_chunk: int | None = None  # actions run per predicted chunk (None: the checkpoint's count)
    images: str = "camera"  # what the model sees: "camera" frames, or "blank" (a constant frame: a control run)

    def __post_init__(self) -> None:
        if self.images not in IMAGE_SOURCES:
            raise ConfigError(f"images must be one of {', '.join(IMAGE_SOURCES)} (blank: a constant grey frame, to "
                              f"measure what vision contributes), got {self.images!r}")
        if isinstance(self.assists, (list, str)):
            object.__setattr__(self, "assists", tuple(_split(self.assists)))
        for name in self.assists:
            if name not in ASSISTS:
                raise ConfigError(f"unknown assist {name!r}{_suggest(name, ASSISTS)}; valid: {', '.join(ASSISTS)}")
        if len(set(self.assists)) != len(self.assists):
            raise ConfigError(f"assists lists one twice: {', '.join(self.assists)}")
        if self.relocate_every < 0:
            raise ConfigError(f"relocate_every must be >= 0 ticks (0: once per step), got {self.relocate_every}")
        if not 0.0 <= self.min_plan_confidence < 1.0:
            raise ConfigError(f"min_plan_confidence must be in [0, 1) (0: never refuse on confidence), got "
                              f"{self.min_plan_confidence}")
        if not 0.0 <= self.look_lift <= 0.2:
            raise ConfigError(f"look_lift must be in [0, 0.2] metres (0: off), got {self.look_lift}")
        if self.actions_per_chunk is not None and self.actions_per_chunk < 1:
            raise ConfigError(f"actions_per_chunk must be >= 1 (or none: the checkpoint's), got "
                              f"{self.actions_per_chunk}")

    # ------------------------------------------------------------------------------------------ assists
    def build_assists(self) -> list[Any]:
        """Fresh assist objects, in `assists` order, each with its config."""
        return [ASSISTS[name](getattr(self, name)) for name in self.assists]

    # ------------------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["assists"] = list(self.assists)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "agent config") -> AgentConfig:
        """Strict: an unknown key (at any depth) raises ConfigError naming it and the nearest valid key."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        return _build(cls, data, where)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write `agent.json` into a checkpoint folder (atomically)."""
        path = Path(folder) / AGENT_FILE
        tmp = path.with_name(f".{AGENT_FILE}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> AgentConfig | None:
        """The `agent.json` of a checkpoint folder, or None when it has none."""
        path = Path(folder) / AGENT_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc}); fix it or delete it to use the shipped "
                              "agent") from exc
        return cls.from_dict(data, str(path))

    def with_overrides(self, assignments: list[str] | tuple[str, ...]) -> AgentConfig:
        """This config with ``key=value`` assignments applied (``alignment.radius=0.03``, ``assists=binary_gripper``,
        ``actions_per_chunk=none``); keys and values are checked like `from_dict`'s."""
        data = self.to_dict()
        for text in assignments:
            key, sep, value = text.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"--agent-set {text!r}: expected key=value, e.g. alignment.radius=0.03")
            node, hints, cls_ = data, _hints(AgentConfig), AgentConfig
            parts = key.split(".")
            for depth, part in enumerate(parts):
                if part not in hints:
                    raise ConfigError(f"--agent-set {text!r}: unknown key {'.'.join(parts[:depth + 1])!r}"
                                      f"{_suggest(part, hints)}; valid: {', '.join(hints)}")
                if depth < len(parts) - 1:
                    cls_ = hints[part]
                    if not dataclasses.is_dataclass(cls_):
                        raise ConfigError(f"--agent-set {text!r}: {part!r} has no sub-keys")
                    node, hints = node[part], _hints(cls_)
                else:
                    if dataclasses.is_dataclass(hints[part]):
                        raise ConfigError(f"--agent-set {text!r}: {part!r} is a group; set one of its keys, e.g. "
                                          f"{part}.{next(iter(_hints(hints[part])))}=...")
                    node[part] = _parse(value.strip(), hints[part], text)
        if "preset" not in {a.partition("=")[0].strip() for a in assignments}:
            data["preset"] = f"{self.preset} + {', '.join(a.strip() for a in assignments)}"
        return AgentConfig.from_dict(data, "--agent-set")


def _raw() -> AgentConfig:
    return AgentConfig(preset="raw", assists=(), pair_order=False, regrasp=RegraspConfig(max_regrasps=0),
                       relocate_every=0, look_lift=0.0)


PRESETS: dict[str, AgentConfig] = {
    "shipped": AgentConfig(),
    "raw": _raw(),
    # a control, never a deployment: the shipped agent with every camera frame replaced by one constant frame, so
    # the run shows what the images contribute beyond the instruction, the object token and the proprio state
    "blind": AgentConfig(preset="blind", images="blank"),
}


def get_agent_config(name: str) -> AgentConfig:
    """The named preset; an unknown name raises ConfigError with the nearest one."""
    if name not in PRESETS:
        raise ConfigError(f"unknown agent preset {name!r}{_suggest(name, PRESETS)}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve_agent_config(folder: str | os.PathLike[str] | None, preset: str | None = None,
                         overrides: list[str] | tuple[str, ...] = ()) -> AgentConfig:
    """The agent a checkpoint runs with: `preset` when given, else the folder's `agent.json`, else `shipped`;
    then `overrides` (``key=value``). The one way eval, demo and the ROS node decide it."""
    if preset is not None:
        config = get_agent_config(preset)
    else:
        config = (AgentConfig.load(folder) if folder is not None else None) or PRESETS["shipped"]
    return config.with_overrides(overrides) if overrides else config


# ---------------------------------------------------------------------------------------------- helpers
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _suggest(name: str, valid: Any) -> str:
    close = near_names(name, valid)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _split(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, hints)}; valid: {', '.join(hints)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key!r} must be an object of {', '.join(_hints(kind))}")
            kwargs[key] = _build(kind, value, f"{where}: {key}")
        else:
            kwargs[key] = _check_type(value, kind, f"{where}: {key}")
    return cls(**kwargs)


def _check_type(value: Any, kind: Any, where: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of names, got {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _parse(text: str, kind: Any, where: str) -> Any:
    """A --agent-set value as the type of its field."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        return [] if text.lower() in ("", "none") else _split(text)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none":
            return None
        kind = next(a for a in args if a is not type(None))
    try:
        if kind is bool:
            low = text.lower()
            if low in ("true", "on", "yes", "1"):
                return True
            if low in ("false", "off", "no", "0"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        name = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise ConfigError(f"--agent-set {where!r}: the value must be {name}, got {text!r}") from None
    return text
