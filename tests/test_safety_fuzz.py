"""Fuzzing the shield: hypothesis properties and a seeded sweep of >= 100,000 commands.

Invariant checked on every emitted command (limits recomputed here from the RobotSpec, not read from the
shield): it never makes a limit violation worse than the current state; joint step, velocity, acceleration
(speeding up) and TCP speed are always within limits; non-finite targets are held. Collisions (PyBullet, the
costly part) are verified on a sample of the sweep with an independent table check.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pybullet as pb  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from keystone_vla.robots import PANDA, resolve_urdf  # noqa: E402
from keystone_vla.safety import NONFINITE, SafetyShield, ShieldLimits  # noqa: E402

SPEC, LIM = PANDA, ShieldLimits()
LO = np.array(SPEC.lower_limits) + LIM.position_margin
HI = np.array(SPEC.upper_limits) - LIM.position_margin
VMAX = np.array(SPEC.velocity_limits) * LIM.velocity_scale
BOX_LO, BOX_HI = np.array(SPEC.workspace[0]), np.array(SPEC.workspace[1])
TOL = 1e-7


@pytest.fixture(scope="module")
def shield():
    s = SafetyShield.for_robot(SPEC, LIM)
    yield s
    s.close()


def box_dist(p):
    return np.linalg.norm(np.maximum(0, np.maximum(BOX_LO - p, p - BOX_HI)), axis=-1)


def pos_violation(q):
    return np.max(np.maximum(0, np.maximum(LO - q, q - HI)), axis=-1)


def assert_commands_safe(shield, q_now, target, q_safe, dt, v_prev):
    """Every row of q_safe obeys the limits relative to q_now (vectorised)."""
    assert np.isfinite(q_safe).all()
    step = q_safe - q_now
    v = step / dt
    assert np.all(np.abs(step) <= LIM.max_step + TOL), "max step"
    assert np.all(np.abs(v) <= VMAX + TOL), "joint velocity"
    a = LIM.acceleration_limit * dt
    assert np.all((v <= np.maximum(0, v_prev + a) + TOL) & (v >= np.minimum(0, v_prev - a) - TOL)), "acceleration"
    assert np.all(pos_violation(q_safe) <= pos_violation(q_now) + TOL), "joint position limits"
    p_now, p_safe = shield.kinematics.tcp_positions(q_now), shield.kinematics.tcp_positions(q_safe)
    assert np.all(np.linalg.norm(p_safe - p_now, axis=1) / dt <= LIM.tcp_speed_limit + TOL), "TCP speed"
    assert np.all(box_dist(p_safe) <= box_dist(p_now) + TOL), "workspace box"
    held = ~np.isfinite(target).all(axis=1)
    np.testing.assert_array_equal(q_safe[held], q_now[held])


def sweep_batch(rng, n, dt):
    """Current states (some outside limits), previous velocities, and adversarial targets in six families."""
    home = np.array(SPEC.home)
    q_now = np.clip(home + rng.uniform(-0.9, 0.9, (n, 7)), np.array(SPEC.lower_limits), np.array(SPEC.upper_limits))
    q_now[: n // 20] = rng.uniform(np.array(SPEC.lower_limits), np.array(SPEC.upper_limits), (n // 20, 7))
    v_prev = rng.uniform(-1, 1, (n, 7)) * VMAX * (rng.random((n, 1)) < 0.5)
    kind = rng.integers(0, 6, n)
    target = q_now + rng.normal(0, 0.1 * dt, (n, 7))  # 0: small, plausible for this tick
    big = kind == 1
    target[big] = rng.uniform(-4, 4, (big.sum(), 7))  # 1: anywhere
    nanm = kind == 2
    target[nanm] = np.where(rng.random((nanm.sum(), 7)) < 0.3, rng.choice([np.nan, np.inf, -np.inf], (nanm.sum(), 7)),
                            target[nanm])  # 2: NaN / inf entries
    huge = kind == 3
    target[huge] = rng.choice([1e6, -1e9, 1e300, 3.5], (huge.sum(), 7))  # 3: huge numbers
    table = kind == 4  # 4: lean shoulder/elbow forward and down, through the table
    target[table] = q_now[table] + np.array([0, 1.2, 0, 0.8, 0, -0.5, 0]) * rng.uniform(0.1, 2, (table.sum(), 1))
    jump = kind == 5  # 5: one joint jumps far
    target[jump, rng.integers(0, 7, jump.sum())] += rng.choice([-3.0, 3.0], jump.sum())
    return q_now, target, v_prev


def test_sweep_100k_commands_emit_nothing_unsafe(shield):
    rng = np.random.default_rng(20240607)
    total, passed_through, limited = 0, 0, 0
    for dt in (0.1, 0.05, 0.01, 0.2):
        q_now, target, v_prev = sweep_batch(rng, 25_000, dt)
        q_safe, flags = shield.filter_batch(q_now, target, dt, v_prev, check_collision=False)
        assert_commands_safe(shield, q_now, target, q_safe, dt, v_prev)
        assert np.all((flags & NONFINITE > 0) == ~np.isfinite(target).all(axis=1))
        total += len(q_now)
        passed_through += int(np.all(np.isclose(q_safe, target), axis=1).sum())
        limited += int((flags > 0).sum())
    assert total >= 100_000
    # not vacuous: plenty of commands pass unchanged and plenty are limited
    assert passed_through > 0.03 * total and limited > 0.3 * total, (passed_through, limited)


@pytest.mark.slow
def test_sweep_sample_with_collisions_never_sinks_into_the_table(shield):
    rng = np.random.default_rng(7)
    q_now, target, v_prev = sweep_batch(rng, 1500, 0.1)
    ok = np.array([not any(shield.violations(q)[k] for k in ("table", "self_collision")) for q in q_now])
    q_now, target, v_prev = q_now[ok], target[ok], v_prev[ok]
    q_safe, _ = shield.filter_batch(q_now, target, 0.1, v_prev)
    assert_commands_safe(shield, q_now, target, q_safe, 0.1, v_prev)
    # independent table check: a separate PyBullet client, closest points between arm links and the plane
    cid = pb.connect(pb.DIRECT)
    try:
        robot = pb.loadURDF(resolve_urdf(SPEC), SPEC.base_position, useFixedBase=True, physicsClientId=cid)
        plane = pb.createMultiBody(0, pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=cid), physicsClientId=cid)
        index = {pb.getJointInfo(robot, i, physicsClientId=cid)[1].decode(): i
                 for i in range(pb.getNumJoints(robot, physicsClientId=cid))}
        for g in SPEC.gripper.joint_names:
            pb.resetJointState(robot, index[g], SPEC.gripper.open_position, physicsClientId=cid)
        for q in q_safe:
            for name, v in zip(SPEC.joint_names, q):
                pb.resetJointState(robot, index[name], float(v), physicsClientId=cid)
            pts = pb.getClosestPoints(robot, plane, 0.0, physicsClientId=cid)
            deepest = min((p[8] for p in pts if p[3] != -1), default=0.0)
            assert deepest >= -(LIM.table_tolerance + 1e-4)
        moved = int((np.abs(q_safe - q_now).max(axis=1) > 0).sum())
        assert moved > 0.3 * len(q_now)
    finally:
        pb.disconnect(cid)
    assert all(shield.violations(q)["self_collision"] == 0 for q in q_safe[::5])


finite = st.floats(-10, 10, allow_nan=False)
anyfloat = st.one_of(st.floats(allow_nan=True, allow_infinity=True), finite)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q_frac=st.lists(st.floats(0.05, 0.95), min_size=7, max_size=7),
       target=st.lists(anyfloat, min_size=7, max_size=7),
       dt=st.floats(0.002, 0.5), v_scale=st.floats(-1, 1))
def test_property_single_command(shield, q_frac, target, dt, v_scale):
    q_now = LO + (HI - LO) * np.array(q_frac)
    v_prev = VMAX * v_scale
    target = np.array(target)
    q_safe, _ = shield.filter_batch(q_now[None], target[None], dt, v_prev[None])
    assert_commands_safe(shield, q_now[None], target[None], q_safe, dt, v_prev[None])
    if not np.isfinite(target).all():
        np.testing.assert_array_equal(q_safe[0], q_now)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deltas=st.lists(st.lists(st.floats(-0.3, 0.3), min_size=7, max_size=7), min_size=1, max_size=8),
       dts=st.lists(st.floats(0.0, 0.5), min_size=8, max_size=8), perm=st.permutations(range(7)))
def test_property_trajectory(shield, deltas, dts, perm):
    home = np.array(SPEC.home)
    positions = home + np.cumsum(np.array(deltas), axis=0)
    times = np.cumsum(np.array(dts[: len(deltas)]))
    names = [SPEC.joint_names[i] for i in perm]
    res = shield.check_trajectory(names, [(p[list(perm)], t) for p, t in zip(positions, times)], home)
    if not res.accepted:
        assert res.positions.shape == (0, 7) and res.reason
        return
    wp = np.vstack([home, res.positions])
    seg_t = np.diff(np.r_[0.0, res.times_from_start])
    assert np.all(seg_t > 0)
    assert np.all(np.abs(np.diff(wp, axis=0)) <= LIM.max_step + TOL)
    assert np.all(np.abs(np.diff(wp, axis=0)) / seg_t[:, None] <= VMAX + TOL)
    assert np.all(pos_violation(res.positions) <= TOL)
    tcp = shield.kinematics.tcp_positions(wp)
    assert np.all(np.linalg.norm(np.diff(tcp, axis=0), axis=1) / seg_t <= LIM.tcp_speed_limit + TOL)
    assert np.all(box_dist(tcp) <= TOL)
    assert all(shield.violations(q)["table"] == 0 for q in res.positions)
