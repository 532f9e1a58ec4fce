"""Helpers shared by the tests/test_vla*.py files: a tiny trained-for-a-few-steps checkpoint and observations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keystone_vla.types import Observation

# a step's objects (float [21]: first and last object, x y z yaw size_xyz, then the end-effector pose when the
# step began), for models with an object token
STEP_OBJECTS = np.array([0.5, 0.0, 0.02, 0.3, 0.04, 0.04, 0.04, 0.5, 0.2, 0.02, 0.0, 0.12, 0.12, 0.05,
                         0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0], np.float32)


def tiny_checkpoint(folder: Path, steps: int = 3, action_head: str = "chunk", seed: int = 0,
                    normalization: dict | None = None, **overrides) -> Path:
    """Train the `tiny` preset for `steps` steps on the synthetic dataset and save it to `folder`."""
    from keystone_vla.vla.configuration import get_preset
    from keystone_vla.vla.data import plan_examples_from_samples
    from keystone_vla.vla.normalization import Normalizer
    from keystone_vla.vla.synthetic import SyntheticDataset
    from keystone_vla.vla.train import TrainConfig, train

    cfg = get_preset("tiny", action_head=action_head, **overrides)
    ds = SyntheticDataset(n=32, image_size=cfg.image_size, chunk_size=cfg.chunk_size, seed=seed)
    norm = normalization or Normalizer.identity(cfg.state_dim, cfg.action_dim).to_dict()
    train(cfg, TrainConfig(steps=steps, batch_size=8, plan_batch_size=4, val_every=0, save_every=0, seed=seed,
                           bf16="off", warmup_steps=1),
          ds, plan_examples_from_samples(ds.samples), norm, folder, progress=False)
    return folder


def observation(size: int = 32, cameras: tuple[str, ...] = ("front",), seed: int = 0, state_dim: int = 8) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(images={c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in cameras},
                       state=rng.normal(size=state_dim).astype(np.float32), ee_pose=np.zeros(7, np.float32),
                       instruction="put the red block in the bowl")
