"""Aligning streams of different rates onto one fixed control rate ("as of" sampling with a freshness limit).

Ticks run every 1/rate_hz seconds from the moment every stream has published at least once to the moment the
first stream publishes its last message. At tick k each stream contributes its latest message stamped at
or before the tick; if that message is older than the stream's `max_age_s`, the tick is stale and dropped
(counted per stream). Consecutive kept ticks form segments; a segment shorter than `min_segment_s` is dropped
too, because a few isolated frames between gaps are not a usable demonstration.

All times are integer nanoseconds, so alignment is exact and reproducible. This module is pure numpy and
must never read bags or touch the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from keystone_vla.errors import DatasetError


@dataclass
class Alignment:
    ticks_ns: np.ndarray                      # int64 [K] every tick in the overlap window
    index: dict[str, np.ndarray]              # stream -> int64 [K] message index used at each tick (-1: none)
    keep: np.ndarray                          # bool [K] all streams fresh
    stale: dict[str, int] = field(default_factory=dict)  # stream -> ticks where it was stale
    segments: list[tuple[int, int]] = field(default_factory=list)  # [start, stop) tick ranges kept
    short_segment_ticks: int = 0

    @property
    def ticks(self) -> int:
        return int(len(self.ticks_ns))

    @property
    def kept(self) -> int:
        return int(sum(b - a for a, b in self.segments))

    @property
    def dropped(self) -> int:
        return self.ticks - self.kept


def align_streams(stamps_ns: dict[str, np.ndarray], max_age_s: dict[str, float], rate_hz: float,
                  min_segment_s: float = 0.0) -> Alignment:
    """Sample every stream "as of" each tick; `stamps_ns[s]` must be sorted int64 nanoseconds."""
    if not stamps_ns:
        raise DatasetError("nothing to align: no streams were given")
    empty = [s for s, v in stamps_ns.items() if len(v) == 0]
    if empty:
        raise DatasetError(f"stream(s) {empty} have no messages; check the topics in the map")
    for s, v in stamps_ns.items():
        if np.any(np.diff(v) < 0):
            raise DatasetError(f"stream {s!r} stamps are not sorted")
    period = int(round(1e9 / rate_hz))
    start = max(int(v[0]) for v in stamps_ns.values())
    end = min(int(v[-1]) for v in stamps_ns.values())
    if end < start:
        raise DatasetError("the streams never overlap in time (one ends before another starts); nothing to align")
    ticks = start + period * np.arange((end - start) // period + 1, dtype=np.int64)
    keep = np.ones(len(ticks), bool)
    index, stale = {}, {}
    for s, v in stamps_ns.items():
        idx = np.searchsorted(v, ticks, side="right") - 1
        age = ticks - v[np.maximum(idx, 0)]
        fresh = (idx >= 0) & (age <= int(round(max_age_s[s] * 1e9)))
        index[s] = idx.astype(np.int64)
        stale[s] = int((~fresh).sum())
        keep &= fresh
    segments, short = [], 0
    min_ticks = max(1, int(np.ceil(min_segment_s * rate_hz - 1e-9)))
    k = 0
    while k < len(keep):
        if not keep[k]:
            k += 1
            continue
        j = k
        while j < len(keep) and keep[j]:
            j += 1
        if j - k >= min_ticks:
            segments.append((k, j))
        else:
            short += j - k
        k = j
    return Alignment(ticks, index, keep, stale, segments, short)
