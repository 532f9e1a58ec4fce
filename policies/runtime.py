"""Action-chunk runtime: turns a chunk predictor (observation -> H x 7 actions) into a per-tick policy.

A model predicts H actions per forward pass; the control loop wants one action every 100 ms. `ChunkRuntime`
sits between them:

- it keeps a queue of upcoming actions and asks for a new chunk when at most ``refill_threshold`` remain;
- it executes at most ``n_action_steps`` actions of each chunk;
- with ``ensemble_decay`` set, overlapping chunks are blended per step (ACT's temporal ensembling, weights
  ``exp(-decay * i)`` with i = 0 for the oldest chunk); otherwise the newest chunk replaces the overlap;
- with ``asynchronous=True`` the forward pass runs on a background thread, so ``act`` never waits for
  inference. If the queue is empty when the control loop asks, it returns a *hold* action (zero motion, the
  last gripper command) and counts a stall, instead of blocking the loop (the pauses LeRobot/openpi users see).

Queue slots are indexed by *motion steps* (actions actually executed), not wall ticks: a chunk requested after
motion step m covers steps m, m+1, ...; the steps the arm executed while the chunk was being computed are
dropped from its front (latency compensation), and holds do not consume chunk actions (the arm did not move).

This module must never sleep or block in ``act`` when asynchronous, and never imports torch: predictors bring
their own model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from keystone_vla.errors import ConfigError, ModelError
from keystone_vla.policies.base import gripper_command_from_state, hold_action
from keystone_vla.types import ACTION_DIM, ActionChunk, Observation

ChunkPredictor = Callable[[Observation], "ActionChunk | np.ndarray"]


@dataclass(frozen=True)
class RuntimeConfig:
    """How chunks are consumed. Defaults follow Diffusion Policy's real-robot setting (execute 8 per chunk)."""

    n_action_steps: int = 8
    refill_threshold: int = 0  # request a new chunk when <= this many queued actions remain
    ensemble_decay: float | None = None  # None: newest chunk wins; float >= 0: ACT temporal ensembling
    asynchronous: bool = False  # True: inference on a background thread, act() never blocks

    def __post_init__(self) -> None:
        if self.n_action_steps < 1:
            raise ConfigError(f"n_action_steps must be >= 1, got {self.n_action_steps}")
        if not 0 <= self.refill_threshold < self.n_action_steps:
            raise ConfigError(
                f"refill_threshold must be in [0, n_action_steps) = [0, {self.n_action_steps}), "
                f"got {self.refill_threshold}"
            )
        if self.ensemble_decay is not None and not (self.ensemble_decay >= 0 and np.isfinite(self.ensemble_decay)):
            raise ConfigError(f"ensemble_decay must be a finite number >= 0 or None, got {self.ensemble_decay}")


@dataclass
class RuntimeStats:
    """Counters for one episode (reset by `ChunkRuntime.reset`)."""

    ticks: int = 0  # act() calls
    holds: int = 0  # ticks answered with a hold action because no action was ready
    startup_holds: int = 0  # holds before the first chunk ever arrived (waiting for the first forward pass)
    chunks_requested: int = 0
    chunks_used: int = 0
    chunks_discarded: int = 0  # results that arrived after a flush (stale plan step)
    latencies_ms: list[float] = field(default_factory=list)  # duration of each forward pass

    @property
    def stalls(self) -> int:
        """Holds after motion started: the control loop outran inference."""
        return self.holds - self.startup_holds


@dataclass
class _Request:
    observation: Observation
    motion_index: int
    generation: int


@dataclass
class _Result:
    chunk: ActionChunk | None
    motion_index: int
    generation: int
    latency_ms: float
    error: BaseException | None = None


class ChunkRuntime:
    """Per-tick policy on top of a chunk predictor. See the module docstring for the queue semantics.

    `predict(observation)` returns an `ActionChunk` or a float32 [H, 7] array. `on_chunk(chunk)` (optional) is
    called from the thread that calls `act`, when a chunk is taken into the queue; agents read `step_done` there.
    """

    def __init__(
        self,
        predict: ChunkPredictor,
        config: RuntimeConfig | None = None,
        on_chunk: Callable[[ActionChunk], None] | None = None,
    ) -> None:
        self.predict = predict
        self.config = config or RuntimeConfig()
        self.on_chunk = on_chunk
        self._cond = threading.Condition()
        self._pending: _Request | None = None  # waiting for the worker (replaced by newer requests)
        self._results: deque[_Result] = deque()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._generation = 0
        self._requested_generation: int | None = None  # generation with a request not yet answered
        self.reset()

    # ----------------------------------------------------------------------------------------- lifecycle
    def reset(self) -> None:
        """Start a new episode: empty queue, drop in-flight results, zero the counters."""
        with self._cond:
            self._flush_locked()
            self._motion = 0
            self._last_gripper: float | None = None
            self._chunk_seq = 0
            self.last_chunk: ActionChunk | None = None
            self.stats = RuntimeStats()

    def flush(self) -> None:
        """Drop queued actions and any chunk still being computed (e.g. the plan step changed)."""
        with self._cond:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._generation += 1
        self._pending = None
        self._requested_generation = None
        self._slots: dict[int, list[tuple[int, np.ndarray]]] = {}

    def close(self) -> None:
        """Stop the background thread (waits for a running forward pass to finish)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def __enter__(self) -> ChunkRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- control
    @property
    def queued(self) -> int:
        """Actions ready to execute, contiguous from the current motion step."""
        with self._cond:
            return self._queued_locked()

    def _queued_locked(self) -> int:
        n = 0
        while (self._motion + n) in self._slots:
            n += 1
        return n

    def act(self, observation: Observation) -> np.ndarray:
        """Next action, float32 [7]. Asynchronous: never waits on inference (a hold if nothing is ready)."""
        if self._last_gripper is None:
            self._last_gripper = gripper_command_from_state(observation)
        with self._cond:
            if self._closed:
                raise ModelError("ChunkRuntime is closed; create a new runtime for a new run")
            self._take_results_locked()
            if self._queued_locked() <= self.config.refill_threshold and self._requested_generation != self._generation:
                request = _Request(observation, self._motion, self._generation)
                self._requested_generation = self._generation
                self.stats.chunks_requested += 1
                if self.config.asynchronous:
                    self._pending = request
                    self._ensure_worker()
                    self._cond.notify_all()
                else:
                    self._results.append(self._run(request))
                    self._take_results_locked()
            self.stats.ticks += 1
            candidates = self._slots.pop(self._motion, None)
            if candidates is None:
                self.stats.holds += 1
                if self.stats.chunks_used == 0:
                    self.stats.startup_holds += 1
                return hold_action(self._last_gripper)
            self._motion += 1
            action = _blend(candidates, self.config.ensemble_decay)
            self._last_gripper = float(action[6])
            return action

    # -------------------------------------------------------------------------------------- internals
    def _run(self, request: _Request) -> _Result:
        start = time.perf_counter()
        try:
            raw = self.predict(request.observation)
            chunk = raw if isinstance(raw, ActionChunk) else ActionChunk(np.asarray(raw, dtype=np.float32))
            if len(chunk) == 0 or not np.all(np.isfinite(chunk.actions)):
                raise ModelError(f"chunk predictor returned an empty or non-finite chunk of shape {list(chunk.actions.shape)}")
            error = None
        except Exception as exc:  # handed to the control thread, which re-raises it
            chunk, error = None, exc
        latency = (time.perf_counter() - start) * 1e3
        return _Result(chunk, request.motion_index, request.generation, latency, error)

    def _take_results_locked(self) -> None:
        while self._results:
            result = self._results.popleft()
            self.stats.latencies_ms.append(result.latency_ms)
            if result.error is not None:
                raise result.error
            if result.generation != self._generation:
                self.stats.chunks_discarded += 1
                continue
            self._requested_generation = None
            assert result.chunk is not None
            self._enqueue_locked(result.chunk, result.motion_index)

    def _enqueue_locked(self, chunk: ActionChunk, motion_index: int) -> None:
        seq = self._chunk_seq
        self._chunk_seq += 1
        steps = min(len(chunk), self.config.n_action_steps)
        for i in range(steps):
            m = motion_index + i
            if m < self._motion:  # executed while this chunk was computed
                continue
            action = chunk.actions[i].copy()
            if self.config.ensemble_decay is None:
                self._slots[m] = [(seq, action)]
            else:
                self._slots.setdefault(m, []).append((seq, action))
        self.stats.chunks_used += 1
        self.last_chunk = chunk
        if self.on_chunk is not None:
            self.on_chunk(chunk)

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="keystone-chunk-inference", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                request, self._pending = self._pending, None
            result = self._run(request)  # outside the lock: act() keeps running meanwhile
            with self._cond:
                self._results.append(result)


def _blend(candidates: list[tuple[int, np.ndarray]], decay: float | None) -> np.ndarray:
    """Weighted mean of the actions predicted for one step; the oldest chunk gets weight 1, the next exp(-decay)..."""
    if decay is None or len(candidates) == 1:
        return candidates[-1][1].astype(np.float32, copy=False)
    candidates = sorted(candidates, key=lambda c: c[0])
    weights = np.exp(-decay * np.arange(len(candidates), dtype=np.float64))
    stacked = np.stack([a for _, a in candidates]).astype(np.float64)
    out = (weights[:, None] * stacked).sum(axis=0) / weights.sum()
    return out.astype(np.float32).reshape(ACTION_DIM)
