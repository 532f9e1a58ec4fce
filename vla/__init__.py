"""keystone_vla.vla: the ViT + LLM policy (model, tokenizer, plan decoding, training, checkpoints).

Public entry points: `VLAPolicy` (inference), `VLAConfig` / `get_preset` (configs), `VLAModel` (network),
`save_pretrained` / `load_pretrained` (checkpoint folders), `train` / `TrainConfig` (training loop).
Attributes are imported lazily so `import keystone_vla.vla` stays cheap (no torch until a model is used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VLAPolicy": "keystone_vla.vla.policy",
    "VLAConfig": "keystone_vla.vla.configuration",
    "get_preset": "keystone_vla.vla.configuration",
    "PRESETS": "keystone_vla.vla.configuration",
    "VLAModel": "keystone_vla.vla.modeling",
    "save_pretrained": "keystone_vla.vla.checkpoint",
    "load_pretrained": "keystone_vla.vla.checkpoint",
    "train": "keystone_vla.vla.train",
    "TrainConfig": "keystone_vla.vla.train",
    "WordTokenizer": "keystone_vla.vla.tokenizer",
    "PlanGrammar": "keystone_vla.vla.plan_grammar",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keystone_vla.vla' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
