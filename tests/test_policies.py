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
from keystone_vla.policies.agent_config import AgentConfig
from keystone_vla.policies.assists.regrasp import RegraspConfig
from keystone_vla.policies.baseline import BaselineConfig, BaselinePolicy
from keystone_vla.policies.evaluate import EpisodeJob, EvalConfig, plan_agreement, run_job
from keystone_vla.policies.oracle import OraclePolicy
from keystone_vla.policies.plan_sequencer import SequencerConfig
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


def agent_config(relocate_every: int = 1, assists: tuple[str, ...] | None = None, **sequencer) -> AgentConfig:
    """The shipped agent with other step hand-over settings (relocation period, assists)."""
    extra = {} if assists is None else {"assists": assists}
    return AgentConfig(sequencer=SequencerConfig(**sequencer), relocate_every=relocate_every, **extra)


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
    agent = VLAAgent.from_pretrained(vla_ckpt, agent_config(check_patience=1), n_action_steps=4)
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
    agent = VLAAgent.from_pretrained(vla_ckpt, agent_config(done_threshold=1e-9, check_patience=1000), n_action_steps=2)
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


def test_vla_agent_regrasps_a_part_released_short_of_its_target(vla_ckpt) -> None:
    # the done head never fires; the checks alone move the plan (check_patience=1)
    config = AgentConfig(sequencer=SequencerConfig(done_threshold=1 - 1e-9, check_patience=1),
                         regrasp=RegraspConfig(max_regrasps=1, patience=3))
    agent = VLAAgent.from_pretrained(vla_ckpt, config, n_action_steps=2)
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


@pytest.mark.parametrize("require_release", [True, False])
def test_vla_agent_ends_a_put_down_by_patience_only_once_the_hand_opens(vla_ckpt, require_release) -> None:
    agent = VLAAgent.from_pretrained(vla_ckpt, agent_config(done_threshold=1 - 1e-9, check_patience=2,
                                                     require_release=require_release), n_action_steps=2)
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
    agent = VLAAgent.from_pretrained(vla_ckpt, agent_config(done_threshold=1 - 1e-9, check_patience=1, relocate_every=3,
                                                     assists=()),  # the servo would locate every tick itself
                                     n_action_steps=2)
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


def test_vla_agent_reads_a_live_scene_once_per_tick(vla_ckpt) -> None:
    """During a held put-down the object token is located again every tick and the assists need the objects too:
    they share one lookup per tick (on a robot, one scene query)."""
    agent = VLAAgent.from_pretrained(vla_ckpt, agent_config(done_threshold=1 - 1e-9, check_patience=10**6),
                                     n_action_steps=2)
    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    calls: list[str] = []

    def locate(step: PlanStep) -> np.ndarray:
        calls.append(step.call)
        return np.array([0.5, 0.19, 0.05, 0, 0.04, 0.04, 0.04, 0.5, 0.2, 0.02, 0, 0.12, 0.12, 0.04], np.float32)

    agent.prepare("put the red block in the blue bowl", obs(agent.image_size), scene, step_check=lambda s: False,
                  locate=locate)
    agent.plan = Plan("x", (PlanStep.parse("pick(red_block)", "pick"),
                            PlanStep.parse("place_in(red_block, blue_bowl)", "put")))
    agent.reset()
    agent.sequencer.go_to(1)
    for k in range(5):  # the part in the hand, 10 mm off its target: relocated and aligned every tick
        agent.act(obs(agent.image_size, k, opening=0.5))
    assert len(calls) == 5 and agent.assist_counts()["aligned_ticks"] == 5


def test_vla_agent_runs_its_assists_in_the_configured_order_and_raw_is_the_model_alone(vla_ckpt) -> None:
    """The order of `AgentConfig.assists` is the order of application; with none, the runtime's action leaves the
    agent unchanged."""
    from keystone_vla.types import ActionChunk

    scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
             DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
    part = np.array([0.5, 0.2, 0.04, 0, 0.04, 0.04, 0.04, 0.5, 0.2, 0.02, 0, 0.12, 0.12, 0.04], np.float32)

    def run(assists: tuple[str, ...]) -> list[float]:
        a = VLAAgent.from_pretrained(vla_ckpt, AgentConfig(assists=assists, sequencer=SequencerConfig(
            done_threshold=1 - 1e-9, check_patience=10**6)), n_action_steps=2)
        a.vla.predict_chunk = lambda o, t, x=None: ActionChunk(  # the model: still, gripper at 0.4, opening later
            np.array([[0, 0, 0, 0, 0, 0, 0.6]] * 4 + [[0, 0, 0, 0, 0, 0, 0.4]] * 4, np.float32), step_done=0.0)
        a.prepare("put the red block in the blue bowl", obs(a.image_size), scene, step_check=lambda s: s.skill == "pick",
                  locate=lambda step: part)
        a.plan = Plan("x", (PlanStep.parse("pick(red_block)", "pick"), PlanStep.parse("place_in(red_block, blue_bowl)",
                                                                                  "put")))
        a.reset()
        a.sequencer.go_to(1)  # the put-down, the part set down on target, the hand still
        still = Observation(images=obs(a.image_size).images, state=obs(a.image_size, opening=0.5).state,
                            ee_pose=np.array([0.5, 0.2, 0.1, 1, 0, 0, 0], np.float32))
        return [round(float(a.act(still)[-1]), 3) for _ in range(3)]

    assert run(()) == [0.6, 0.6, 0.6]  # raw: the model's own gripper command
    assert run(("binary_gripper",)) == [1.0, 1.0, 1.0]
    # the still-hand release fires on the second tick (the hand has stopped), whatever binary_gripper does after it
    assert run(("still_release", "binary_gripper")) == [1.0, 0.0, 0.0]
    assert run(("binary_gripper", "still_release")) == [1.0, 0.0, 0.0]


def test_a_blind_agent_shows_the_model_one_constant_frame(vla_ckpt) -> None:
    """images="blank" (the blind control): the model sees the same grey frame whatever the camera shows; the rest
    of the observation is untouched."""
    from keystone_vla.types import ActionChunk

    seen: list[np.ndarray] = []
    states: list[np.ndarray] = []
    for images in ("camera", "blank"):
        a = VLAAgent.from_pretrained(vla_ckpt, AgentConfig(images=images), n_action_steps=1)
        a.vla.predict_chunk = lambda o, t, x=None: (seen.append(o.images["front"]), states.append(o.state),
                                                   ActionChunk(np.zeros((8, 7), np.float32), 0.0))[-1]
        scene = [DetectedObject("red_block", "red", "block", (0.5, 0.0, 0.02)),
                 DetectedObject("blue_bowl", "blue", "bowl", (0.5, 0.2, 0.02))]
        a.prepare("put the red block in the blue bowl", obs(a.image_size), scene)
        for seed in (1, 2):
            a.act(obs(a.image_size, seed))
    cam1, cam2, blank1, blank2 = seen
    assert not np.array_equal(cam1, cam2)  # the camera agent sees what the camera shows
    assert np.array_equal(blank1, blank2) and blank1.shape == cam1.shape and np.all(blank1 == 128)
    np.testing.assert_array_equal(states[2], obs(a.image_size, 1).state)  # the state still reaches the model


def test_policy_registry_is_one_table() -> None:
    from keystone_vla.policies.registry import POLICIES, register_policy

    assert {"oracle", "broken"} <= set(POLICIES)  # broken: registered by the tests (tests/broken_policy.py)
    with pytest.raises(ConfigError, match="taken"):
        register_policy("oracle")
    assert resolve_policy_name("broken") == ("broken", None)


def test_vla_agent_in_the_harness_reports_its_plan(vla_ckpt) -> None:
    torch.manual_seed(0)
    policy = load_policy(str(vla_ckpt))
    # the tiny model's 32 px camera is too coarse for perception (it would refuse: "sees no objects"); this test
    # is about the plan the harness reports, so the objects come from the privileged source
    cfg = EvalConfig(policy=str(vla_ckpt), tasks=("pick_place",), splits=("seen",), episodes=1, workers=1,
                     max_steps=10, videos=False, scene="privileged")
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
