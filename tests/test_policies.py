"""Policies: oracle/broken contracts, registry errors, the CNN baseline (train, save, load), the VLA agent
(plan -> ground -> steps -> chunks) and policy-side refusals in the harness. Real sim, store and models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_vla_helpers import tiny_checkpoint

from keystone_vla.errors import ConfigError, GroundingError, ModelError
from keystone_vla.perception.objects import DetectedObject
from keystone_vla.policies.baseline import BaselineConfig, BaselinePolicy
from keystone_vla.policies.evaluate import EpisodeJob, EvalConfig, plan_agreement, run_job
from keystone_vla.policies.oracle import OraclePolicy
from keystone_vla.policies.registry import load_policy, resolve_policy_name
from keystone_vla.policies.vla_agent import VLAAgent
from keystone_vla.sim.rollout import make_world
from keystone_vla.types import EpisodeSpec, Observation, Plan, PlanStep


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from keystone_vla.datasets.collect import collect_one
    from keystone_vla.datasets.store import EpisodeStore

    path = tmp_path_factory.mktemp("store") / "demos"
    EpisodeStore(path)
    for task, seed in (("stack", 0), ("insert", 0)):
        assert collect_one(str(path), task, 0, seed, "seen", "panda", ("front",), 48)["success"]
    return path


@pytest.fixture(scope="module")
def baseline_ckpt(store, tmp_path_factory) -> tuple[Path, dict]:
    from keystone_vla.policies.train_baseline import train_baseline

    out = tmp_path_factory.mktemp("bc") / "cnn-bc"
    info = train_baseline(store, out, steps=60, batch_size=32, lr=3e-3, workers=0, augment=False, progress=False)
    return out, info


@pytest.fixture(scope="module")
def vla_ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("vla") / "tiny", steps=2)


def obs(size: int, seed: int = 0, opening: float | None = None) -> Observation:
    """A random observation; `opening` sets the gripper opening (the state's last entry, 1 = open)."""
    rng = np.random.default_rng(seed)
    state = rng.normal(size=8).astype(np.float32)
    if opening is not None:
        state[-1] = opening
    return Observation(images={"front": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)},
                       state=state, ee_pose=np.zeros(7, np.float32))


# ------------------------------------------------------------------------------------------ oracle, registry
def test_oracle_refuses_to_act_unbound() -> None:
    with pytest.raises(ConfigError, match="not bound"):
        OraclePolicy().act(obs(16))


def test_registry_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown policy 'nope'"):
        resolve_policy_name("nope")
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_policy_name(str(tmp_path))
    assert resolve_policy_name("oracle") == ("oracle", None)


# ------------------------------------------------------------------------------------------ baseline
def test_baseline_trains_and_round_trips(baseline_ckpt) -> None:
    folder, info = baseline_ckpt
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "normalization.json", "train_info.json"]
    assert json.loads((folder / "config.json").read_text())["model_type"] == "keystone-cnn-bc"
    assert info["loss_last_50"] < info["loss_first"]  # it learns the two demonstrations
    assert resolve_policy_name(str(folder))[0] == "baseline"
    a = load_policy(str(folder))
    b = BaselinePolicy.from_pretrained(folder)
    assert isinstance(a, BaselinePolicy) and a.image_size == 48
    o = obs(48)
    a.set_task("stack")
    b.set_task("stack")
    np.testing.assert_array_equal(a._predict(o).actions, b._predict(o).actions)
    a.set_task("insert")
    assert not np.array_equal(a._predict(o).actions, b._predict(o).actions)  # the task one-hot matters
    with pytest.raises(ModelError, match="not 'fly'"):
        a.set_task("fly")


def test_baseline_needs_its_task_and_a_matching_camera(baseline_ckpt) -> None:
    policy = BaselinePolicy.from_pretrained(baseline_ckpt[0])
    with pytest.raises(ConfigError, match="needs its task"):
        policy.act(obs(48))
    policy.set_task("stack")
    with pytest.raises(ModelError, match="48x48"):
        policy.act(obs(32))
    a = policy.act(obs(48))
    assert a.shape == (7,) and a.dtype == np.float32 and 0.0 <= a[6] <= 1.0


def test_baseline_config_rejects_unknown_keys(baseline_ckpt, tmp_path) -> None:
    cfg = json.loads((baseline_ckpt[0] / "config.json").read_text())
    cfg["chunk_sise"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="chunk_sise"):
        BaselineConfig.load(tmp_path)


def test_baseline_runs_in_the_harness(baseline_ckpt, tmp_path) -> None:
    policy = load_policy(str(baseline_ckpt[0]))
    cfg = EvalConfig(policy=str(baseline_ckpt[0]), tasks=("stack",), splits=("seen",), episodes=1, workers=1,
                     max_steps=12, videos=False)
    world = make_world(EpisodeSpec("stack", 0), ("front",), 48)
    try:
        r = run_job(EpisodeJob(0, "stack", "seen", 0), policy, world, ("front",), cfg, None, 48)
    finally:
        world.close()
    assert r.steps == 12 and not r.refused and r.policy_plan is None and r.plan_exact is None
    assert len(r.latency_ms) == 12 and r.stalls == 0


# ------------------------------------------------------------------------------------------ VLA agent
def test_vla_agent_refuses_a_plan_that_does_not_ground(vla_ckpt) -> None:
    agent = VLAAgent.from_pretrained(vla_ckpt)
    size = agent.image_size
    far = [DetectedObject("red_block", "red", "block", (1.5, 0.0, 0.02)),
           DetectedObject("blue_bowl", "blue", "bowl", (1.6, 0.2, 0.02))]
    from keystone_vla.robots import get_robot

    with pytest.raises(GroundingError, match="outside the panda arm's workspace"):
        agent.prepare("put the red block in the blue bowl", obs(size), far, get_robot("panda"))
    with pytest.raises(GroundingError, match="no objects"):
        agent.prepare("put the red block in the blue bowl", obs(size), [])
    with pytest.raises(ConfigError, match="no plan"):
        VLAAgent.from_pretrained(vla_ckpt).act(obs(size))


def test_vla_agent_advances_steps_and_flushes_the_queue(vla_ckpt) -> None:
    agent = VLAAgent.from_pretrained(vla_ckpt, n_action_steps=4, check_patience=1)
    size = agent.image_size
    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    done: set[str] = set()
    plan = agent.prepare("put the red block in the blue bowl", obs(size), scene, step_check=lambda s: s.call in done)
    assert plan.steps and all(set(s.args) <= {"red_block", "blue_bowl"} for s in plan.steps)
    # drive a known two-step plan (what the untrained tiny model plans is not the point here)
    plan = agent.plan = Plan(plan.instruction, (PlanStep.parse("pick(red_block)", "pick up the red block"),
                                                PlanStep.parse("place_in(red_block, blue_bowl)", "put it in the bowl")))
    agent.reset()
    a = agent.act(obs(size))
    assert a.shape == (7,) and agent.plan_step == 0 and agent.runtime.stats.chunks_requested == 1
    agent.act(obs(size))
    assert agent.plan_step == 0 and agent.runtime.stats.chunks_requested == 1
    done.add("pick(red_block)")  # the step's success check fires: next step, fresh chunk
    agent.act(obs(size))
    assert agent.plan_step == 1 and agent.runtime.stats.chunks_requested == 2
    assert agent.runtime.queued == 3  # 4 per chunk, one executed: the old step's actions were flushed
    agent.act(obs(size))
    assert agent.plan_step == 1  # the last step is kept until the episode ends
    # the chunk predictor is conditioned on the current step's text
    # ... and on the step's objects, located when the step began (here: their scene poses)
    np.testing.assert_allclose(agent._step_objects[:3], [0.5, 0.0, 0.02])  # place_in: first object, the block
    np.testing.assert_allclose(agent._step_objects[7:10], [0.5, 0.2, 0.02])  # ... and last, the bowl
    expect = agent.vla.predict_chunk(obs(size, 1), plan.steps[agent.plan_step].text, agent._step_objects).actions
    np.testing.assert_allclose(agent._predict(obs(size, 1)).actions, expect, rtol=1e-6, atol=1e-7)


def test_vla_agent_ends_a_step_only_when_model_and_check_agree(vla_ckpt) -> None:
    # done_threshold ~0: the model calls every chunk done; the check decides whether that ends the step
    agent = VLAAgent.from_pretrained(vla_ckpt, n_action_steps=2, done_threshold=1e-9, check_patience=1000)
    size = agent.image_size
    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    holds = {"pick(red_block)": False}
    located: list[str] = []

    def locate(step: PlanStep) -> np.ndarray:
        located.append(step.call)
        return np.zeros(14, np.float32)

    agent.prepare("put the red block in the blue bowl", obs(size), scene,
                  step_check=lambda s: holds.get(s.call, False), locate=locate)
    agent.plan = Plan("x", (PlanStep.parse("pick(red_block)", "pick up the red block"),
                            PlanStep.parse("place_in(red_block, blue_bowl)", "put it in the bowl")))
    agent.reset()
    chunk = agent.vla.config.chunk_size
    for _ in range(2 * chunk + 2):  # the model says done, the grasp check fails: same step, objects located again
        agent.act(obs(size))
    assert agent.plan_step == 0 and agent.retries >= 2 and located.count("pick(red_block)") >= 3
    holds["pick(red_block)"] = True
    for _ in range(chunk + 1):  # the step ends once the chunk that called it done has run out
        agent.act(obs(size))
    assert agent.plan_step == 1 and located[-1] == "place_in(red_block, blue_bowl)"
    with pytest.raises(ConfigError, match="check_patience"):
        VLAAgent(agent.vla, check_patience=0)


def test_vla_agent_regrasps_a_part_released_short_of_its_target(vla_ckpt) -> None:
    # the done head never fires; the checks alone move the plan (check_patience=1)
    agent = VLAAgent.from_pretrained(vla_ckpt, n_action_steps=2, done_threshold=1 - 1e-9, check_patience=1,
                                     regrasp_patience=3, max_regrasps=1)
    size = agent.image_size
    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    holds = {"pick(red_block)": True, "place_in(red_block, blue_bowl)": False}
    agent.prepare("put the red block in the blue bowl", obs(size), scene, step_check=lambda s: holds[s.call],
                  locate=lambda step: np.zeros(14, np.float32))
    agent.plan = Plan("x", (PlanStep.parse("pick(red_block)", "pick up the red block"),
                            PlanStep.parse("place_in(red_block, blue_bowl)", "put it in the bowl")))
    agent.reset()

    agent.act(obs(size, opening=0.5))  # lifted: the pick's check holds, on to the put-down
    assert agent.plan_step == 1
    holds["pick(red_block)"] = False  # the part is down, beside the bowl
    for _ in range(5):  # ... but still in the closed hand (opening 0.5): the put-down goes on
        agent.act(obs(size, opening=0.5))
    assert agent.plan_step == 1 and agent.regrasps == 0
    for _ in range(2):  # released (open hand), not yet for regrasp_patience ticks
        agent.act(obs(size, opening=1.0))
    assert agent.plan_step == 1
    agent.act(obs(size, opening=1.0))  # third tick: back to the pick, with a fresh queue
    assert agent.plan_step == 0 and agent.regrasps == 1 and agent.runtime.stats.chunks_requested >= 2
    holds["pick(red_block)"] = True  # picked again
    agent.act(obs(size, opening=0.5))
    assert agent.plan_step == 1
    holds["pick(red_block)"] = False  # short again: max_regrasps=1 is spent, so the put-down stays current
    for _ in range(6):
        agent.act(obs(size, opening=1.0))
    assert agent.plan_step == 1 and agent.regrasps == 1
    holds.update({"pick(red_block)": True, "place_in(red_block, blue_bowl)": True})
    agent.reset()
    agent.act(obs(size, opening=0.5))
    holds["pick(red_block)"] = False  # a part that landed in place is never regrasped
    for _ in range(6):
        agent.act(obs(size, opening=1.0))
    assert agent.plan_step == 1 and agent.regrasps == 0
    with pytest.raises(ConfigError, match="regrasp_patience"):
        VLAAgent(agent.vla, regrasp_patience=0)
    with pytest.raises(ConfigError, match="max_regrasps"):
        VLAAgent(agent.vla, max_regrasps=-1)


@pytest.mark.parametrize("require_release", [True, False])
def test_vla_agent_ends_a_put_down_by_patience_only_once_the_hand_opens(vla_ckpt, require_release) -> None:
    agent = VLAAgent.from_pretrained(vla_ckpt, n_action_steps=2, done_threshold=1 - 1e-9, check_patience=2,
                                     require_release=require_release)
    size = agent.image_size
    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("green_block", "green", "block", (0.5, -0.1, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    agent.prepare("put the red block in the blue bowl", obs(size), scene, step_check=lambda s: True,
                  locate=lambda step: np.zeros(14, np.float32))
    agent.plan = Plan("x", tuple(PlanStep.parse(c, c) for c in (
        "pick(red_block)", "place_in(red_block, blue_bowl)", "pick(green_block)", "place_in(green_block, blue_bowl)")))
    agent.reset()

    for _ in range(2):  # a pick ends by patience with the part in the (closed) hand
        agent.act(obs(size, opening=0.5))
    assert agent.plan_step == 1
    for _ in range(2):  # the part is in the bowl but still gripped
        agent.act(obs(size, opening=0.5))
    assert agent.plan_step == (1 if require_release else 2)
    if require_release:
        for _ in range(4):  # however long it stays gripped
            agent.act(obs(size, opening=0.5))
        assert agent.plan_step == 1
        for _ in range(2):  # let go: now the put-down is over
            agent.act(obs(size, opening=1.0))
        assert agent.plan_step == 2


def test_vla_agent_locates_a_held_part_again_only_while_it_is_held(vla_ckpt) -> None:
    """relocate_every: during a put-down the step's objects are located again every N ticks while the hand holds
    the part (opening between empty-closed and empty-open), never during a pick or after the release."""
    agent = VLAAgent.from_pretrained(vla_ckpt, n_action_steps=2, done_threshold=1 - 1e-9, check_patience=1,
                                     relocate_every=3, align_radius=0.0)  # alignment locates every tick on its own
    assert agent.vla.config.object_token  # the fixture's model takes the object token, so steps are located
    size = agent.image_size
    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    located: list[str] = []

    def locate(step: PlanStep) -> np.ndarray:
        located.append(step.call)
        return np.zeros(14, np.float32)

    holds = {"pick(red_block)": False}
    agent.prepare("put the red block in the blue bowl", obs(size), scene, step_check=lambda s: holds.get(s.call, False),
                  locate=locate)
    agent.plan = Plan("x", (PlanStep.parse("pick(red_block)", "pick up the red block"),
                            PlanStep.parse("place_in(red_block, blue_bowl)", "put it in the bowl")))
    agent.reset()
    for _ in range(7):  # a pick is located once, however long it runs
        agent.act(obs(size, opening=0.5))
    assert located == ["pick(red_block)"]
    holds["pick(red_block)"] = True
    agent.act(obs(size, opening=0.5))  # lifted: the put-down begins and is located
    assert agent.plan_step == 1 and located.count("place_in(red_block, blue_bowl)") == 1
    for _ in range(6):  # held: located again at ticks 3 and 6 of the step
        agent.act(obs(size, opening=0.5))
    assert located.count("place_in(red_block, blue_bowl)") == 3
    for _ in range(6):  # released: the last pose stands
        agent.act(obs(size, opening=1.0))
    assert located.count("place_in(red_block, blue_bowl)") == 3
    with pytest.raises(ConfigError, match="relocate_every"):
        VLAAgent(agent.vla, relocate_every=-1)


def test_vla_agent_release_interlock_holds_an_open_command_off_target(vla_ckpt) -> None:
    agent = VLAAgent.from_pretrained(vla_ckpt, release_radius=0.008)
    size = agent.image_size
    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    part_at = {"xy": (0.5, 0.19)}

    def locate(step: PlanStep) -> np.ndarray:
        return np.array([*part_at["xy"], 0.05, 0, 0, 0, 0, 0.5, 0.2, 0.02, 0, 0, 0, 0], np.float32)

    agent.prepare("put the red block in the blue bowl", obs(size), scene, locate=locate)
    agent.plan = Plan("x", (PlanStep.parse("pick(red_block)", "pick up the red block"),
                            PlanStep.parse("place_in(red_block, blue_bowl)", "put it in the bowl")))
    agent.reset()
    opening = np.zeros(7, np.float32)  # gripper 0 = open
    assert not agent._release_too_early(opening, obs(size, opening=0.5))  # a pick may always open
    agent.plan_step = 1
    assert agent._release_too_early(opening, obs(size, opening=0.5))  # 10 mm off the target: held back
    assert not agent._release_too_early(opening, obs(size, opening=1.0))  # nothing held: nothing to hold back
    assert not agent._release_too_early(np.ones(7, np.float32), obs(size, opening=0.5))  # a close command passes
    part_at["xy"] = (0.5, 0.195)
    assert not agent._release_too_early(opening, obs(size, opening=0.5))  # 5 mm: within the radius
    with pytest.raises(ConfigError, match="release_radius"):
        VLAAgent(agent.vla, release_radius=-0.01)


def test_vla_agent_final_alignment_is_bounded_and_holds_the_release(vla_ckpt) -> None:
    """align_radius: within the capture radius of its target a held part's x/y and yaw residuals are corrected by a
    bounded step, an open command waits for the part to be aligned, and nothing changes outside a held put-down."""
    from keystone_vla.policies.vla_agent import ALIGN_MAX_STEP, ALIGN_MAX_YAW, ALIGN_RELEASE_TOL

    agent = VLAAgent.from_pretrained(vla_ckpt, align_radius=0.05)
    size = agent.image_size
    scene = [DetectedObject("peg", "red", "peg", (0.5, 0.0, 0.02)), DetectedObject("hole", "grey", "hole", (0.5, 0.2, 0.02))]
    part = {"xy": (0.5, 0.18), "yaw": 0.0, "size": (0.02, 0.02, 0.06)}

    def locate(step: PlanStep) -> np.ndarray:
        return np.array([*part["xy"], 0.06, part["yaw"], *part["size"], 0.5, 0.2, 0.02, 0.3, 0.05, 0.05, 0.04],
                        np.float32)

    agent.prepare("insert the peg into the hole", obs(size), scene, locate=locate)
    agent.plan = Plan("x", (PlanStep.parse("pick(peg)", "pick up the peg"),
                            PlanStep.parse("insert(peg, hole)", "insert it into the hole")))
    agent.reset()
    release = np.zeros(7, np.float32)  # no motion, gripper 0 = open
    held = obs(size, opening=0.5)
    assert np.array_equal(agent._align(release, held), release)  # a pick with the hand closing: not corrected
    over = Observation(images=held.images, state=obs(size, opening=1.0).state,
                       ee_pose=np.array([0.5, 0.17, 0.1, 1, 0, 0, 0], np.float32))  # open hand, yaw 0, 10 mm short
    part["yaw"] = 0.3 + np.pi  # a half turn is the same grasp for the two-finger hand
    out = agent._align(np.ones(7, np.float32), over)
    assert out[1] == pytest.approx(1 + ALIGN_MAX_STEP) and out[5] == pytest.approx(1 + ALIGN_MAX_YAW)
    assert out[-1] == 1.0  # a pick's close command is the model's
    part["yaw"] = 0.0
    agent.plan_step = 1
    out = agent._align(release, held)  # 20 mm short in +y: a bounded step toward the hole, release held
    assert out[1] == pytest.approx(ALIGN_MAX_STEP) and out[0] == pytest.approx(0.0, abs=1e-7)
    assert out[5] == pytest.approx(min(0.5 * 0.3, ALIGN_MAX_YAW)) and out[-1] == 1.0
    assert agent.held_releases == 1 and agent.aligned_ticks == 2  # the pick above, this put-down
    part["yaw"] = 0.3 + np.pi / 2  # a square peg a quarter turn round is aligned: no yaw correction
    assert agent._align(release, held)[5] == pytest.approx(0.0, abs=1e-6)
    agent.plan = Plan("x", (PlanStep.parse("pick(red_ell)", "pick up the red ell"),
                            PlanStep.parse("place_in(red_ell, ell_slot)", "put it in the ell slot")))
    assert abs(agent._align(release, held)[5]) == pytest.approx(ALIGN_MAX_YAW)  # an ell has no symmetry
    agent.plan = Plan("x", (PlanStep.parse("pick(red_disc)", "pick up the red disc"),
                            PlanStep.parse("place_in(red_disc, disc_slot)", "put it in the disc slot")))
    assert agent._align(release, held)[5] == 0.0  # a disc is round: never turned
    part["xy"] = (0.5, 0.2 - ALIGN_RELEASE_TOL / 2)  # aligned: the open command passes, the residual is small
    out = agent._align(release, held)
    assert out[-1] == 0.0 and abs(out[1]) < ALIGN_RELEASE_TOL
    assert np.array_equal(agent._align(release, obs(size, opening=1.0)), release)  # nothing held
    part["xy"] = (0.5, 0.1)  # 10 cm away: outside the capture radius, the model alone
    assert np.array_equal(agent._align(release, held), release)
    part["xy"] = (0.5, 0.195)  # 5 mm off: held back at the default tolerance, released within a given release_radius
    assert agent._align(release, held)[-1] == 1.0
    agent.release_radius = 0.008
    assert agent._align(release, held)[-1] == 0.0
    agent.release_radius = 0.0
    agent.prepare("insert the peg into the hole", obs(size), scene)  # no live locate: the scene as planned only
    agent.plan, agent.plan_step = Plan("x", (PlanStep.parse("pick(peg)", "pick up the peg"),
                                             PlanStep.parse("insert(peg, hole)", "insert it"))), 1
    assert np.array_equal(agent._align(release, held), release)
    with pytest.raises(ConfigError, match="align_radius"):
        VLAAgent(agent.vla, align_radius=-0.01)


def test_vla_agent_binary_gripper_thresholds_only_the_gripper(vla_ckpt) -> None:
    """binary_gripper: the same model and observations give the same motion, with the gripper command snapped to
    0 or 1 at 0.5 (demonstrations only command those two)."""
    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    raw, snapped = (VLAAgent.from_pretrained(vla_ckpt, binary_gripper=b) for b in (False, True))
    size = raw.image_size
    for agent in (raw, snapped):
        agent.prepare("put the red block in the blue bowl", obs(size), scene)
    for k in range(4):
        o = obs(size, opening=0.3 + 0.2 * k)
        a, b = raw.act(o), snapped.act(o)
        np.testing.assert_array_equal(a[:6], b[:6])
        assert b[-1] == (1.0 if a[-1] >= 0.5 else 0.0)


def test_vla_agent_still_hand_release_runs_a_predicted_open_once_the_part_is_set_down(vla_ckpt) -> None:
    """still_release: a model that keeps predicting its release a few actions ahead (here the 5th of 8, with 2 run
    per chunk) lets go once the hand stops with the part set down over its target, and the hand stays open for the
    rest of the step; not while the hand moves, not hovering above the target, not off target, never with the rule
    off."""
    from keystone_vla.types import ActionChunk

    agent = VLAAgent.from_pretrained(vla_ckpt, n_action_steps=2, done_threshold=1 - 1e-9, check_patience=10**6)
    size = agent.image_size
    scene = [DetectedObject("peg", "red", "peg", (0.5, 0.0, 0.04)), DetectedObject("hole", "grey", "hole", (0.5, 0.2, 0.0))]
    part = {"xy": (0.5, 0.2), "z": 0.044}  # the peg in the hole: bottom 4 mm above the floor

    def locate(step: PlanStep) -> np.ndarray:
        return np.array([*part["xy"], part["z"], 0, 0.024, 0.024, 0.08, 0.5, 0.2, 0.0, 0, 0.12, 0.12, 0.04], np.float32)

    grip = {"open_at": 4}

    def predict_chunk(observation, text, objects=None) -> ActionChunk:  # a scripted model: no motion, release ahead
        actions = np.zeros((8, 7), np.float32)
        actions[: grip["open_at"], -1] = 1.0
        return ActionChunk(actions, step_done=0.0)

    agent.vla.predict_chunk = predict_chunk
    agent.prepare("insert the peg into the hole", obs(size), scene, step_check=lambda s: s.skill == "pick",
                  locate=locate)
    agent.plan = Plan("x", (PlanStep.parse("pick(peg)", "pick up the peg"),
                            PlanStep.parse("insert(peg, hole)", "insert it into the hole")))

    def run(ticks: int, move: float = 0.0) -> list[float]:
        """Gripper commands of `ticks` ticks of the put-down, the end effector moving `move` metres per tick."""
        out = []
        for k in range(ticks):
            o = obs(size, opening=0.5)  # the part in the hand
            o = Observation(images=o.images, state=o.state,
                            ee_pose=np.array([0.5, 0.2 + move * k, 0.1, 1, 0, 0, 0], np.float32))
            out.append(float(agent.act(o)[-1]))
        return out

    def restart() -> None:
        agent.reset()
        agent.plan_step = 1

    restart()
    assert run(6, move=0.01) == [1.0] * 6  # the hand moves: the release stays ahead, never run
    restart()
    assert run(6) == [1.0] + [0.0] * 5  # still from the second tick: the open runs and holds (the model says closed)
    assert agent.still_releases == 1  # fired once
    agent._go_to(1)  # the step begins again (a regrasp): the rule may fire again, the hand still since before
    assert run(2) == [0.0, 0.0] and agent.still_releases == 2
    restart()
    part["z"] = 0.044 + 0.04 + 0.015  # the peg's bottom 1.5 cm above the fixture: hovering, not set down
    assert run(4) == [1.0] * 4
    part["z"], part["xy"] = 0.044, (0.5, 0.19)  # 10 mm off the hole: the servo's interlock holds it
    restart()
    assert 0.0 not in run(4)
    part["xy"], grip["open_at"] = (0.5, 0.2), 8  # no open anywhere in the chunk: nothing to run early
    restart()
    assert run(4) == [1.0] * 4 and agent.still_releases == 0
    grip["open_at"] = 4
    agent.still_release = 0.0  # off
    restart()
    assert run(4) == [1.0] * 4
    with pytest.raises(ConfigError, match="still_release"):
        VLAAgent(agent.vla, still_release=-0.001)


def test_vla_agent_in_the_harness_reports_its_plan(vla_ckpt) -> None:
    torch.manual_seed(0)
    policy = load_policy(str(vla_ckpt))
    cfg = EvalConfig(policy=str(vla_ckpt), tasks=("pick_place",), splits=("seen",), episodes=1, workers=1,
                     max_steps=10, videos=False)
    cams = policy.cameras
    world = make_world(EpisodeSpec("pick_place", 0), cams, policy.image_size)
    try:
        r = run_job(EpisodeJob(0, "pick_place", "seen", 0), policy, world, cams, cfg, None, policy.image_size)
    finally:
        world.close()
    assert not r.refused and r.steps == 10 and r.policy_plan
    assert (r.plan_exact, r.plan_same_steps) == plan_agreement(r.policy_plan, r.plan)
    assert r.stalls == 0 and len(r.latency_ms) == 10


def test_plan_agreement_separates_order_from_content() -> None:
    kit = ["pick(red_bar)", "place_in(red_bar, bar_slot)", "pick(blue_disc)", "place_in(blue_disc, disc_slot)"]
    reordered = kit[2:] + kit[:2]
    assert plan_agreement(kit, kit) == (True, True)
    assert plan_agreement(reordered, kit) == (False, True)  # kit_assembly fixes no order
    assert plan_agreement(kit[:2], kit) == (False, False)
    assert plan_agreement(["pick(red_bar)", "place_in(red_bar, disc_slot)"] + kit[2:], kit) == (False, False)


class RefusingPolicy:
    """A policy whose planner refuses every episode (the harness must report it refused and never run it)."""

    def __init__(self) -> None:
        self.acted = 0

    def bind(self, world, instance) -> None:
        raise GroundingError(f"no purple block is on the table ({instance.task})")

    def reset(self) -> None:
        pass

    def act(self, observation):
        self.acted += 1
        return np.zeros(7, np.float32)


def test_policy_refusal_is_reported_and_not_run() -> None:
    policy = RefusingPolicy()
    cfg = EvalConfig(policy="oracle", tasks=("stack",), splits=("seen",), episodes=1, workers=1, videos=False)
    world = make_world(EpisodeSpec("stack", 0), (), 128)
    try:
        r = run_job(EpisodeJob(0, "stack", "seen", 0), policy, world, (), cfg, None)
    finally:
        world.close()
    assert r.refused and r.reason == "no purple block is on the table (stack)"
    assert policy.acted == 0 and r.steps == 0 and not r.success
    assert r.plan == ["pick(blue_block)", "place_on(blue_block, yellow_block)"]


def _pairs(*pairs: tuple[str, str, str]) -> Plan:
    steps = []
    for part, skill, target in pairs:
        steps += [PlanStep("pick", (part,), f"pick up the {part}"), PlanStep(skill, (part, target), f"put {part}")]
    return Plan("assemble the kit", tuple(steps))


def test_independent_put_downs_run_largest_y_first_and_dependent_ones_keep_their_order() -> None:
    from keystone_vla.policies.vla_agent import order_independent_pairs

    objs = {i: DetectedObject(i, None, "bar", np.array([0.5, y, 0.02])) for i, y in
            (("red_bar", -0.1), ("blue_disc", 0.2), ("green_ell", 0.05), ("a_slot", 0), ("b_slot", 0), ("c_slot", 0))}
    kit = _pairs(("red_bar", "place_in", "a_slot"), ("blue_disc", "place_in", "b_slot"),
                 ("green_ell", "place_in", "c_slot"))
    out = order_independent_pairs(kit, objs)
    assert [s.args[0] for s in out.steps[::2]] == ["blue_disc", "green_ell", "red_bar"]
    assert sorted(out.steps, key=str) == sorted(kit.steps, key=str) and out.instruction == kit.instruction
    for i in range(0, 6, 2):  # every pick still directly precedes its own put-down
        assert out.steps[i].skill == "pick" and out.steps[i + 1].args[0] == out.steps[i].args[0]
    # a tower (each block goes onto the previous one), a shared target, a target that is a part, a missing pose
    tower = _pairs(("blue_disc", "place_on", "red_bar"), ("green_ell", "place_on", "blue_disc"))
    shared = _pairs(("red_bar", "place_in", "a_slot"), ("blue_disc", "place_in", "a_slot"))
    chained = _pairs(("red_bar", "place_in", "a_slot"), ("blue_disc", "place_in", "red_bar"))
    unknown = _pairs(("red_bar", "place_in", "a_slot"), ("white_tee", "place_in", "b_slot"))
    for plan in (tower, shared, chained, unknown, _pairs(("red_bar", "place_in", "a_slot"))):
        assert order_independent_pairs(plan, objs) is plan
