"""SafetyShield behaviour on single commands and trajectories (real PyBullet kinematic model)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pybullet as pb  # noqa: E402
import pytest  # noqa: E402

from keystone_vla.errors import ConfigError, SafetyError  # noqa: E402
from keystone_vla.robots import IIWA, PANDA  # noqa: E402
from keystone_vla.safety import SafetyShield, ShieldLimits  # noqa: E402

HOME = np.array(PANDA.home)


@pytest.fixture(scope="module")
def shield():
    s = SafetyShield.for_robot(PANDA)
    yield s
    s.close()


@pytest.mark.parametrize("spec", [PANDA, IIWA], ids=lambda s: s.name)
def test_numpy_fk_matches_pybullet(spec):
    s = SafetyShield.for_robot(spec)
    try:
        c = s.collision
        link = {pb.getJointInfo(c.robot, i, physicsClientId=c.client)[12].decode(): i
                for i in range(pb.getNumJoints(c.robot, physicsClientId=c.client))}[spec.ee_link]
        qs = np.random.default_rng(0).uniform(s.lower, s.upper, (40, spec.dof))
        fk = s.kinematics.tcp_positions(qs)
        for q, p in zip(qs, fk):
            c.penetration(q)  # sets the joints
            ref = pb.getLinkState(c.robot, link, computeForwardKinematics=True, physicsClientId=c.client)[4]
            np.testing.assert_allclose(p, ref, atol=1e-6)
        assert all(v == 0 for v in s.violations(np.array(spec.home)).values())
    finally:
        s.close()


def test_small_safe_step_passes_unchanged(shield):
    shield.reset()
    target = HOME + 0.003
    q, events = shield.filter_joint_target(HOME, target, 0.1)
    np.testing.assert_allclose(q, target)
    assert events == []


def test_nonfinite_and_wrong_length_targets_hold(shield):
    shield.reset()
    bad = HOME.copy()
    bad[2] = np.nan
    q, events = shield.filter_joint_target(HOME, bad, 0.1)
    np.testing.assert_array_equal(q, HOME)
    assert events[0].startswith("rejected_nonfinite") and "[2]" in events[0]
    q, events = shield.filter_joint_target(HOME, HOME[:6], 0.1)
    np.testing.assert_array_equal(q, HOME)
    assert events[0].startswith("rejected_shape")
    q, events = shield.filter_joint_target(HOME, np.full(7, 1e9), 0.1)
    assert np.abs(q - HOME).max() <= 0.25 + 1e-9 and "position_clamped" in events[0]


def test_bad_state_or_dt_raise(shield):
    with pytest.raises(SafetyError, match="NaN"):
        shield.filter_joint_target(HOME + np.inf, HOME, 0.1)
    with pytest.raises(SafetyError, match="dt"):
        shield.filter_joint_target(HOME, HOME, 0.0)
    with pytest.raises(SafetyError, match="6 values"):
        shield.filter_joint_target(HOME[:6], HOME, 0.1)


def test_limits_clamp_velocity_acceleration_and_tcp_speed(shield):
    shield.reset()
    dt = 0.1
    q, events = shield.filter_joint_target(HOME, HOME + 0.2, dt)
    codes = {e.split(":")[0] for e in events}
    assert {"acceleration_limited", "tcp_speed_limited"} <= codes
    v = (q - HOME) / dt
    assert np.all(np.abs(v) <= 10.0 * dt + 1e-9)  # from rest: speed <= a_max * dt
    p0, p1 = shield.kinematics.tcp_positions(np.stack([HOME, q]))
    assert np.linalg.norm(p1 - p0) / dt <= 0.25 + 1e-9
    assert np.all(np.sign(q - HOME) == 1)  # shortened along its own direction, not redirected


def test_command_into_the_table_never_penetrates(shield):
    shield.reset()
    target = HOME.copy()
    target[1], target[3] = 1.5, -0.5  # shoulder forward: the hand dives into the table
    q = HOME.copy()
    events_all = []
    for _ in range(200):
        q_new, events = shield.filter_joint_target(q, target, 0.1)
        events_all += events
        assert shield.violations(q_new)["table"] == 0.0
        assert shield.violations(q_new)["workspace"] == 0.0
        q = q_new
    assert any(e.startswith(("collision_avoided", "workspace_limited")) for e in events_all)
    assert shield.kinematics.tcp_positions(q[None])[0, 2] >= 0.0


def test_self_collision_is_detected(shield):
    folded = np.array([-1.95, 1.63, 0.09, -2.7, 0.71, 2.89, 0.65])
    assert shield.violations(folded)["self_collision"] > 0


def test_limits_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="tcp_sped"):
        ShieldLimits.from_mapping({"tcp_sped": 0.1})
    lim = ShieldLimits.from_mapping({"tcp_speed_limit": 0.1, "workspace": [[0, -1, 0], [1, 1, 1]]})
    assert lim.tcp_speed_limit == 0.1 and lim.workspace == ((0.0, -1.0, 0.0), (1.0, 1.0, 1.0))


def test_trajectory_checks(shield):
    names = list(PANDA.joint_names)
    stop = shield.check_trajectory(names, [], HOME)
    assert stop.accepted and stop.positions.shape == (0, 7)
    ok = shield.check_trajectory(names[::-1], [((HOME + 0.01)[::-1], 0.5)], HOME)
    assert ok.accepted and ok.events == []
    np.testing.assert_allclose(ok.positions[0], HOME + 0.01)
    for points, code in [
        ([(HOME, 0.2), (HOME, 0.1)], "rejected_times"),
        ([(HOME[:5], 0.2)], "rejected_shape"),
        ([(HOME + 0.5, 2.0)], "rejected_step"),
        ([(HOME, float("nan"))], "rejected_nonfinite"),
        ([(HOME, 0.01 * (i + 1)) for i in range(1001)], "rejected_length"),
    ]:
        res = shield.check_trajectory(names, points, HOME)
        assert not res.accepted and res.events[0].startswith(code), res.events
        assert res.positions.shape == (0, 7)
    fast = shield.check_trajectory(names, [(HOME + 0.1 * (k + 1) / 5, 0.01 * (k + 1)) for k in range(5)], HOME)
    assert fast.accepted and any(e.startswith("velocity_limited") for e in fast.events)
    seg = np.diff(np.vstack([HOME, fast.positions]), axis=0)
    assert np.all(np.abs(seg) / np.diff(np.r_[0, fast.times_from_start])[:, None] <= shield.vmax + 1e-9)


@pytest.mark.parametrize("arm", ["panda", "iiwa"])
def test_shield_tcp_is_the_simulators_end_effector_in_the_cell_frame(arm):
    from keystone_vla.sim.world import SimWorld

    world = SimWorld(arm=arm, image_size=32, cameras=())
    s = SafetyShield.for_robot(world.spec)
    try:
        q = world.robot.joint_positions().astype(np.float64)
        np.testing.assert_allclose(s.kinematics.tcp_positions(q[None])[0], world.robot.ee_pose()[:3], atol=1e-5)
    finally:
        s.close()
        world.close()
