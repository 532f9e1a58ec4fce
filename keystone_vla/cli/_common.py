"""Helpers shared by the CLI modules: one way to print summaries and progress."""

from __future__ import annotations

import json
import sys
from typing import Any


def split_list(text: str) -> list[str]:
    """A comma-separated flag value as a list of its non-empty, stripped items ("front, wrist" -> [front, wrist])."""
    return [item.strip() for item in text.split(",") if item.strip()]


def emit_summary(summary: dict[str, Any], as_json: bool, title: str = "") -> None:
    """Print a one-screen human summary to stderr; with `as_json`, the same dict as the last stdout line."""
    if title:
        print(title, file=sys.stderr)
    width = max((len(k) for k in summary), default=0)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        print(f"  {key:<{width}}  {value}", file=sys.stderr)
    if as_json:
        print(json.dumps(summary, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)
