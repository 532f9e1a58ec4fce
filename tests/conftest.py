"""Shared test settings: one torch/BLAS thread per process (2-core machine), repository paths."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

import broken_policy  # noqa: E402,F401  (registers --policy broken for the harness tests)
