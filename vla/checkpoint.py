"""Checkpoint folders: weights, config, normalisation, tokenizer and training record; no pickle anywhere.

Layout (shared/DESIGN.md, "Checkpoint")::

    <folder>/model.safetensors   all weights of `VLAModel` (tied LM embeddings stored once)
    <folder>/config.json         `VLAConfig` (architecture incl. backbone configs, action spec, cameras, chunk size,
                                 control rate, step templates, known objects)
    <folder>/normalization.json  state/action statistics (`Normalizer`)
    <folder>/tokenizer.json      the word-level tokenizer (`WordTokenizer`)
    <folder>/train_info.json     data, steps, metrics, git revision

`load_pretrained` checks every file before building anything and fails with a `ModelError` that names the
missing or mismatched file. This module must never write outside the given folder, nor use torch.save/pickle.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_model

from keystone_vla.errors import ConfigError, ModelError
from keystone_vla.vla.configuration import CONFIG_FILE, VLAConfig
from keystone_vla.vla.modeling import VLAModel
from keystone_vla.vla.normalization import NORMALIZATION_FILE, Normalizer
from keystone_vla.vla.tokenizer import TOKENIZER_FILE, WordTokenizer

WEIGHTS_FILE = "model.safetensors"
TRAIN_INFO_FILE = "train_info.json"
CHECKPOINT_FILES = (WEIGHTS_FILE, CONFIG_FILE, NORMALIZATION_FILE, TOKENIZER_FILE, TRAIN_INFO_FILE)


@dataclass
class VLABundle:
    """Everything a checkpoint holds, loaded."""

    model: VLAModel
    tokenizer: WordTokenizer
    normalizer: Normalizer
    train_info: dict[str, Any]

    @property
    def config(self) -> VLAConfig:
        return self.model.config


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, bytes): equal digests mean identical weights."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_pretrained(folder: str | os.PathLike[str], model: VLAModel, tokenizer: WordTokenizer,
                    normalizer: Normalizer, train_info: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint folder (files are written to temp names and renamed into place). train_info's
    ``weights_sha256`` is always the digest of the weights written (`weights_digest`), whatever the caller passed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ModelError(f"tokenizer has {tokenizer.vocab_size} words but the model was built for "
                         f"{model.config.vocab_size}; build the model from this tokenizer")
    info = {"git_revision": git_revision(), **(train_info or {})}
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    module = model.module if hasattr(model, "module") else model
    if module.dtype != torch.float32:  # checkpoints are float32 so every loader can read them
        raise ModelError("save_pretrained expects a float32 model; save before converting to bfloat16")
    info["weights_sha256"] = weights_digest(module)
    save_model(module, str(tmp), metadata={"format": "keystone-vla/1"})
    os.replace(tmp, folder / WEIGHTS_FILE)
    module.config.save(folder)
    normalizer.save(folder)
    tokenizer.save(folder)
    (folder / TRAIN_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    return folder


def load_pretrained(folder: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> VLABundle:
    """Load and cross-check a checkpoint folder written by `save_pretrained`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"checkpoint folder {folder} does not exist")
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file():
            raise ModelError(f"checkpoint {folder} is missing {name}; it needs {', '.join(CHECKPOINT_FILES)}")
    try:
        config = VLAConfig.load(folder)
    except ConfigError as exc:
        raise ModelError(f"{CONFIG_FILE}: {exc}") from exc
    tokenizer = WordTokenizer.load(folder)
    if tokenizer.vocab_size != config.vocab_size:
        raise ModelError(f"{TOKENIZER_FILE} has {tokenizer.vocab_size} words but {CONFIG_FILE} says vocab_size="
                         f"{config.vocab_size}; the two files come from different checkpoints")
    normalizer = Normalizer.load(folder, config.state_dim, config.action_dim)
    try:
        train_info = json.loads((folder / TRAIN_INFO_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{TRAIN_INFO_FILE} is not valid JSON ({exc})") from exc
    model = VLAModel(config)
    load_weights(model, folder / WEIGHTS_FILE)
    model.eval()
    if dtype != torch.float32:
        model.to(dtype)
    return VLABundle(model, tokenizer, normalizer, train_info)


def transfer_weights(state: dict[str, torch.Tensor], config: VLAConfig, source: str,
                     fresh: tuple[str, ...] = (), dropped: tuple[str, ...] = ()) -> VLAModel:
    """A new `VLAModel(config)` holding `state`'s weights: parts under the `fresh` key prefixes may be absent from
    `state` (they keep their initialisation; present, they are loaded), parts under `dropped` are left out; any
    other difference raises a ModelError naming `source`."""
    model = VLAModel(config)
    kept = {k: v for k, v in state.items() if not k.startswith(dropped)}
    wrong = [f"{k} {got} vs {want}" for k, got, want in shape_mismatches(kept, model.state_dict())]
    if wrong:
        raise ModelError(f"{source}: weights have other shapes than this model builds ({'; '.join(wrong[:3])}); "
                         "the checkpoint's config differs from the one asked for")
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [k for k in missing if not k.startswith(fresh)]
    if missing or unexpected:
        raise ModelError(f"{source}: weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def shape_mismatches(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
                     ) -> list[tuple[str, list[int], list[int]]]:
    """(key, shape in `state`, shape in `expected`) for every key both hold with different shapes."""
    return [(k, list(v.shape), list(expected[k].shape)) for k, v in state.items()
            if k in expected and tuple(v.shape) != tuple(expected[k].shape)]


def load_weights(model: VLAModel, path: Path) -> None:
    """Load `path` into `model` strictly; tied aliases are the only keys allowed to be absent."""
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise ModelError(f"{path.name} cannot be read ({exc}); the file is corrupt or not safetensors") from exc
    expected = model.state_dict()
    aliases = _tied_aliases(model)
    missing = [k for k in expected if k not in state and not any(a in state for a in aliases.get(k, ()))]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelError(f"{path.name} does not match config.json: missing {missing[:5]}, unexpected {unexpected[:5]}")
    wrong = shape_mismatches(state, expected)
    if wrong:
        k, got, want = wrong[0]
        raise ModelError(f"{path.name}: {k} has shape {got}, config.json builds {want}; the files come from "
                         "different checkpoints")
    model.load_state_dict(state, strict=False)
    for k, alts in aliases.items():  # re-tie explicitly in case only the alias was stored
        if k not in state:
            src = next(a for a in alts if a in state)
            expected[k].data.copy_(state[src])


def _tied_aliases(model: torch.nn.Module) -> dict[str, tuple[str, ...]]:
    by_ptr: dict[int, list[str]] = {}
    for k, v in model.state_dict().items():
        by_ptr.setdefault(v.data_ptr(), []).append(k)
    out: dict[str, tuple[str, ...]] = {}
    for names in by_ptr.values():
        if len(names) > 1:
            for n in names:
                out[n] = tuple(x for x in names if x != n)
    return out
