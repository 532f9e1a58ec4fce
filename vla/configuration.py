"""Typed, frozen configuration of the Keystone VLA model, with named presets; saved as ``config.json``.

`VLAConfig` fully describes the architecture (vision tower, projector, LM trunk, heads), the action spec
(dimension, chunk size, control rate, normalisation of actions) and the inputs (cameras, image size, state size,
token budgets), so a checkpoint folder can be rebuilt from ``config.json`` alone. Presets:

- ``tiny``: a few hundred thousand parameters; trains in seconds; for tests.
- ``base``: ~7 M parameters (ViT 4x256 + 4-layer Llama 256), the model shipped as ``keystone-base``.

Loading JSON is strict: an unknown key anywhere is an error naming the key (typos must not be silently
ignored). This module must never import torch or transformers: configs are read by the CLI and ROS nodes
before any model exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keystone_vla.errors import ConfigError, unknown_choice
from keystone_vla.vla.object_token import FRAMES as OBJECT_FRAMES

ACTION_HEADS = ("chunk", "tokens")
CHUNK_QUERIES = ("queries", "pooled")
TEXT_ENCODERS = ("none", "minilm")
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class VisionConfig:
    """The image tower. `pretrained` is a local folder with a ViT/SigLIP vision model (``from_pretrained``);
    once built, the backbone's own config is captured in `hf_config` so checkpoints load without that folder."""

    image_size: int = 128
    patch_size: int = 16
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    pretrained: str | None = None
    hf_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class LMConfig:
    """The causal LM trunk (Llama by default; any `AutoModelForCausalLM` folder via `pretrained`)."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 688
    max_position_embeddings: int = 512
    pretrained: str | None = None
    hf_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class VLAConfig:
    """Architecture + action spec of one VLA model (see module docstring)."""

    preset: str = "base"
    vision: VisionConfig = field(default_factory=VisionConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    cameras: tuple[str, ...] = ("front",)
    state_dim: int = 8
    action_dim: int = 7
    chunk_size: int = 8
    control_hz: float = 10.0
    #: actions are end-effector deltas in the robot base frame (shared/DESIGN.md, "Contracts")
    action_space: str = "ee_delta"
    action_head: str = "chunk"
    chunk_query: str = "pooled"  # chosen by measurement, see keystone_vla.vla.modeling
    n_action_bins: int = 256
    #: discrete tokens bin normalised actions uniformly over [-range, +range] (values outside are clipped)
    action_bin_range: float = 3.0
    max_instruction_tokens: int = 24
    max_plan_tokens: int = 96
    max_plan_steps: int = 12
    text_encoder: str = "none"
    #: one prefix token for the current plan step's objects (positions relative to the gripper, yaw, size; see
    #: `keystone_vla.vla.object_token`). Off in the dataclass so checkpoints saved before it existed load unchanged;
    #: on in the presets.
    object_token: bool = False
    #: where a placing step's target is measured from: "gripper" (the gripper now) or "held_part" (where the part
    #: grasped at the step's start sits now, so an off-centre grasp is compensated; see
    #: `keystone_vla.vla.object_token`). "gripper" in the dataclass so older checkpoints load unchanged.
    object_frame: str = "gripper"
    #: a small MLP from the object token's features and the proprio state straight to the chunk's yaw
    #: (`keystone_vla.vla.yaw_head`): an L1 trunk learns the median turn, which is none, while the object
    #: features alone predict it. Off in the dataclass so older checkpoints load unchanged.
    yaw_head: bool = False
    #: rank of the plan adapter (`keystone_vla.vla.plan_adapter`: LoRA deltas on the LM, active only while it
    #: writes a plan, plus a MiniLM sentence token in the plan prompt); 0 = none, the plan head reads words only
    plan_adapter_rank: int = 0
    #: words the plan adapter embeds itself because the tokenizer maps them to [UNK] ("under", "above": order
    #: words of its relation phrasing, `keystone_vla.vla.plan_phrasing`); plan prompts only, ids after the LM's
    plan_adapter_words: tuple[str, ...] = ()
    #: the plan adapter adds a projection of MiniLM's contextual vector of each instruction word to that word's
    #: embedding in the plan prompt (MiniLM reads both ways, the causal LM only leftwards)
    plan_word_features: bool = False
    #: actions a closed-loop agent executes of each predicted chunk before it predicts again (LeRobot's
    #: ``n_action_steps``; `keystone_vla.policies.vla_agent`), recorded because a checkpoint can depend on it: a
    #: model that keeps predicting the gripper close two ticks ahead never closes at 2 and works at 4.
    #: `keystone train --actions-per-chunk N` sets it; the agent caps it at chunk_size; a caller's explicit
    #: ``n_action_steps`` (``keystone eval --actions-per-chunk``) overrides it. 2 in the dataclass, the agent's
    #: default, so older checkpoints load unchanged.
    n_action_steps: int = 2
    #: word-level vocabulary size (set from the tokenizer when the model is built; bins come after it)
    vocab_size: int = 0
    #: skill -> step text template learned from data, e.g. {"pick": "pick up the {0}"}
    step_templates: dict[str, str] = field(default_factory=dict)
    #: object ids seen in training plans; the plan head's candidates when the caller gives no scene objects
    known_objects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.action_head not in ACTION_HEADS:
            raise unknown_choice("action_head", self.action_head, ACTION_HEADS)
        if self.chunk_query not in CHUNK_QUERIES:
            raise unknown_choice("chunk_query", self.chunk_query, CHUNK_QUERIES)
        if self.text_encoder not in TEXT_ENCODERS:
            raise unknown_choice("text_encoder", self.text_encoder, TEXT_ENCODERS)
        if self.object_frame not in OBJECT_FRAMES:
            raise unknown_choice("object_frame", self.object_frame, OBJECT_FRAMES)
        if self.yaw_head and not (self.object_token and self.action_head == "chunk"):
            raise ConfigError("yaw_head needs object_token=True and action_head='chunk' (it reads the object token's "
                              "features and replaces the chunk head's yaw)")
        if self.plan_adapter_rank < 0:
            raise ConfigError(f"plan_adapter_rank must be >= 0 (0 = no plan adapter), got {self.plan_adapter_rank}")
        if self.plan_word_features and not self.plan_adapter_rank:
            raise ConfigError("plan_word_features needs a plan adapter (plan_adapter_rank >= 1)")
        if self.plan_adapter_words and not self.plan_adapter_rank:
            raise ConfigError("plan_adapter_words needs a plan adapter (plan_adapter_rank >= 1)")
        if len(set(self.plan_adapter_words)) != len(self.plan_adapter_words) or not all(
                isinstance(w, str) and w.isalnum() and w == w.lower() for w in self.plan_adapter_words):
            raise ConfigError(f"plan_adapter_words must be distinct lower-case words, got {self.plan_adapter_words}")
        if not self.cameras:
            raise ConfigError("cameras must name at least one camera, e.g. ('front',)")
        if not 1 <= self.chunk_size <= 64:
            raise ConfigError(f"chunk_size must be in 1..64, got {self.chunk_size}")
        if self.vision.image_size % self.vision.patch_size:
            raise ConfigError(
                f"vision.image_size {self.vision.image_size} must be a multiple of patch_size {self.vision.patch_size}"
            )
        if isinstance(self.n_action_steps, bool) or not isinstance(self.n_action_steps, int) or self.n_action_steps < 1:
            raise ConfigError(f"n_action_steps must be a whole number >= 1 (actions executed per predicted chunk), "
                              f"got {self.n_action_steps!r}")
        if self.n_action_bins < 2:
            raise ConfigError(f"n_action_bins must be >= 2, got {self.n_action_bins}")

    # ---- derived sizes -------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def tokens_per_image(self) -> int:
        return (self.vision.image_size // self.vision.patch_size) ** 2

    @property
    def action_prefix_len(self) -> int:
        """Length of the action prefix: image tokens per camera + instruction (+ MiniLM token) (+ object token)
        + proprio."""
        extra = int(self.text_encoder == "minilm") + int(self.object_token)
        return len(self.cameras) * self.tokens_per_image + self.max_instruction_tokens + extra + 1

    # ---- (de)serialisation ---------------------------------------------------------------------------
    def replace(self, **changes: Any) -> VLAConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"] = list(self.cameras)
        d["known_objects"] = list(self.known_objects)
        d["plan_adapter_words"] = list(self.plan_adapter_words)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> VLAConfig:
        d = dict(d)
        _check_keys(cls, d, source)
        if "vision" in d:
            _check_keys(VisionConfig, d["vision"], f"{source}.vision")
            d["vision"] = VisionConfig(**d["vision"])
        if "lm" in d:
            _check_keys(LMConfig, d["lm"], f"{source}.lm")
            d["lm"] = LMConfig(**d["lm"])
        for key in ("cameras", "known_objects", "plan_adapter_words"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> VLAConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source} is not valid JSON ({exc}); re-save the checkpoint") from exc
        if not isinstance(d, dict):
            raise ConfigError(f"{source} must hold a JSON object, got {type(d).__name__}")
        return cls.from_dict(d, source)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        tmp = path.with_name(f".{CONFIG_FILE}.tmp")  # written whole, then renamed: a crash leaves the old file
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> VLAConfig:
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"{path} is missing; a checkpoint folder needs {CONFIG_FILE}")
        return cls.from_json(path.read_text(), str(path))


def _check_keys(klass: type, d: Any, source: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{source} must be a JSON object, got {type(d).__name__}")
    valid = {f.name for f in dataclasses.fields(klass)}
    for key in d:
        if key not in valid:
            raise ConfigError(f"unknown key {key!r} in {source}; valid keys: {', '.join(sorted(valid))}")


PRESETS: dict[str, VLAConfig] = {
    "tiny": VLAConfig(
        preset="tiny",
        vision=VisionConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        lm=LMConfig(hidden_size=48, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=96,
                    max_position_embeddings=256),
        chunk_size=4,
        max_instruction_tokens=16,
        max_plan_tokens=64,
        object_token=True,
    ),
    "base": VLAConfig(preset="base", object_token=True),
}


def get_preset(name: str, **overrides: Any) -> VLAConfig:
    """The named preset with `overrides` applied (e.g. ``get_preset("tiny", action_head="tokens")``)."""
    if name not in PRESETS:
        raise unknown_choice("preset", name, PRESETS)
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
