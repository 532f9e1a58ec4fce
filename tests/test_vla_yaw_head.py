"""The yaw head: config rules, where the chunk's yaw comes from, the features-only fit, and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_vla_helpers import STEP_OBJECTS, observation, tiny_checkpoint

from keystone_vla.errors import ConfigError, ModelError
from keystone_vla.vla.configuration import get_preset
from keystone_vla.vla.modeling import YAW, VLAModel, yaw_head_module
from keystone_vla.vla.yaw_head import evaluate_yaw, fit_yaw_head


@pytest.mark.parametrize("changes", [{"object_token": False}, {"action_head": "tokens"}])
def test_yaw_head_needs_the_object_token_and_the_chunk_head(changes):
    with pytest.raises(ConfigError, match="yaw_head needs object_token"):
        get_preset("tiny", yaw_head=True, **changes)


def _model(**kw):
    torch.manual_seed(0)
    return VLAModel(get_preset("tiny", vocab_size=40, yaw_head=True, **kw)).eval()


def _inputs(cfg, b=3):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (b, 1, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8, generator=g)
    ids = torch.randint(0, 40, (b, cfg.max_instruction_tokens), generator=g)
    state = torch.randn(b, cfg.state_dim, generator=g)
    feats = torch.randn(b, 24, generator=g)
    return images, ids, state, feats


def test_the_chunk_yaw_comes_from_the_head_and_the_rest_from_the_trunk():
    model = _model()
    images, ids, state, feats = _inputs(model.config)
    with torch.inference_mode():
        prefix = model.action_prefix(images, ids, state, object_features=feats)
        actions, done = model.chunk_forward(prefix, feats, state)
        trunk, done_trunk = model._chunk_trunk(prefix)
        expected_yaw = model.yaw_out(torch.cat([feats, state], dim=-1))
        moved, _ = model.chunk_forward(prefix, feats + 1.0, state)  # other object features: only yaw changes
    assert actions.shape == (3, model.config.chunk_size, 7)
    torch.testing.assert_close(actions[..., YAW], expected_yaw)
    others = [d for d in range(7) if d != YAW]
    torch.testing.assert_close(actions[..., others], trunk[..., others])
    torch.testing.assert_close(done, done_trunk)
    torch.testing.assert_close(moved[..., others], actions[..., others])
    assert not torch.allclose(moved[..., YAW], actions[..., YAW])
    with pytest.raises(ModelError, match="yaw head; pass object_features and state"):
        model.chunk_forward(prefix)


def test_joint_training_backpropagates_into_the_head_with_squared_error():
    model = _model().train()
    images, ids, state, feats = _inputs(model.config, b=4)
    actions = torch.zeros(4, model.config.chunk_size, 7)
    actions[..., YAW] = 2.0
    batch = {"images": images, "instruction_ids": ids, "state": state, "object_features": feats,
             "actions": actions, "action_mask": torch.ones(4, model.config.chunk_size, dtype=torch.bool)}
    loss = model(batch)["action"]
    loss.backward()
    assert model.yaw_out[-1].weight.grad.abs().sum() > 0
    # squared error on yaw: a yaw error of e costs 0.5 e^2 (L1 would cost |e|); check against the formula
    with torch.no_grad():
        pred, _ = model.chunk_forward(model.action_prefix(images, ids, state, object_features=feats), feats, state)
        err = (pred - actions).abs()
        err[..., YAW] = 0.5 * err[..., YAW] ** 2
    torch.testing.assert_close(loss, err.mean(), rtol=1e-4, atol=1e-5)


def test_fit_learns_a_turn_that_depends_on_the_features():
    """Labels like the expert's: a turn only where a feature says the gap is open and the gripper is up."""
    cfg = get_preset("tiny")
    rng = np.random.default_rng(0)
    n, h = 6000, cfg.chunk_size
    x = rng.normal(size=(n, 24 + cfg.state_dim)).astype(np.float32)
    gap = np.sin(x[:, 3])  # a sin(yaw gap) feature
    up = x[:, 24 + 2] > 0  # a height in the state
    y = np.repeat((2.0 * gap * up)[:, None], h, axis=1).astype(np.float32)
    m = np.ones((n, h), bool)
    m[:100, h // 2:] = False  # the end of an episode: masked entries never count
    y[:100, h // 2:] = 50.0
    torch.manual_seed(0)
    head = yaw_head_module(cfg)
    train, val = (x[:5000], y[:5000], m[:5000]), (x[5000:], y[5000:], m[5000:])
    out = fit_yaw_head(head, train, val, steps=800, batch_size=256, lr=3e-3, progress=False)
    assert out["val_before"]["correlation"] < 0.5
    assert out["val_after"]["mse"] < 0.1 * out["val_after"]["label_variance"]
    assert out["val_after"]["correlation"] > 0.95
    assert evaluate_yaw(head, *train)["mse"] < 0.1  # the masked 50s did not pull the fit
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        fit_yaw_head(head, train, val, steps=0, progress=False)


def test_a_checkpoint_with_a_yaw_head_round_trips_and_drives_the_policy(tmp_path):
    from keystone_vla.vla.checkpoint import load_pretrained
    from keystone_vla.vla.policy import VLAPolicy

    folder = tiny_checkpoint(tmp_path / "ck", steps=2, yaw_head=True)
    bundle = load_pretrained(folder)
    assert bundle.config.yaw_head and any(k.startswith("yaw_out.") for k in bundle.model.state_dict())
    policy = VLAPolicy.from_pretrained(folder, warmup=False)
    obs = observation()
    chunk = policy.predict_chunk(obs, "pick up the red block", STEP_OBJECTS)
    with torch.inference_mode():
        feats = torch.from_numpy(policy.check_step_objects(STEP_OBJECTS, obs)[None])
        state = torch.from_numpy(policy.normalizer.normalize_state(obs.state)[None])
        z = policy.model.yaw_out(torch.cat([feats, state], dim=-1))[0].numpy()
    yaw = policy.normalizer.unnormalize_action(np.pad(z[:, None], ((0, 0), (YAW, 1))))[:, YAW]
    np.testing.assert_allclose(chunk.actions[:, YAW], yaw, rtol=1e-4, atol=1e-6)
