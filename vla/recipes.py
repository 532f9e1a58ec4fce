"""Named training recipes: how a shipped checkpoint is made, as frozen data.

A `Recipe` is an ordered tuple of stages, each a frozen dataclass:

- `CollectStage`: scripted-oracle demonstrations into an episode store (or a DAgger round, where the last model
  stage drives part of each episode while the oracle's actions are recorded);
- `TrainStage`: the VLA trained from scratch or warm-started from the model stage before it;
- `YawHeadStage`: the model before it, copied with a yaw head fitted (`keystone_vla.vla.yaw_head`);
- `PlanAdapterStage`: the model before it, copied with a plan adapter fitted (`keystone_vla.vla.plan_adapter`);
- `CheckStage`: a short closed-loop evaluation of the last model stage in the simulator.

Stages read and write named stores: ``data`` is the recipe's main store (``keystone train --data``, by default
``OUT/data.zarr``), any other name is ``OUT/<name>.zarr``. Every model stage writes its checkpoint to ``OUT/<stage
name>``; the last one is the recipe's final checkpoint. ``keystone train --recipe NAME --out OUT`` runs a recipe
(`keystone_vla.cli.recipe`); `get_recipe` looks one up by name.

This module is data only: it must never import torch, the simulator, data collection or the policy layer, and a
change to `keystone-base` changes the shipped checkpoint's recipe (tests pin its values).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Union

from keystone_vla.errors import ConfigError, unknown_near

MAIN_STORE = "data"  # the store `keystone train --recipe ... --data STORE` names


def _check(ok: bool, stage: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"stage {stage!r}: {message}")


def _check_actions_per_chunk(stage: str, n: int | None) -> None:
    _check(n is None or n >= 1, stage, f"actions_per_chunk must be >= 1 (actions run per predicted chunk), got {n}")


@dataclass(frozen=True)
class CollectStage:
    """Scripted-oracle episodes of `tasks` into `store`, `episodes_per_task` each, seeded by `seed`; skipped when
    the store already exists. With `learner`, a DAgger round: the last model stage's checkpoint drives about
    `learner_share` of each episode while the oracle's actions are recorded; it appends to an existing store and
    is skipped only when this output folder records that the round already ran (``OUT/<name>/collect.json``)."""

    kind: ClassVar[str] = "collect"
    name: str
    episodes_per_task: int
    tasks: tuple[str, ...] = ("all",)
    split: str = "seen"
    image_size: int = 128
    cameras: tuple[str, ...] = ("front",)
    seed: int = 0
    workers: int = 2  # collection processes (`keystone train --recipe ... --workers N` overrides)
    store: str = MAIN_STORE
    learner: bool = False
    learner_share: float = 0.5

    def __post_init__(self) -> None:
        _check(self.episodes_per_task >= 1, self.name, f"episodes_per_task must be >= 1, got {self.episodes_per_task}")
        _check(self.workers >= 1, self.name, f"workers must be >= 1, got {self.workers}")
        _check(bool(self.tasks), self.name, "tasks is empty; use ('all',) or task names")
        _check(0.0 < self.learner_share <= 1.0, self.name, f"learner_share must be in (0, 1], got {self.learner_share}")


@dataclass(frozen=True)
class TrainStage:
    """`steps` optimizer steps of `keystone_vla.vla.train.train` on `store`: a `preset` model built from scratch,
    or (`warm_start`) the previous model stage's weights, tokenizer and config with a fresh optimizer. Fields
    mirror `keystone train`'s flags and `TrainConfig` (warm-up ``min(100, steps // 10)``, checkpoint every
    ``max(500, steps // 5)`` steps, no image-shift augmentation)."""

    kind: ClassVar[str] = "train"
    name: str
    steps: int
    preset: str = "base"
    warm_start: bool = False
    action_head: str = "chunk"
    chunk_size: int | None = None  # None: the preset's
    cameras: tuple[str, ...] = ("front",)
    batch_size: int = 32
    lr: float = 3e-4
    seed: int = 0
    val_every: int = 200  # validation period in steps; 0: only at the end
    patch_size: int | None = None  # ViT patch size of a model built from scratch; None: the preset's
    plan_batch_size: int = 16  # plan examples per step next to the action batch; 0: no plan loss
    object_token: bool = True
    object_frame: str = "gripper"  # or held_part (`keystone_vla.vla.object_token`)
    tasks: tuple[str, ...] | None = None  # tasks whose episodes train the action head; None: every task
    text_encoder: str = "none"  # or minilm
    plan_colour_swap: bool = True  # the colour-renaming text augmentation of plan examples
    action_loss_weights: tuple[float, ...] | None = None  # 7 per-dimension weights; None: all alike
    action_l2_dims: tuple[int, ...] = ()  # action dimensions learned with squared error instead of L1
    loader_workers: int = 1  # DataLoader worker processes
    actions_per_chunk: int | None = None  # recorded in config.json (n_action_steps); None: the source's, else 2
    store: str = MAIN_STORE

    def __post_init__(self) -> None:
        _check(self.steps >= 1, self.name, f"steps must be >= 1, got {self.steps}")
        _check(self.plan_batch_size >= 0, self.name, f"plan_batch_size must be >= 0 (0 = no plan loss), got "
                                                     f"{self.plan_batch_size}")
        _check(self.patch_size is None or self.patch_size >= 1, self.name,
               f"patch_size must be a positive number of pixels, got {self.patch_size}")
        _check(self.patch_size is None or not self.warm_start, self.name,
               "patch_size shapes a new model; a warm start keeps its checkpoint's")
        _check(self.loader_workers >= 0, self.name, f"loader_workers must be >= 0, got {self.loader_workers}")
        _check_actions_per_chunk(self.name, self.actions_per_chunk)


@dataclass(frozen=True)
class YawHeadStage:
    """The previous model stage copied with a yaw head (object features + state -> the chunk's turn) fitted on
    `store`, every other weight unchanged (`keystone_vla.vla.yaw_head.add_yaw_head`); `object_frame` None keeps
    the source's frame."""

    kind: ClassVar[str] = "yaw_head"
    name: str
    steps: int = 6000
    seed: int = 0
    object_frame: str | None = None
    batch_size: int = 512
    lr: float = 1e-3
    augment_copies: int = 2
    actions_per_chunk: int | None = None
    store: str = MAIN_STORE

    def __post_init__(self) -> None:
        _check(self.steps >= 1, self.name, f"steps must be >= 1, got {self.steps}")
        _check_actions_per_chunk(self.name, self.actions_per_chunk)


@dataclass(frozen=True)
class PlanAdapterStage:
    """The previous model stage copied with a plan adapter (LoRA of `rank` on the LM, on only while it writes a
    plan, plus a MiniLM sentence token) fitted on the plans of `store`, text only, actions unchanged
    (`keystone_vla.vla.plan_adapter.add_plan_adapter`). `relation_phrasing`: the share of stacking plans whose
    instruction is re-described by the relation grammar (never with the simulator's unseen templates);
    `word_features`: the adapter also reads MiniLM's vector of each instruction word."""

    kind: ClassVar[str] = "plan_adapter"
    name: str
    steps: int = 1500
    seed: int = 0
    rank: int = 8
    relation_phrasing: float = 0.0
    word_features: bool = False
    batch_size: int = 32
    lr: float = 2e-3
    actions_per_chunk: int | None = None
    store: str = MAIN_STORE

    def __post_init__(self) -> None:
        _check(self.steps >= 1, self.name, f"steps must be >= 1, got {self.steps}")
        _check(self.rank >= 1, self.name, f"the adapter's rank must be >= 1, got {self.rank}")
        _check(0.0 <= self.relation_phrasing <= 1.0, self.name,
               f"relation_phrasing must be a fraction in [0, 1] (0 = off), got {self.relation_phrasing}")
        _check_actions_per_chunk(self.name, self.actions_per_chunk)


@dataclass(frozen=True)
class CheckStage:
    """A closed-loop evaluation of the last model stage (`keystone_vla.policies.evaluate`, the harness of
    `keystone eval`, with the agent `keystone eval` would run): `episodes` per task of `tasks` on `split`, seeds
    ``seed + i``; the report goes to ``OUT/<name>``."""

    kind: ClassVar[str] = "check"
    name: str = "check"
    tasks: tuple[str, ...] = ("all",)
    split: str = "seen"
    episodes: int = 2
    seed: int = 0
    workers: int = 2  # evaluation processes (`--workers N` overrides)
    max_steps: int | None = None  # None: each task's own limit
    videos: bool = True

    def __post_init__(self) -> None:
        _check(self.episodes >= 1, self.name, f"episodes must be >= 1, got {self.episodes}")
        _check(self.workers >= 1, self.name, f"workers must be >= 1, got {self.workers}")


Stage = Union[CollectStage, TrainStage, YawHeadStage, PlanAdapterStage, CheckStage]
MODEL_STAGES = (TrainStage, YawHeadStage, PlanAdapterStage)


@dataclass(frozen=True)
class Recipe:
    """A named, ordered tuple of stages; `minutes` is the measured wall time on this project's 2-core machine;
    `agent` is the agent preset (`keystone_vla.policies.agent_config`) saved as agent.json beside every model
    stage's weights, so the check and every later evaluation run the checkpoint the way it was measured."""

    name: str
    description: str
    stages: tuple[Stage, ...]
    minutes: float | None = None
    agent: str = "shipped"

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"recipe {self.name!r}: stage names must be unique, got {names}")
        if not any(isinstance(s, MODEL_STAGES) for s in self.stages):
            raise ConfigError(f"recipe {self.name!r} has no model stage (TrainStage, YawHeadStage, PlanAdapterStage)")
        seen_model, written = False, set()
        for s in self.stages:
            needs_model = (isinstance(s, (YawHeadStage, PlanAdapterStage, CheckStage))
                           or (isinstance(s, TrainStage) and s.warm_start)
                           or (isinstance(s, CollectStage) and s.learner))
            if needs_model and not seen_model:
                raise ConfigError(f"recipe {self.name!r}: stage {s.name!r} ({s.kind}) starts from a model, but no "
                                  "model stage comes before it")
            if isinstance(s, CollectStage):
                written.add(s.store)
            elif not isinstance(s, CheckStage) and s.store != MAIN_STORE and s.store not in written:
                raise ConfigError(f"recipe {self.name!r}: stage {s.name!r} reads store {s.store!r}, which no "
                                  "collect stage before it writes")
            seen_model = seen_model or isinstance(s, MODEL_STAGES)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def final_stage(self) -> str:
        """The last model stage: its checkpoint is the recipe's result."""
        return [s.name for s in self.stages if isinstance(s, MODEL_STAGES)][-1]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"recipe {self.name!r}: {unknown_near('stage', name, self.stage_names)}")

    def select(self, names: Iterable[str] | None) -> tuple[Stage, ...]:
        """The named stages (every stage for None) in the recipe's order; an unknown name is an error."""
        if names is None:
            return self.stages
        wanted = {self.stage(n).name for n in names}
        return tuple(s for s in self.stages if s.name in wanted)

    def model_stage_before(self, name: str) -> str | None:
        """The model stage a stage starts from: the last one before it in the recipe."""
        prev = None
        for s in self.stages:
            if s.name == name:
                return prev
            if isinstance(s, MODEL_STAGES):
                prev = s.name
        return self.stage(name) and None  # an unknown name: stage() raises


# ------------------------------------------------------------------------------------------------ the recipes
_BASE_TRAIN = dict(preset="base", action_head="chunk", batch_size=32, lr=3e-4, seed=0, val_every=250,
                   loader_workers=1)

#: the shipped `keystone-base` checkpoint (vla/pretrained/keystone-base/train_info.json): collection ~8 min
#: (296 of 300 episodes kept), s 34.1 min (0.93 s/step), h 1.3, i 21.6, check 0.9 on a 2-core AVX2 machine
KEYSTONE_BASE = Recipe(
    name="keystone-base",
    description="the shipped checkpoint: 60 oracle episodes per task, 2,200 steps from scratch (patch 32), "
                "yaw head, plan adapter (records 2 actions per chunk), 2-episode check per task",
    minutes=67,
    stages=(
        CollectStage("collect", episodes_per_task=60, tasks=("all",), split="seen", image_size=128,
                     cameras=("front",), seed=0, workers=2),
        TrainStage("s", steps=2200, patch_size=32, plan_batch_size=4, **_BASE_TRAIN),
        YawHeadStage("h", steps=6000, seed=0, object_frame="held_part"),
        PlanAdapterStage("i", steps=1100, seed=0, relation_phrasing=0.5, word_features=True, actions_per_chunk=2),
        CheckStage("check", tasks=("all",), split="seen", episodes=2, seed=0, workers=2),
    ),
)

#: keystone-base as shipped before the one-stage recipe: a-e grow an all-task model (object token from d on),
#: f and g are DAgger rounds on a second store, h and i fit on it. Measured: collection ~8 min, a-e ~3.5 h,
#: f ~45 min, g ~32 min, h ~2 min, i ~30 min. It reproduces the recipe, not the bits of that checkpoint.
KEYSTONE_BASE_LINEAGE = Recipe(
    name="keystone-base-lineage",
    description="the earlier keystone-base lineage: stages a-e, two DAgger rounds (f, g), yaw head, plan adapter",
    minutes=320,
    stages=(
        CollectStage("collect", episodes_per_task=100, seed=0),
        TrainStage("a", steps=2000, object_token=False, **_BASE_TRAIN),
        TrainStage("b", steps=2500, object_token=False, tasks=("pick_place", "stack"), warm_start=True,
                   **_BASE_TRAIN),
        TrainStage("c", steps=3000, object_token=False, tasks=("pick_place", "stack"), warm_start=True,
                   **_BASE_TRAIN),
        TrainStage("d", steps=2000, warm_start=True, **_BASE_TRAIN),  # the object token grown onto c
        TrainStage("e", steps=2500, warm_start=True, **_BASE_TRAIN),
        CollectStage("mix", episodes_per_task=60, seed=0, store="mix"),
        CollectStage("f-dagger", episodes_per_task=60, seed=1, store="mix", learner=True),
        TrainStage("f", steps=2000, warm_start=True, store="mix", **_BASE_TRAIN),
        CollectStage("g-dagger", episodes_per_task=60, seed=2, store="mix", learner=True,
                     tasks=("stack", "insert", "kit_assembly", "build_tower")),
        TrainStage("g", steps=1500, warm_start=True, store="mix", **_BASE_TRAIN),
        YawHeadStage("h", steps=6000, seed=0, object_frame="held_part", store="mix"),
        PlanAdapterStage("i", steps=1600, seed=0, relation_phrasing=0.5, word_features=True, store="mix"),
        CheckStage("check", episodes=2, seed=0),
    ),
)

#: every stage kind at toy sizes (the `tiny` preset, 32 px): end to end in well under a minute, for tests
TINY = Recipe(
    name="tiny",
    description="every stage kind at toy sizes (tiny preset, 32 px, a few steps): for tests",
    minutes=1,
    stages=(
        CollectStage("collect", episodes_per_task=1, tasks=("pick_place", "stack"), image_size=32, workers=1),
        TrainStage("s", steps=3, preset="tiny", batch_size=4, val_every=0, plan_batch_size=4, loader_workers=0),
        YawHeadStage("h", steps=20, object_frame="held_part", batch_size=64),
        PlanAdapterStage("i", steps=2, relation_phrasing=0.5, word_features=True, batch_size=4, actions_per_chunk=2),
        CheckStage("check", tasks=("pick_place",), episodes=1, workers=1, max_steps=10, videos=False),
    ),
)

_RECIPES: dict[str, Recipe] = {r.name: r for r in (KEYSTONE_BASE, KEYSTONE_BASE_LINEAGE, TINY)}
RECIPES: Mapping[str, Recipe] = MappingProxyType(_RECIPES)  # read-only: recipes are added here, in code


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; a `ConfigError` naming the closest names for a typo."""
    try:
        return _RECIPES[name]
    except KeyError:
        raise unknown_near("recipe", name, list(_RECIPES)) from None
