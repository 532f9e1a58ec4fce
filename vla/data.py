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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from keystone_vla.vla.configuration import VLAConfig
from keystone_vla.vla.tokenizer import WordTokenizer

from keystone_vla.errors import DatasetError
from keystone_vla.types import Plan


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
                 plan_batch_size: int = 16, seed: int = 0, text_encoder: Any = None) -> None:
        self.config = config
        self.tok = tokenizer
        self.plan_examples = list(plan_examples)
        self.plan_batch_size = plan_batch_size
        self.rng = random.Random(seed)
        self.text_encoder = text_encoder
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
            prompt = self.tok.plan_prompt(ex.instruction, self.plan_objects(ex))
            target = self.tok.plan_target(ex.calls)
            rows.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tok.pad_id, dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r, lb) in enumerate(zip(rows, labels)):
            ids[i, :len(r)] = torch.tensor(r)
            lab[i, :len(lb)] = torch.tensor(lb)
        return {"plan_ids": ids, "plan_labels": lab}


def plan_json(instruction: str, calls: Sequence[tuple[str, Sequence[str]]], texts: Sequence[str]) -> str:
    return json.dumps({"instruction": instruction,
                       "steps": [{"call": f"{s}({', '.join(a)})", "text": t} for (s, a), t in zip(calls, texts)]})
