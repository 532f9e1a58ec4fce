"""The Keystone VLA network: ViT patch tokens -> MLP projector -> causal LM trunk, with three heads.

Prefix (fixed layout, so training and batch-1 inference see the same positions; no attention mask needed):

    [image tokens, camera 1] ... [image tokens, camera C] [instruction words, [PAD]-filled] ([MiniLM]) ([objects])
    [proprio]

``[objects]`` (``config.object_token``) carries the current plan step's objects relative to the gripper
(`keystone_vla.vla.object_token`): the plan names the objects, grounding finds them, and the action head
moves relative to them instead of having to bind colour words to pixels.

Heads
- **chunk** (default): one forward pass gives the whole H x 7 chunk, trained with L1 (parallel decoding, as
  OpenVLA-OFT). Two read-outs: ``chunk_query="pooled"`` (default) maps the LM's last prefix state through an
  MLP to all H x 7 numbers; ``"queries"`` appends H learned query tokens and maps each one's hidden state to
  one action. Chosen by measurement (`scripts/bench_vla.py` -> benchmarks/vla.json): after the same 300
  training steps of the tiny preset on the synthetic dataset (not sim demos), validation L1 was 0.147
  (pooled) vs 0.234 (queries), mean of 2 seeds, and
  batch-1 latency of the base model was 23.4 vs 24.1 ms (p50, 1 thread): pooled is both better and cheaper
  here, so it is the default; queries stays selectable (re-run the ablation on sim demos once they exist).
  Flow matching (pi0/SmolVLA) is not implemented: it needs several denoising passes per chunk, a poor first
  choice for a 25 ms CPU budget (not measured here).
  A step-done logit is read from the last prefix token (is the current plan step finished within the chunk?).
- **tokens** (``action_head="tokens"``, RT-2/OpenVLA style): each normalised action dimension is one of 256
  uniform bins, emitted autoregressively (H x 7 tokens, greedy, KV cache). Bin ids follow the word vocabulary.
- **plan**: the LM generates the plan in the skill grammar from ``[BOS] instruction [SEP] objects [PLAN]``
  with `plan_grammar.PlanGrammar` masking every step's logits, so output always parses and names only the
  scene's objects.

Shapes: images uint8 [B, C, H, W, 3]; state float32 [B, S] (normalised); instruction ids int64 [B, L];
actions float32 [B, H, 7] (normalised). This module must never read files or touch the network: weights come
from `checkpoint` or a local `pretrained` folder named in the config.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from keystone_vla.errors import ModelError
from keystone_vla.vla.configuration import VLAConfig
from keystone_vla.vla.object_token import N_FEATURES as N_OBJECT_FEATURES
from keystone_vla.vla.plan_adapter import MINILM_DIM, PlanAdapter, plan_adapter_loss
from keystone_vla.vla.plan_grammar import PlanGrammar


def _hf_dict(config: Any) -> dict[str, Any]:
    return json.loads(config.to_json_string(use_diff=False))


def build_backbones(config: VLAConfig) -> tuple[nn.Module, nn.Module, VLAConfig]:
    """Vision tower and LM from the config (or its local `pretrained` folders); returns the config with
    `hf_config` captured so a checkpoint can be rebuilt without those folders."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        SiglipVisionModel,
        ViTConfig,
        ViTModel,
    )

    if config.vocab_size <= 0:
        raise ModelError("config.vocab_size is unset; build the tokenizer first (WordTokenizer.build)")
    v = config.vision
    if v.hf_config is not None:
        d = dict(v.hf_config)
        hf = AutoConfig.for_model(d.pop("model_type"), **d)
        vision = ViTModel(hf, add_pooling_layer=False) if hf.model_type == "vit" else SiglipVisionModel(hf)
    elif v.pretrained:
        kind = AutoConfig.from_pretrained(v.pretrained, local_files_only=True).model_type
        if kind == "vit":
            vision = ViTModel.from_pretrained(v.pretrained, add_pooling_layer=False, local_files_only=True)
        elif kind.startswith("siglip"):
            vision = SiglipVisionModel.from_pretrained(v.pretrained, local_files_only=True)
        else:
            raise ModelError(f"vision.pretrained {v.pretrained} holds a {kind!r} model; use a ViT or SigLIP folder")
    else:
        vision = ViTModel(
            ViTConfig(image_size=v.image_size, patch_size=v.patch_size, hidden_size=v.hidden_size,
                      num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
                      intermediate_size=v.intermediate_size),
            add_pooling_layer=False,
        )
    vc = vision.config
    if (vc.image_size, vc.patch_size) != (v.image_size, v.patch_size):
        raise ModelError(
            f"vision backbone takes {vc.image_size} px images with {vc.patch_size} px patches but the config says "
            f"{v.image_size}/{v.patch_size}; set vision.image_size/patch_size to match the backbone"
        )
    total_vocab = config.vocab_size + config.n_action_bins
    lm_cfg = config.lm
    if lm_cfg.hf_config is not None:
        d = dict(lm_cfg.hf_config)
        lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(d.pop("model_type"), **d))
    elif lm_cfg.pretrained:
        lm = AutoModelForCausalLM.from_pretrained(lm_cfg.pretrained, local_files_only=True)
    else:
        lm = LlamaForCausalLM(
            LlamaConfig(vocab_size=total_vocab, hidden_size=lm_cfg.hidden_size,
                        intermediate_size=lm_cfg.intermediate_size, num_hidden_layers=lm_cfg.num_layers,
                        num_attention_heads=lm_cfg.num_heads, num_key_value_heads=lm_cfg.num_kv_heads,
                        max_position_embeddings=lm_cfg.max_position_embeddings, tie_word_embeddings=True)
        )
    if lm.get_input_embeddings().num_embeddings != total_vocab:
        # a pretrained LM keeps its trunk; its text embeddings are replaced by our word-level vocabulary
        lm.resize_token_embeddings(total_vocab, mean_resizing=False)
    config = config.replace(
        vision=v.__class__(**{**v.__dict__, "hf_config": _hf_dict(vision.config)}),
        lm=lm_cfg.__class__(**{**lm_cfg.__dict__, "hf_config": _hf_dict(lm.config)}),
    )
    return vision, lm, config


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


YAW = 5  # the yaw column of an action (dx, dy, dz, droll, dpitch, dyaw, gripper)
YAW_HEAD_HIDDEN = 256


def yaw_head_module(config: VLAConfig) -> nn.Sequential:
    """object features [B, 24] + normalised state [B, S] -> the chunk's normalised yaw [B, H] (float32)."""
    d_in, h = N_OBJECT_FEATURES + config.state_dim, YAW_HEAD_HIDDEN
    return nn.Sequential(nn.Linear(d_in, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, config.chunk_size))


class VLAModel(nn.Module):
    """ViT + projector + causal LM with chunk / token / plan heads (see module docstring)."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.vision, self.lm, self.config = build_backbones(config)
        cfg = self.config
        dv = self.vision.config.hidden_size
        d = self.lm.config.hidden_size
        self.hidden_size = d
        self.bin_offset = cfg.vocab_size
        self._vision_has_cls = hasattr(getattr(self.vision, "embeddings", None), "cls_token")
        self.projector = nn.Sequential(nn.LayerNorm(dv), _mlp(dv, d, d))
        self.camera_embed = nn.Parameter(torch.zeros(len(cfg.cameras), d))
        self.proprio = _mlp(cfg.state_dim, d, d)
        self.done_head = nn.Linear(d, 1)
        if cfg.text_encoder == "minilm":
            self.text_proj = _mlp(MINILM_DIM, d, d)
        if cfg.object_token:
            self.object_proj = _mlp(N_OBJECT_FEATURES, d, d)
        if cfg.action_head == "chunk":
            if cfg.chunk_query == "queries":
                self.action_queries = nn.Parameter(torch.randn(cfg.chunk_size, d) * 0.02)
                self.action_out = _mlp(d, d, cfg.action_dim)
            else:
                self.action_out = _mlp(d, 2 * d, cfg.chunk_size * cfg.action_dim)
        if cfg.yaw_head:
            self.yaw_out = yaw_head_module(cfg)
        if cfg.plan_adapter_rank:
            self.plan_adapter = PlanAdapter(self.lm, rank=cfg.plan_adapter_rank, words=cfg.plan_adapter_words,
                                            word_features=cfg.plan_word_features)
        self.augment_shift = 0  # pixels of random-shift augmentation while training (set by the trainer)
        #: per-dimension weights of the action loss (set by the trainer; None = every dimension alike)
        self.action_loss_weights: tuple[float, ...] | None = None
        #: action dimensions the chunk head learns with squared error (the conditional mean) instead of L1 (the
        #: median): a dimension that moves in few, hard-to-time ticks has median zero, so L1 never moves it
        self.action_l2_dims: tuple[int, ...] = ()

    # ---- prefix ------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.camera_embed.dtype

    @property
    def trunk(self) -> nn.Module:
        return self.lm.base_model

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W, 3] -> projected patch tokens [B, C * N, D]."""
        b, c, h, w, _ = images.shape
        x = images.reshape(b * c, h, w, 3).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if self.training and self.augment_shift > 0:
            x = _random_shift(x, self.augment_shift)
        out = self.vision(pixel_values=x.to(self.dtype)).last_hidden_state
        if self._vision_has_cls:
            out = out[:, 1:]
        tokens = self.projector(out)
        n = tokens.shape[1]
        tokens = tokens.view(b, c, n, -1) + self.camera_embed[None, :, None, :]
        return tokens.reshape(b, c * n, -1)

    def action_prefix(self, images: torch.Tensor, instruction_ids: torch.Tensor, state: torch.Tensor,
                      text_features: torch.Tensor | None = None,
                      object_features: torch.Tensor | None = None) -> torch.Tensor:
        parts = [self.encode_images(images), self.embed_tokens(instruction_ids)]
        if self.config.text_encoder == "minilm":
            if text_features is None:
                raise ModelError("this model was built with text_encoder='minilm'; pass text_features [B, 384]")
            parts.append(self.text_proj(text_features.to(self.dtype))[:, None])
        if self.config.object_token:
            if object_features is None:
                raise ModelError(f"this model was built with an object token; pass object_features "
                                 f"[B, {N_OBJECT_FEATURES}] (keystone_vla.vla.object_token.object_features)")
            parts.append(self.object_proj(object_features.to(self.dtype))[:, None])
        parts.append(self.proprio(state.to(self.dtype))[:, None])
        return torch.cat(parts, dim=1)

    # ---- chunk head --------------------------------------------------------------------------------------
    def chunk_forward(self, prefix: torch.Tensor, object_features: torch.Tensor | None = None,
                      state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """prefix [B, P, D] -> (normalised actions [B, H, 7], step-done logit [B]). With ``config.yaw_head`` the
        yaw column comes from the yaw head, which reads `object_features` [B, 24] and `state` [B, S]."""
        actions, done = self._chunk_trunk(prefix)
        if self.config.yaw_head:
            if object_features is None or state is None:
                raise ModelError("this model has a yaw head; pass object_features and state to chunk_forward")
            yaw = self.yaw_out(torch.cat([object_features, state], dim=-1).to(self.dtype)).float()
            actions = torch.cat([actions[..., :YAW], yaw[..., None], actions[..., YAW + 1:]], dim=-1)
        return actions, done

    def _chunk_trunk(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        b, p, _ = prefix.shape
        if cfg.chunk_query == "queries":
            x = torch.cat([prefix, self.action_queries[None].expand(b, -1, -1)], dim=1)
            hidden = self.trunk(inputs_embeds=x).last_hidden_state
            actions = self.action_out(hidden[:, p:])
            done = self.done_head(hidden[:, p - 1]).squeeze(-1)
        else:
            hidden = self.trunk(inputs_embeds=prefix).last_hidden_state[:, -1]
            actions = self.action_out(hidden).view(b, cfg.chunk_size, cfg.action_dim)
            done = self.done_head(hidden).squeeze(-1)
        return actions.float(), done.float()

    # ---- token head --------------------------------------------------------------------------------------
    def _bin_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.lm.get_output_embeddings()
        w = head.weight[self.bin_offset:self.bin_offset + self.config.n_action_bins]
        b = None if head.bias is None else head.bias[self.bin_offset:self.bin_offset + self.config.n_action_bins]
        return F.linear(hidden, w, b)

    def bins_of(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised actions [B, H, 7] -> bin indices int64 [B, H * 7] (same rule as `ActionBins`)."""
        r, n = self.config.action_bin_range, self.config.n_action_bins
        idx = torch.floor((actions.clamp(-r, r) + r) / (2 * r) * n).long().clamp_(0, n - 1)
        return idx.reshape(actions.shape[0], -1)

    def bin_centres(self, idx: torch.Tensor) -> torch.Tensor:
        r, n = self.config.action_bin_range, self.config.n_action_bins
        return (idx.float() + 0.5) / n * 2 * r - r

    def token_forward(self, prefix: torch.Tensor, target_bins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced bin logits [B, H*7, n_bins] and the step-done logit [B]."""
        p = prefix.shape[1]
        x = torch.cat([prefix, self.embed_tokens(target_bins[:, :-1] + self.bin_offset)], dim=1)
        hidden = self.trunk(inputs_embeds=x).last_hidden_state[:, p - 1:]
        return self._bin_logits(hidden).float(), self.done_head(hidden[:, 0]).squeeze(-1).float()

    @torch.inference_mode()
    def token_generate(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy autoregressive decoding of H*7 bins with a KV cache -> (normalised actions, done logit)."""
        cfg = self.config
        out = self.trunk(inputs_embeds=prefix, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        done = self.done_head(hidden).squeeze(-1).float()
        n_tokens = cfg.chunk_size * cfg.action_dim
        bins = []
        for i in range(n_tokens):
            idx = self._bin_logits(hidden).argmax(-1)
            bins.append(idx)
            if i + 1 == n_tokens:
                break
            out = self.trunk(inputs_embeds=self.embed_tokens(idx[:, None] + self.bin_offset),
                             past_key_values=out.past_key_values, use_cache=True)
            hidden = out.last_hidden_state[:, -1]
        idx = torch.stack(bins, dim=1).view(prefix.shape[0], cfg.chunk_size, cfg.action_dim)
        return self.bin_centres(idx), done

    # ---- plan head ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_plan(self, prompt_ids: list[int], grammar: PlanGrammar, max_new_tokens: int,
                      text_features: torch.Tensor | None = None) -> PlanGrammar:
        """Greedy grammar-constrained decoding of a plan after `prompt_ids`; returns the finished grammar, its
        `target_confidence` set (the least probability, among the allowed tokens, of a chosen token naming where a
        part goes). A model with a plan adapter decodes with it on and needs the instruction's MiniLM vector
        `text_features` [1, 384]."""
        if not self.config.plan_adapter_rank:
            return self._decode_plan(prompt_ids, grammar, max_new_tokens, None)
        if text_features is None:
            raise ModelError("this model has a plan adapter; pass the instruction's MiniLM vector as text_features")
        with self.plan_adapter.active():
            return self._decode_plan(prompt_ids, grammar, max_new_tokens, text_features)

    def _decode_plan(self, prompt_ids: list[int], grammar: PlanGrammar, max_new_tokens: int,
                     text_features: torch.Tensor | None) -> PlanGrammar:
        device = self.camera_embed.device
        ids = torch.tensor([prompt_ids], device=device)
        if text_features is None:
            out = self.lm(input_ids=ids, use_cache=True, logits_to_keep=1)
        else:
            embeds = self.plan_adapter.prompt_embeds(self.lm, ids, text_features.to(device))
            out = self.lm(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        for _ in range(max_new_tokens):
            allowed = grammar.allowed()
            logits = out.logits[0, -1].float()[allowed]
            best = int(torch.argmax(logits))
            tok = allowed[best]
            if len(allowed) > 1 and grammar.in_target:  # how sure it is where the part goes
                p = float(torch.softmax(logits, -1)[best])
                grammar.target_confidence = min(grammar.target_confidence, p)
            grammar.advance(tok)
            if grammar.done:
                return grammar
            out = self.lm(input_ids=torch.tensor([[tok]], device=device), past_key_values=out.past_key_values,
                          use_cache=True, logits_to_keep=1)
        grammar.force_finish()
        return grammar

    # ---- training ----------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """All training losses for one batch (one call, so DistributedDataParallel sees every parameter).

        batch: images uint8 [B,C,H,W,3], state [B,S], instruction_ids [B,L], actions [B,H,7], action_mask bool
        [B,H], step_done [B] + step_done_mask [B] (optional), text_features [B,384] (minilm only), and for the
        plan head plan_ids / plan_labels int64 [B2, T] (labels -100 where not predicted)."""
        prefix = self.action_prefix(batch["images"], batch["instruction_ids"], batch["state"],
                                    batch.get("text_features"), batch.get("object_features"))
        mask = batch["action_mask"].float()
        dim_w = torch.ones(self.config.action_dim, device=mask.device)
        if self.action_loss_weights is not None:
            dim_w = torch.tensor(self.action_loss_weights, dtype=torch.float32, device=mask.device)
        dim_w = dim_w / dim_w.mean()  # weights shift effort between dimensions, not the loss's scale
        if self.config.action_head == "chunk":
            pred, done = self.chunk_forward(prefix, batch.get("object_features"), batch["state"])
            err = (pred - batch["actions"]).abs()
            l2_dims = set(self.action_l2_dims) | ({YAW} if self.config.yaw_head else set())
            if l2_dims:  # the yaw head always learns the conditional mean (see keystone_vla.vla.yaw_head)
                l2 = torch.zeros(self.config.action_dim, dtype=torch.bool, device=err.device)
                l2[sorted(l2_dims)] = True
                err = torch.where(l2, 0.5 * err * err, err)
            per = (err * dim_w).mean(-1)
            action_loss = (per * mask).sum() / mask.sum().clamp(min=1.0)
        else:
            target = self.bins_of(batch["actions"])
            logits, done = self.token_forward(prefix, target)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
            m = (mask[:, :, None] * dim_w).reshape(-1)
            action_loss = (ce * m).sum() / mask.sum().clamp(min=1.0) / self.config.action_dim
        if "step_done" in batch:
            dm = batch.get("step_done_mask", torch.ones_like(batch["step_done"])).float()
            bce = F.binary_cross_entropy_with_logits(done, batch["step_done"].float(), reduction="none")
            done_loss = (bce * dm).sum() / dm.sum().clamp(min=1.0)
        else:
            done_loss = done.sum() * 0.0  # keeps the head in the graph (DDP needs every parameter used)
        losses = {"action": action_loss, "done": done_loss}
        if "plan_ids" in batch and self.config.plan_adapter_rank:
            if "plan_text_features" not in batch:
                raise ModelError("this model has a plan adapter; plan batches need plan_text_features (fit it with "
                                 "a recipe's plan adapter stage, keystone_vla.vla.recipes.PlanAdapterStage)")
            losses["plan"] = plan_adapter_loss(self, batch)
        elif "plan_ids" in batch:
            losses["plan"] = self.lm(input_ids=batch["plan_ids"], labels=batch["plan_labels"]).loss
        else:
            losses["plan"] = self.lm.get_output_embeddings().weight.sum() * 0.0
        losses["loss"] = action_loss + 0.1 * done_loss + losses["plan"]
        return losses


def _random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by `pad` pixels and crop back at a random offset per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (n,))
    oy = torch.randint(0, 2 * pad + 1, (n,))
    return torch.stack([padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts per part (shared tied weights counted once)."""
    seen: set[int] = set()

    def n(mod: nn.Module) -> int:
        total = 0
        for p in mod.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    parts = {"vision": n(model.vision), "lm": n(model.lm)}
    parts["heads"] = n(model)
    parts["total"] = sum(parts.values())
    return parts
