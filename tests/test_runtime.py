"""Chunk runtime: queue refills, n_action_steps, temporal ensembling, asynchronous inference, flushes, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from keystone_vla.errors import ConfigError, ModelError
from keystone_vla.policies.runtime import ChunkRuntime, RuntimeConfig
from keystone_vla.types import ActionChunk, Observation


def obs(opening: float = 1.0) -> Observation:
    state = np.zeros(8, dtype=np.float32)
    state[-1] = opening
    return Observation(images={}, state=state, ee_pose=np.zeros(7, dtype=np.float32))


class Counter:
    """Chunk k (0-based) has action[i] = (k, i, 0, 0, 0, 0, gripper)."""

    def __init__(self, horizon: int = 8, gripper: float = 1.0, gate: threading.Event | None = None) -> None:
        self.horizon, self.gripper, self.gate = horizon, gripper, gate
        self.calls = 0
        self.started = threading.Event()

    def __call__(self, observation: Observation) -> ActionChunk:
        k = self.calls
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        a = np.zeros((self.horizon, 7), dtype=np.float32)
        a[:, 0] = k
        a[:, 1] = np.arange(self.horizon)
        a[:, 6] = self.gripper
        return ActionChunk(a, step_done=0.25 * k)


def wait_for(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.002)


def test_sync_executes_n_action_steps_then_refills() -> None:
    pred = Counter(horizon=8)
    rt = ChunkRuntime(pred, RuntimeConfig(n_action_steps=3))
    got = [rt.act(obs())[:2].tolist() for _ in range(7)]
    assert got == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [2, 0]]
    assert pred.calls == 3 and rt.stats.chunks_requested == 3 and rt.stats.holds == 0
    assert len(rt.stats.latencies_ms) == 3
    assert rt.last_chunk is not None and rt.last_chunk.step_done == 0.5


def test_refill_threshold_requests_early_and_newest_chunk_wins() -> None:
    pred = Counter(horizon=4)
    rt = ChunkRuntime(pred, RuntimeConfig(n_action_steps=4, refill_threshold=1))
    got = [rt.act(obs())[:2].tolist() for _ in range(6)]
    # chunk 0 runs steps 0..2; with 1 action left chunk 1 (requested at motion 3) replaces it
    assert got == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_temporal_ensembling_weights_oldest_most() -> None:
    pred = Counter(horizon=4)
    decay = 0.5
    rt = ChunkRuntime(pred, RuntimeConfig(n_action_steps=4, refill_threshold=3, ensemble_decay=decay))
    out = [rt.act(obs()) for _ in range(3)]
    # new chunk every tick; at motion 2 chunks 0,1,2 overlap with x = 0,1,2 and y (index in chunk) = 2,1,0
    w = np.exp(-decay * np.arange(3))
    assert out[2][0] == pytest.approx(float((w * [0, 1, 2]).sum() / w.sum()), abs=1e-6)
    assert out[2][1] == pytest.approx(float((w * [2, 1, 0]).sum() / w.sum()), abs=1e-6)
    assert out[0][:2].tolist() == [0, 0]


def test_async_never_waits_for_a_blocked_forward_pass() -> None:
    gate = threading.Event()
    pred = Counter(horizon=4, gripper=1.0, gate=gate)
    with ChunkRuntime(pred, RuntimeConfig(n_action_steps=4, refill_threshold=2, asynchronous=True)) as rt:
        # the predictor is blocked on the gate: every act() must still return, holding the observed gripper
        holds = [rt.act(obs(opening=0.25)) for _ in range(5)]
        assert pred.started.wait(10)
        for a in holds:
            assert a.tolist() == [0, 0, 0, 0, 0, 0, 0.75]
        assert rt.stats.holds == 5 and rt.stats.startup_holds == 5 and rt.stats.stalls == 0
        gate.set()
        wait_for(lambda: rt._results or rt.queued)  # result posted by the worker
        got = [rt.act(obs())[:2].tolist() for _ in range(3)]
        # holds consumed no chunk actions: chunk 0 starts at its first action
        assert got == [[0, 0], [0, 1], [0, 2]]
        # with 2 actions left at motion 2, chunk 1 was requested (the worker picks it up)
        wait_for(lambda: pred.calls == 2)


def test_async_drops_actions_executed_during_inference_and_counts_stalls() -> None:
    gate = threading.Event()
    gate.set()
    pred = Counter(horizon=4, gripper=0.0, gate=gate)
    with ChunkRuntime(pred, RuntimeConfig(n_action_steps=4, refill_threshold=2, asynchronous=True)) as rt:
        rt.act(obs())  # startup hold, request chunk 0
        wait_for(lambda: rt.queued == 0 and bool(rt._results))
        gate.clear()
        pred.started.clear()
        a0 = rt.act(obs())  # takes chunk 0, executes motion 0
        a1 = rt.act(obs())  # motion 1
        a2 = rt.act(obs())  # 2 left -> request chunk 1 at motion 2 (blocked); executes motion 2
        assert pred.started.wait(10)
        a3 = rt.act(obs())  # motion 3 from chunk 0 while chunk 1 is computed
        assert [a0[:2].tolist(), a1[:2].tolist()] == [[0, 0], [0, 1]]
        stall = rt.act(obs())  # chunk 0 exhausted, chunk 1 still blocked: a stall, not a wait
        assert [a2[:2].tolist(), a3[:2].tolist()] == [[0, 2], [0, 3]]
        assert stall.tolist() == [0, 0, 0, 0, 0, 0, 0.0]
        assert rt.stats.stalls == 1
        gate.set()
        wait_for(lambda: bool(rt._results))
        # chunk 1 was requested at motion 2; motions 2 and 3 already ran, so it resumes at its index 2
        assert rt.act(obs())[:2].tolist() == [1, 2]


def test_flush_discards_stale_in_flight_chunk() -> None:
    gate = threading.Event()
    pred = Counter(horizon=4, gate=gate)
    with ChunkRuntime(pred, RuntimeConfig(n_action_steps=4, refill_threshold=1, asynchronous=True)) as rt:
        rt.act(obs())
        assert pred.started.wait(10)
        rt.flush()  # plan step changed while chunk 0 was computed
        rt.act(obs())  # a fresh request (chunk 1) is queued behind the running one
        gate.set()
        wait_for(lambda: pred.calls == 2 and len(rt._results) == 2)
        assert rt.act(obs())[:2].tolist() == [1, 0]
        assert rt.stats.chunks_discarded == 1 and rt.stats.chunks_used == 1


def test_predictor_errors_reach_the_control_thread() -> None:
    def broken(_: Observation) -> np.ndarray:
        return np.full((4, 7), np.nan, dtype=np.float32)

    rt = ChunkRuntime(broken, RuntimeConfig(n_action_steps=4))
    with pytest.raises(ModelError, match="non-finite"):
        rt.act(obs())

    def wrong_shape(_: Observation) -> np.ndarray:
        return np.zeros((4, 6), dtype=np.float32)

    with ChunkRuntime(wrong_shape, RuntimeConfig(n_action_steps=4, asynchronous=True)) as rt2:
        rt2.act(obs())
        wait_for(lambda: bool(rt2._results))
        with pytest.raises(ConfigError, match="shape"):
            rt2.act(obs())


def test_reset_clears_queue_and_counters() -> None:
    pred = Counter(horizon=8)
    rt = ChunkRuntime(pred, RuntimeConfig(n_action_steps=8))
    rt.act(obs())
    rt.act(obs())
    rt.reset()
    assert rt.stats.ticks == 0 and rt.queued == 0
    assert rt.act(obs())[:2].tolist() == [1, 0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_action_steps": 0}, "n_action_steps"),
        ({"n_action_steps": 4, "refill_threshold": 4}, "refill_threshold"),
        ({"ensemble_decay": -1.0}, "ensemble_decay"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RuntimeConfig(**kwargs)
