"""Turning dataset samples into model batches: tokenised instructions, action tensors, plan-head examples.

Action samples follow `keystone_vla.datasets.torch_dataset.EpisodeWindowDataset`: dicts with ``images`` uint8
[n_cam, H, W, 3], ``state`` float32 [S] (normalised), ``actions`` float32 [H, 7] (normalised), ``action_mask``
bool [H], ``instruction``, ``step_instruction``, ``plan`` (Plan JSON) and ``task``; optional ``step_done``
(float, 1 when the current plan step ends within the chunk) and ``objects`` (scene object ids).

Plan examples are (instruction, plan calls, scene objects) triples, one per episode. When the scene's objects
are unknown, the prompt lists the plan's objects plus a few random distractors from the training vocabulary of
objects, so the model learns to choose from a list instead of copying all of it.

This module must never read a store itself beyond episode attributes, and never import the simulator.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from keystone_vla.errors import DatasetError
from keystone_vla.types import Plan
from keystone_vla.vla.configuration import VLAConfig
from keystone_vla.vla.object_token import jitter, object_features, with_step_start
from keystone_vla.vla.tokenizer import WordTokenizer


@dataclass(frozen=True)
class PlanExample:
    instruction: str
    calls: tuple[tuple[str, tuple[str, ...]], ...]
    texts: tuple[str, ...]
    objects: tuple[str, ...] = ()  # the scene's object ids when known
    task: str = ""


def plan_example(instruction: str, plan: Plan | str, objects: Sequence[str] = (), task: str = "") -> PlanExample:
    if isinstance(plan, str):
        plan = Plan.from_json(plan)
    return PlanExample(instruction, tuple((s.skill, tuple(s.args)) for s in plan.steps),
                       tuple(s.text for s in plan.steps), tuple(objects), task)


def plan_examples_from_store(store: Any) -> list[PlanExample]:
    """One example per episode with a non-empty plan (reads attributes only, no frames)."""
    out = []
    for ep in store.episodes():
        a = ep.attrs
        try:
            plan = Plan.from_json(a["plan"]) if isinstance(a.get("plan"), str) else None
        except Exception as exc:  # a malformed plan attr is a store problem, not a training bug
            raise DatasetError(f"{ep.name}: plan attribute cannot be parsed ({exc}); run keystone data verify") from exc
        if plan is None or not plan.steps:
            continue
        objects = a.get("objects") or ()
        out.append(plan_example(a.get("instruction", plan.instruction), plan, objects, a.get("task", "")))
    return out


def plan_examples_from_samples(samples: Iterable[dict[str, Any]]) -> list[PlanExample]:
    seen: dict[tuple[str, str], PlanExample] = {}
    for s in samples:
        key = (s["instruction"], s["plan"])
        if key not in seen:
            seen[key] = plan_example(s["instruction"], s["plan"], s.get("objects") or (), s.get("task", ""))
    return list(seen.values())


def text_corpus(examples: Iterable[PlanExample]) -> list[str]:
    """Strings the tokenizer is built from: instructions, step texts and object ids."""
    out: list[str] = []
    for ex in examples:
        out.append(ex.instruction)
        out.extend(ex.texts)
        out.extend(a for _, args in ex.calls for a in args)
        out.extend(ex.objects)
    return out


def known_objects(examples: Iterable[PlanExample]) -> tuple[str, ...]:
    ids: set[str] = set()
    for ex in examples:
        ids.update(a for _, args in ex.calls for a in args)
        ids.update(ex.objects)
    return tuple(sorted(ids))


class Collator:
    """Builds model batches (see `VLAModel.forward`) from action samples and plan examples."""

    def __init__(self, config: VLAConfig, tokenizer: WordTokenizer, plan_examples: Sequence[PlanExample] = (),
                 plan_batch_size: int = 16, seed: int = 0, text_encoder: Any = None,
                 colour_palette: Sequence[str] = ()) -> None:
        self.config = config
        self.tok = tokenizer
        self.plan_examples = list(plan_examples)
        self.plan_batch_size = plan_batch_size
        self.rng = random.Random(seed)
        self.text_encoder = text_encoder
        self.colour_palette = tuple(colour_palette)
        self._instr_cache: dict[str, list[int]] = {}

    def instruction_ids(self, text: str) -> list[int]:
        ids = self._instr_cache.get(text)
        if ids is None:
            ids = self.tok.encode_fixed(text, self.config.max_instruction_tokens)
            self._instr_cache[text] = ids
        return ids

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        cfg = self.config
        images = np.stack([np.asarray(s["images"]) for s in samples])
        want = (len(cfg.cameras), cfg.image_size, cfg.image_size, 3)
        if images.shape[1:] != want or images.dtype != np.uint8:
            raise DatasetError(
                f"samples hold images {images.dtype} {list(images.shape[1:])}, the model expects uint8 {list(want)} "
                "(cameras x H x W x 3); collect data at the model's image size or pick a matching preset"
            )
        batch: dict[str, torch.Tensor] = {
            "images": torch.from_numpy(images),
            "state": torch.from_numpy(np.stack([np.asarray(s["state"], dtype=np.float32) for s in samples])),
            "actions": torch.from_numpy(np.stack([np.asarray(s["actions"], dtype=np.float32) for s in samples])),
            "action_mask": torch.from_numpy(np.stack([np.asarray(s["action_mask"], dtype=bool) for s in samples])),
            "instruction_ids": torch.tensor([self.instruction_ids(s["step_instruction"]) for s in samples]),
        }
        if batch["actions"].shape[1:] != (cfg.chunk_size, cfg.action_dim):
            raise DatasetError(
                f"samples hold action chunks {list(batch['actions'].shape[1:])}, the model expects "
                f"[{cfg.chunk_size}, {cfg.action_dim}]; build the dataset with chunk_size={cfg.chunk_size}"
            )
        if all("step_done" in s for s in samples):
            batch["step_done"] = torch.tensor([float(s["step_done"]) for s in samples])
        if self.text_encoder is not None:
            batch["text_features"] = self.text_encoder.encode([s["step_instruction"] for s in samples])
        if cfg.object_token:
            if not all("object_features" in s for s in samples):
                raise DatasetError("the model has an object token but samples carry no object_features; train on "
                                   "a store collected with step_objects (keystone data collect) or drop the token "
                                   "(--no-object-token)")
            batch["object_features"] = torch.from_numpy(np.stack([s["object_features"] for s in samples]))
        if self.plan_examples and self.plan_batch_size > 0:
            batch.update(self.plan_batch([self.rng.choice(self.plan_examples) for _ in range(self.plan_batch_size)]))
        return batch

    def plan_objects(self, ex: PlanExample) -> list[str]:
        if ex.objects:
            objs = list(ex.objects)
        else:
            used = list(dict.fromkeys(a for _, args in ex.calls for a in args))
            pool = [o for o in self.config.known_objects if o not in used]
            objs = used + self.rng.sample(pool, min(len(pool), self.rng.randint(0, 3)))
        self.rng.shuffle(objs)
        return objs

    def plan_batch(self, examples: Sequence[PlanExample]) -> dict[str, torch.Tensor]:
        rows, labels = [], []
        for ex in examples:
            if self.colour_palette and self.rng.random() < 0.5:
                ex = swap_colours(ex, self.colour_palette, self.rng)
            prompt = self.tok.plan_prompt(ex.instruction, self.plan_objects(ex))
            target = self.tok.plan_target(ex.calls)
            rows.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        return {"plan_ids": pad_rows(rows, self.tok.pad_id), "plan_labels": pad_rows(labels, -100)}


def pad_rows(rows: Sequence[Sequence[int]], fill: int) -> torch.Tensor:
    """Token rows of any lengths -> int64 [len(rows), longest], right-filled with `fill`."""
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def swap_colours(ex: PlanExample, palette: Sequence[str], rng: random.Random) -> PlanExample:
    """The same example with its colour words consistently renamed to other colours of `palette` (in the
    instruction, the plan's object ids and the scene objects): a text-only augmentation that teaches the plan
    head to copy a colour from the instruction instead of memorising colour names. Only colours the instruction
    names are renamed."""
    return _rename(ex, palette, rng, set(_WORDS.findall(ex.instruction.lower())))


def swap_words(ex: PlanExample, palette: Sequence[str], rng: random.Random) -> PlanExample:
    """As `swap_colours`, for palette words used anywhere (instruction, plan arguments, scene objects): for shapes
    (a kit part ``red_bar`` belongs in ``bar_slot``), which, unlike colours, rarely appear in the instruction."""
    used = set(_WORDS.findall(ex.instruction.lower()))
    for o in list(ex.objects) + [a for _, args in ex.calls for a in args]:
        used.update(o.split("_"))
    return _rename(ex, palette, rng, used)


_WORDS = re.compile(r"[a-z]+")


def _rename(ex: PlanExample, palette: Sequence[str], rng: random.Random, used: set[str]) -> PlanExample:
    present = [c for c in palette if c in used]
    if not present:
        return ex
    mapping = dict(zip(present, rng.sample(list(palette), len(present))))

    def obj(o: str) -> str:
        return "_".join(mapping.get(p, p) for p in o.split("_"))

    instruction = _WORDS.sub(lambda m: mapping.get(m.group(0), m.group(0)), ex.instruction.lower())
    return PlanExample(instruction, tuple((s, tuple(obj(a) for a in args)) for s, args in ex.calls),
                       ex.texts, tuple(obj(o) for o in ex.objects), ex.task)


def plan_json(instruction: str, calls: Sequence[tuple[str, Sequence[str]]], texts: Sequence[str]) -> str:
    return json.dumps({"instruction": instruction,
                       "steps": [{"call": f"{s}({', '.join(a)})", "text": t} for (s, a), t in zip(calls, texts)]})


class StepDoneDataset:
    """Wraps an `EpisodeWindowDataset` and adds ``step_done``: 1.0 when the plan step executed at t has
    changed by tick t + H (the step ends within this chunk), read from the store's ``plan_step`` arrays; with
    `object_token`, also ``object_features`` [24] from the store's ``step_objects`` and ``ee_pose`` arrays
    (object poses jittered by about the scene graph's error when `augment`)."""

    def __init__(self, base: Any, horizon: int, object_token: bool = False, augment: bool = False,
                 seed: int = 0, object_frame: str = "gripper") -> None:
        from keystone_vla.datasets.store import EpisodeStore

        store = EpisodeStore(base.store_path, mode="r")
        self.base = base
        self.horizon = horizon
        self.plan_steps = [np.asarray(store.episode(n).array("plan_step")) for n in base.names]
        self.step_objects: list[np.ndarray] = []  # [T, 14] recorded objects
        self.ee_pose: list[np.ndarray] = []
        self.step_start_ee: list[np.ndarray] = []  # [T, 7]: the end-effector pose when tick t's step began
        if object_token:
            for n in base.names:
                ep = store.episode(n)
                if not (ep.has("step_objects") and ep.has("ee_pose")):
                    raise DatasetError(f"{n} has no step_objects/ee_pose arrays, which the object token needs; "
                                       "re-collect with keystone data collect, or train with --no-object-token")
                ps = np.asarray(ep.array("plan_step"))
                ee = np.asarray(ep.array("ee_pose"), np.float32)
                starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
                first = starts[np.searchsorted(starts, np.arange(len(ps)), side="right") - 1]
                self.step_objects.append(np.asarray(ep.array("step_objects"), np.float32))
                self.ee_pose.append(ee)
                self.step_start_ee.append(ee[first])
        self.augment = augment
        self.object_frame = object_frame
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = dict(self.base[i])
        e, t = int(s["episode_index"]), int(s["frame_index"])
        ps = self.plan_steps[e]
        s["step_done"] = float(ps[min(t + self.horizon, len(ps) - 1)] != ps[t])
        if self.step_objects:
            so = self.step_objects[e][t]
            if self.augment:
                so = jitter(so, self.rng)
            s["object_features"] = object_features(with_step_start(so, self.step_start_ee[e][t]), self.ee_pose[e][t],
                                                   self.object_frame)
        return s


def adapt_to_image_size(config: VLAConfig, image_size: int) -> VLAConfig:
    """The preset re-targeted to the data's image size, keeping the number of image tokens per camera."""
    v = config.vision
    if v.image_size == image_size:
        return config
    per_side = v.image_size // v.patch_size
    if image_size % per_side:
        raise DatasetError(f"image size {image_size} px is not divisible into {per_side} patches per side; "
                           f"collect data at a multiple of {per_side} px (e.g. {v.image_size})")
    from dataclasses import replace

    return config.replace(vision=replace(v, image_size=image_size, patch_size=image_size // per_side))


def datasets_from_store(store_path: str, config: VLAConfig, val_every: int = 20, augment: bool = True,
                        tasks: Sequence[str] | None = None
                        ) -> tuple[Any, Any, list[PlanExample], dict[str, Any], dict[str, Any], VLAConfig]:
    """Train/val window datasets (whole episodes held out: every `val_every`-th successful episode), plan
    examples, normalisation statistics, a data description for train_info.json, and the config adapted to
    the store's image size. `tasks` keeps only those tasks' episodes for the action windows (plan examples
    and normalisation still come from the whole store, so the tokenizer and scales match an all-task run)."""
    from keystone_vla.datasets.store import EpisodeStore
    from keystone_vla.datasets.torch_dataset import EpisodeWindowDataset

    store = EpisodeStore(store_path, mode="r")
    # one pass over the episode attributes: name -> (task, length) of every usable episode
    usable = {ep.name: (ep.attrs.get("task", "?"), ep.length) for ep in store.episodes()
              if ep.attrs.get("success", True) and ep.length > 0}
    if tasks:
        present = {task for task, _ in usable.values()}
        unknown = sorted(set(tasks) - present)
        if unknown:
            raise DatasetError(f"{store_path} has no episodes of task(s) {unknown}; it has {sorted(present)}")
        usable = {n: v for n, v in usable.items() if v[0] in tasks}
    good = list(usable)
    if len(good) < 2:
        raise DatasetError(f"{store_path} has {len(good)} successful episodes; collect more (keystone data collect)")
    first = store.episode(good[0])
    missing = [c for c in config.cameras if c not in first.cameras]
    if missing:
        raise DatasetError(f"{store_path} has no camera {missing} (it has {first.cameras}); pass --cameras")
    image_size = int(first.images(config.cameras[0], 0, 1).shape[1])
    config = adapt_to_image_size(config, image_size)
    val = good[::val_every] if len(good) >= 2 * val_every else good[:1]
    train_names = [n for n in good if n not in set(val)]
    kw = {"chunk_size": config.chunk_size, "cameras": config.cameras}
    train_ds = StepDoneDataset(EpisodeWindowDataset(store_path, episodes=train_names, augment=augment, **kw),
                               config.chunk_size, config.object_token, augment, object_frame=config.object_frame)
    val_ds = StepDoneDataset(EpisodeWindowDataset(store_path, episodes=val, augment=False, **kw), config.chunk_size,
                             config.object_token, object_frame=config.object_frame)
    examples = [ex for ex in plan_examples_from_store(store)]
    task_counts: dict[str, int] = {}
    for task, _ in usable.values():
        task_counts[task] = task_counts.get(task, 0) + 1
    info = {"store": str(store_path), "episodes": len(good), "train_episodes": len(train_names),
            "val_episodes": len(val), "steps": int(sum(length for _, length in usable.values())),
            "tasks": task_counts, "image_size": image_size, "cameras": list(config.cameras)}
    return train_ds, val_ds, examples, store.normalization(), info, config
