"""Data contracts shared by every part of Keystone (see shared/DESIGN.md, "Contracts").

Shapes and dtypes are part of the contract and checked at construction, so a malformed value fails where it
is made, not three modules later:

- `Observation.images[cam]`: uint8 [H, W, 3]; `depth[cam]`: float32 [H, W] metres; `state`: float32 [n]
  (arm joint positions + gripper opening in [0, 1]); `ee_pose`: float32 [7] (xyz m + quaternion xyzw, base frame).
- `Action`: float32 [7] = (dx, dy, dz) m, (rx, ry, rz) axis-angle rad, gripper (0 open .. 1 closed), base frame.
- `ActionChunk.actions`: float32 [H, 7].
- `Plan`: ordered `PlanStep`s in the closed skill grammar (`SKILLS`), each with the imperative text a policy runs.

This module must never import anything heavy (torch, pybullet): ROS nodes and the CLI import it at start-up.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keystone_vla.errors import ConfigError

ACTION_DIM = 7
#: Skill grammar: skill name -> argument roles. Arguments are object ids present in the scene.
SKILLS: dict[str, tuple[str, ...]] = {
    "pick": ("obj",),
    "place_on": ("obj", "target"),
    "place_in": ("obj", "target"),
    "insert": ("obj", "target"),
}
_STEP_RE = re.compile(r"^\s*([a-z_]+)\(\s*([a-z0-9_]+(?:\s*,\s*[a-z0-9_]+)*)\s*\)\s*$")


def _as_array(name: str, value: Any, dtype: type, shape: tuple[int | None, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype != np.dtype(dtype):
        if dtype is np.uint8 and arr.dtype != np.uint8:
            raise ConfigError(f"{name} must be uint8, got {arr.dtype}; convert images with .astype(np.uint8)")
        arr = arr.astype(dtype)
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "x".join("?" if s is None else str(s) for s in shape)
        raise ConfigError(f"{name} must have shape [{want}], got {list(arr.shape)}")
    return arr


@dataclass
class Observation:
    """What a policy sees at one control tick (see module docstring for shapes)."""

    images: dict[str, np.ndarray]
    state: np.ndarray
    ee_pose: np.ndarray
    instruction: str = ""
    depth: dict[str, np.ndarray] = field(default_factory=dict)
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        self.images = {k: _as_array(f"images[{k!r}]", v, np.uint8, (None, None, 3)) for k, v in self.images.items()}
        self.depth = {k: _as_array(f"depth[{k!r}]", v, np.float32, (None, None)) for k, v in self.depth.items()}
        self.state = _as_array("state", self.state, np.float32, (None,))
        self.ee_pose = _as_array("ee_pose", self.ee_pose, np.float32, (7,))


@dataclass
class ActionChunk:
    """H consecutive 7-D actions predicted in one forward pass; `actions` float32 [H, 7]."""

    actions: np.ndarray
    step_done: float = 0.0  # policy's estimate that the current plan step is finished (0..1)

    def __post_init__(self) -> None:
        self.actions = _as_array("actions", self.actions, np.float32, (None, ACTION_DIM))

    def __len__(self) -> int:
        return int(self.actions.shape[0])


@dataclass(frozen=True)
class PlanStep:
    """One step of a plan: a skill applied to scene object ids, plus its imperative instruction."""

    skill: str
    args: tuple[str, ...]
    text: str

    def __post_init__(self) -> None:
        if self.skill not in SKILLS:
            raise ConfigError(f"unknown skill {self.skill!r}; valid skills: {', '.join(SKILLS)}")
        if len(self.args) != len(SKILLS[self.skill]):
            raise ConfigError(
                f"skill {self.skill} takes {len(SKILLS[self.skill])} argument(s) {SKILLS[self.skill]}, got {self.args}"
            )

    @property
    def call(self) -> str:
        """The grammar form, e.g. ``place_on(red_block, blue_block)``."""
        return f"{self.skill}({', '.join(self.args)})"

    @classmethod
    def parse(cls, call: str, text: str = "") -> PlanStep:
        m = _STEP_RE.match(call)
        if not m:
            raise ConfigError(f"cannot parse plan step {call!r}; expected e.g. 'pick(red_block)'")
        args = tuple(a.strip() for a in m.group(2).split(","))
        return cls(m.group(1), args, text)


@dataclass(frozen=True)
class Plan:
    """An instruction broken into executable steps."""

    instruction: str
    steps: tuple[PlanStep, ...]

    def calls(self) -> list[str]:
        return [s.call for s in self.steps]

    def to_json(self) -> str:
        return json.dumps(
            {"instruction": self.instruction, "steps": [{"call": s.call, "text": s.text} for s in self.steps]}
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        d = json.loads(text)
        return cls(d["instruction"], tuple(PlanStep.parse(s["call"], s.get("text", "")) for s in d["steps"]))


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything needed to reproduce one simulated episode exactly."""

    task: str
    seed: int
    split: str = "seen"
    arm: str = "panda"
    instruction: str | None = None  # override the sampled instruction (e.g. user phrasings in eval)
