"""Word-level tokenizer for instructions and plans, built locally with `tokenizers` and saved in checkpoints.

Why word level: the plan head's constrained decoding works on whole words (a skill name, an object-id part,
punctuation), so the grammar is a small state machine over token ids instead of a byte-level automaton.
Layout of ids: special tokens, grammar punctuation, skill names, then the sorted corpus words; the LM's
vocabulary adds `n_action_bins` action-bin tokens after these (see `modeling`).

Text is normalised (NFKC, lower case, ``_`` -> space, punctuation other than the grammar's dropped), so
"Pick up the RED block." and "pick up the red block" give the same ids. Object ids are written as their
``_``-separated parts (``red_block`` -> ``red block``), so an unseen combination of known words still has ids.

This module must never download anything (no hub access) and never import torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from keystone_vla.errors import ConfigError, ModelError
from keystone_vla.types import SKILLS

TOKENIZER_FILE = "tokenizer.json"
PAD, UNK, BOS, EOS, SEP, PLAN = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]", "[PLAN]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, SEP, PLAN)
GRAMMAR_TOKENS = ("(", ")", ",", ";")
_WORD_RE = re.compile(r"[a-z0-9]+")


def object_parts(object_id: str) -> list[str]:
    """``'red_block'`` -> ``['red', 'block']`` (how object ids are spelled in token space)."""
    return [p for p in object_id.lower().split("_") if p]


def base_words() -> set[str]:
    """Words every tokenizer knows regardless of the corpus: colours, kinds and synonyms, shapes, and the
    sim's instruction vocabulary when the simulator package provides it."""
    from keystone_vla import vocab

    words: set[str] = set()
    for text in list(vocab.COLOURS) + [w for syn in vocab.OBJECT_SYNONYMS.values() for w in syn]:
        words.update(_WORD_RE.findall(text))
    words.update(vocab.OBJECT_SYNONYMS)
    try:  # the simulator's templates, when present (sim may be absent in a light install)
        from keystone_vla.sim.tasks import instruction_vocabulary

        for w in instruction_vocabulary():
            words.update(_WORD_RE.findall(w.lower()))
    except ImportError:
        pass
    return words


class WordTokenizer:
    """A `tokenizers.Tokenizer` (WordLevel model) plus the id helpers the model needs."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        for tok in SPECIAL_TOKENS + GRAMMAR_TOKENS + tuple(SKILLS):
            if tok not in vocab:
                raise ModelError(f"{TOKENIZER_FILE} lacks required token {tok!r}; rebuild it with WordTokenizer.build")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.sep_id, self.plan_id = (
            vocab[t] for t in SPECIAL_TOKENS
        )
        self.grammar_ids = {t: vocab[t] for t in GRAMMAR_TOKENS}
        self.skill_ids = {s: vocab[s] for s in SKILLS}

    # ---- construction ----------------------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: Iterable[str], extra_words: Iterable[str] = ()) -> WordTokenizer:
        """Build the vocabulary from `corpus` (instructions, step texts, object ids) plus `base_words()`."""
        normalizer = _normalizer()
        pre = _pre_tokenizer()
        words: set[str] = set(base_words()) | {w.lower() for w in extra_words}
        for text in corpus:
            norm = normalizer.normalize_str(text)
            words.update(piece for piece, _ in pre.pre_tokenize_str(norm))
        fixed = list(SPECIAL_TOKENS + GRAMMAR_TOKENS + tuple(SKILLS))
        rest = sorted(w for w in words if w not in fixed)
        vocab = {w: i for i, w in enumerate(fixed + rest)}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre
        return cls(tok)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / TOKENIZER_FILE
        self.tokenizer.save(str(path))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> WordTokenizer:
        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise ModelError(f"{path} is missing; a checkpoint folder needs {TOKENIZER_FILE}")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ModelError(f"{path} cannot be read as a tokenizer ({exc}); re-save the checkpoint") from exc
        return cls(tok)

    # ---- encoding ----------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def token_id(self, word: str) -> int:
        tid = self.tokenizer.token_to_id(word)
        return self.unk_id if tid is None else tid

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_fixed(self, text: str, length: int) -> list[int]:
        """[BOS] + words, right-padded with [PAD] to exactly `length` ids; raises if the text is too long."""
        ids = [self.bos_id] + self.encode(text)
        if len(ids) > length:
            raise ModelError(
                f"instruction is too long: {len(ids) - 1} words, the model takes at most {length - 1}; "
                f"shorten it: {text[:80]!r}"
            )
        return ids + [self.pad_id] * (length - len(ids))

    def unknown_words(self, text: str) -> list[str]:
        norm = self.tokenizer.normalizer.normalize_str(text)
        return [w for w, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(norm) if self.tokenizer.token_to_id(w) is None]

    def object_ids(self, object_id: str) -> list[int]:
        return [self.token_id(p) for p in object_parts(object_id)]

    def plan_prompt(self, instruction: str, objects: Sequence[str]) -> list[int]:
        """Plan-head prompt: [BOS] instruction [SEP] obj , obj , ... [PLAN]."""
        ids = [self.bos_id] + self.encode(instruction) + [self.sep_id]
        for i, obj in enumerate(objects):
            if i:
                ids.append(self.grammar_ids[","])
            ids.extend(self.object_ids(obj))
        return ids + [self.plan_id]

    def plan_target(self, calls: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
        """Token ids of a plan ``[(skill, args), ...]`` followed by [EOS]:
        ``pick ( red block ) ; place_on ( red block , blue block ) [EOS]``."""
        g = self.grammar_ids
        ids: list[int] = []
        for n, (skill, args) in enumerate(calls):
            if skill not in self.skill_ids:
                raise ConfigError(f"unknown skill {skill!r} in plan; valid skills: {', '.join(SKILLS)}")
            if n:
                ids.append(g[";"])
            ids += [self.skill_ids[skill], g["("]]
            for i, arg in enumerate(args):
                if i:
                    ids.append(g[","])
                ids.extend(self.object_ids(arg))
            ids.append(g[")"])
        return ids + [self.eos_id]


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace("_", " "),
            normalizers.Replace(Regex(r"[^a-z0-9(),;\s]"), " "),
        ]
    )


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[(),;]"), behavior="isolated")]
    )
