"""VLA network: shapes of every head, KV-cache token decoding, learning on a fixed batch, local backbones."""

from __future__ import annotations

import pytest
import torch

from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.data import Collator, plan_examples_from_samples
from keystone_vla.vla.modeling import VLAModel, count_parameters
from keystone_vla.vla.synthetic import SyntheticDataset
from keystone_vla.vla.tokenizer import WordTokenizer


def _setup(**overrides):
    ds = SyntheticDataset(n=16, image_size=32, chunk_size=4)
    examples = plan_examples_from_samples(ds.samples)
    from keystone_vla.vla.data import text_corpus

    tok = WordTokenizer.build(text_corpus(examples))
    cfg = get_preset("tiny", vocab_size=tok.vocab_size, **overrides)
    batch = Collator(cfg, tok, examples, plan_batch_size=4)(ds.samples[:8])
    return cfg, tok, batch


@pytest.mark.parametrize("head,query", [("chunk", "queries"), ("chunk", "pooled"), ("tokens", "queries")])
def test_heads_give_chunks_of_the_configured_shape(head, query):
    torch.manual_seed(0)
    cfg, tok, batch = _setup(action_head=head, chunk_query=query)
    model = VLAModel(cfg).eval()
    with torch.inference_mode():
        prefix = model.action_prefix(batch["images"], batch["instruction_ids"], batch["state"],
                                     object_features=batch["object_features"])
        assert prefix.shape == (8, cfg.action_prefix_len, model.hidden_size)
        actions, done = model.chunk_forward(prefix) if head == "chunk" else model.token_generate(prefix)
    assert actions.shape == (8, cfg.chunk_size, 7) and done.shape == (8,)
    assert torch.isfinite(actions).all()


def test_kv_cache_token_decoding_matches_teacher_forced_argmax():
    torch.manual_seed(1)
    cfg, tok, batch = _setup(action_head="tokens")
    model = VLAModel(cfg).eval()
    with torch.inference_mode():
        prefix = model.action_prefix(batch["images"][:2], batch["instruction_ids"][:2], batch["state"][:2],
                                     object_features=batch["object_features"][:2])
        actions, _ = model.token_generate(prefix)
        bins = model.bins_of(actions)
        logits, _ = model.token_forward(prefix, bins)  # full forward, no cache, fed the decoded bins
    assert torch.equal(logits.argmax(-1), bins)


def test_bins_round_trip_within_half_a_bin():
    cfg, _, _ = _setup(action_head="tokens")
    model = VLAModel(cfg)
    z = torch.linspace(-2.9, 2.9, 56).view(1, 8, 7)[:, : cfg.chunk_size]
    back = model.bin_centres(model.bins_of(z)).view_as(z)
    assert (back - z).abs().max() <= cfg.action_bin_range / cfg.n_action_bins + 1e-6


@pytest.mark.parametrize("head", ["chunk", "tokens"])
def test_all_losses_fall_on_a_fixed_batch(head):
    torch.manual_seed(0)
    cfg, tok, batch = _setup(action_head=head)
    model = VLAModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        losses = model(batch)
        first = first or {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    last = {k: float(v.detach()) for k, v in model(batch).items()}
    assert last["action"] < 0.7 * first["action"]
    assert last["plan"] < 0.5 * first["plan"]
    assert last["done"] < first["done"]


@pytest.mark.parametrize("head", ["chunk", "tokens"])
def test_action_loss_weights_move_effort_between_dimensions(head):
    torch.manual_seed(0)
    cfg, tok, batch = _setup(action_head=head)
    model = VLAModel(cfg).eval()
    with torch.no_grad():
        alike = float(model(batch)["action"])
        model.action_loss_weights = (1.0,) * 7
        assert float(model(batch)["action"]) == pytest.approx(alike, rel=1e-5)  # uniform weights: the same loss
        per_dim = []
        for d in range(7):
            model.action_loss_weights = tuple(float(i == d) for i in range(7))
            per_dim.append(float(model(batch)["action"]) / 7)  # one dimension only, weights normalised to mean 1
    assert sum(per_dim) == pytest.approx(alike, rel=1e-4)  # the weighted loss splits into per-dimension parts
    # a dimension weighted 0 no longer counts: changing its target leaves the loss alone (the chunk's last
    # gripper number: the token head is teacher-forced, so earlier targets are also later inputs)
    batch = dict(batch, action_mask=torch.ones_like(batch["action_mask"]))
    moved = dict(batch, actions=batch["actions"].clone())
    moved["actions"][:, -1, 6] += 10.0
    with torch.no_grad():
        model.action_loss_weights = (1, 1, 1, 1, 1, 1, 0.0)
        assert float(model(moved)["action"]) == pytest.approx(float(model(batch)["action"]), rel=1e-5)
        model.action_loss_weights = None
        assert abs(float(model(moved)["action"]) - float(model(batch)["action"])) > 1e-3


def test_l2_dimensions_are_learned_with_squared_error():
    torch.manual_seed(0)
    cfg, tok, batch = _setup(action_head="chunk")
    model = VLAModel(cfg).eval()
    batch = dict(batch, action_mask=torch.ones_like(batch["action_mask"]))
    with torch.no_grad():
        prefix = model.action_prefix(batch["images"], batch["instruction_ids"], batch["state"],
                                     object_features=batch["object_features"])
        pred, _ = model.chunk_forward(prefix)
        err = pred - batch["actions"]
        model.action_loss_weights = tuple(float(i == 5) for i in range(7))
        assert float(model(batch)["action"]) == pytest.approx(float(err[..., 5].abs().mean()), rel=1e-4)
        model.action_l2_dims = (5,)
        assert float(model(batch)["action"]) == pytest.approx(float((0.5 * err[..., 5] ** 2).mean()), rel=1e-4)


def test_backbones_load_from_local_pretrained_folders(tmp_path):
    """A user's ViT / Llama folder (here: tiny ones saved locally) is loaded with from_pretrained, and the
    captured configs rebuild the same architecture without those folders."""
    from transformers import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTModel

    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=40, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=80), add_pooling_layer=False)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2))
    vit.save_pretrained(tmp_path / "vit")
    llm.save_pretrained(tmp_path / "llm")
    cfg = get_preset("tiny", vocab_size=50)
    cfg = cfg.replace(vision=cfg.vision.__class__(image_size=32, patch_size=8, pretrained=str(tmp_path / "vit")),
                      lm=cfg.lm.__class__(pretrained=str(tmp_path / "llm")))
    model = VLAModel(cfg)
    assert torch.equal(model.vision.embeddings.patch_embeddings.projection.weight,
                       vit.embeddings.patch_embeddings.projection.weight)
    assert torch.equal(model.lm.model.layers[0].mlp.up_proj.weight, llm.model.layers[0].mlp.up_proj.weight)
    assert model.lm.get_input_embeddings().num_embeddings == 50 + cfg.n_action_bins
    rebuilt = VLAModel(model.config.replace(vision=model.config.vision.__class__(
        **{**model.config.vision.__dict__, "pretrained": "/nonexistent"})))
    assert count_parameters(rebuilt) == count_parameters(model)
