"""`keystone demo` end to end in the simulator: sample instruction, typed instruction, refusals, spoken command."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import pytest
from broken_policy import BrokenPolicy

from keystone_vla.cli import main
from keystone_vla.policies.demo import SAMPLE_INSTRUCTION, candidate_tasks, check_plan_agrees, run_demo
from keystone_vla.policies.registry import shipped_checkpoint
from keystone_vla.types import Plan, PlanStep

KEYS = {"instruction", "status", "success", "refused", "reason", "plan", "video"}


def last_json(capsys) -> dict:
    captured = capsys.readouterr()
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_sample_instruction_runs_with_the_oracle_fallback(tmp_path, capsys, monkeypatch) -> None:
    """Where the package carries no keystone-base (e.g. a slimmed install), the demo says so and runs the oracle."""
    import keystone_vla.policies.registry as registry

    monkeypatch.setattr(registry, "shipped_checkpoint", lambda name=registry.SHIPPED: None)
    video = tmp_path / "demo.mp4"
    assert main(["demo", "--video", str(video), "--json"]) == 0
    out, err = last_json(capsys)
    assert KEYS <= set(out)
    assert out["instruction"] == SAMPLE_INSTRUCTION
    assert out["status"] == "succeeded" and out["success"] is True and out["refused"] is False
    assert out["plan"] == ["pick(blue_block)", "place_in(blue_block, yellow_bowl)"]
    assert "keystone-base checkpoint is not installed" in err and out["policy"] == "oracle"
    assert "1. pick(blue_block)" in err  # the plan is shown before the motion
    frames = imageio.mimread(video)
    assert len(frames) == out["steps"]


@pytest.mark.skipif(shipped_checkpoint() is None, reason="keystone-base is not installed")
def test_sample_instruction_runs_on_the_shipped_checkpoint(tmp_path, capsys) -> None:
    """The main job: no argument -> the shipped VLA plans the sample instruction and drives the arm in sim."""
    video = tmp_path / "demo.mp4"
    assert main(["demo", "--video", str(video), "--json"]) == 0
    out, err = last_json(capsys)
    assert out["policy"] == "keystone-base" and "not installed" not in err and out["agent"] == "shipped"
    assert out["instruction"] == SAMPLE_INSTRUCTION and out["refused"] is False
    assert out["plan"] == ["pick(blue_block)", "place_in(blue_block, yellow_bowl)"]  # planned by the VLA's plan head
    assert out["status"] in ("succeeded", "failed") and out["steps"] > 10
    assert len(imageio.mimread(video)) == out["steps"]


def test_unknown_object_is_refused_with_exit_0(tmp_path, capsys) -> None:
    video = tmp_path / "never.mp4"
    assert main(["demo", "put the red bowl on the peg", "--policy", "oracle", "--video", str(video), "--json"]) == 0
    out, _ = last_json(capsys)
    assert out["status"] == "refused" and out["refused"] is True and out["success"] is False
    assert "no red bowl is on the table" in out["reason"]
    assert out["video"] is None and not video.exists() and out["plan"] == []


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_instruction_is_refused_and_moves_nothing(tmp_path, capsys, text) -> None:
    """Only a missing argument runs the sample instruction; empty text (e.g. from speech that heard nothing) is refused."""
    video = tmp_path / "never.mp4"
    assert main(["demo", text, "--policy", "oracle", "--video", str(video), "--json"]) == 0
    out, _ = last_json(capsys)
    assert out["status"] == "refused" and "empty" in out["reason"] and out["plan"] == []
    assert not video.exists()


def test_agent_options_are_checked_before_any_work(tmp_path, capsys) -> None:
    video = tmp_path / "never.mp4"
    assert main(["demo", "put the red block in the green bowl", "--agent", "shiped", "--video", str(video)]) == 2
    assert "unknown agent preset 'shiped' (did you mean 'shipped'?)" in capsys.readouterr().err
    assert main(["demo", "x", "--policy", "oracle", "--agent", "raw", "--video", str(video)]) == 2
    assert "--policy oracle is not one" in capsys.readouterr().err
    assert not video.exists()


def test_unknown_word_is_refused(tmp_path, capsys) -> None:
    assert main(["demo", "put the florp in the bowl", "--policy", "oracle", "--json"]) == 0
    out, _ = last_json(capsys)
    assert out["status"] == "refused" and "florp" in out["reason"]


def test_broken_policy_fails_and_still_writes_the_video(tmp_path) -> None:
    result = run_demo("insert the peg into the hole", BrokenPolicy(), tmp_path / "fail.mp4", progress=False)
    assert result.status == "failed" and result.task == "insert" and result.reason
    assert Path(result.video).is_file() and len(imageio.mimread(result.video)) == result.steps


class _WrongPlanner(BrokenPolicy):
    """A policy whose own plan disagrees with the instruction (what an unseen phrasing did to the plan head)."""

    def bind(self, world, instance) -> None:
        wrong = [s for s in instance.plan.steps if s.skill == "pick"]
        self.plan = Plan(instance.instruction, tuple(wrong))
        self.acted = 0

    def act(self, observation):
        self.acted += 1
        return super().act(observation)


def test_a_policy_plan_that_disagrees_with_the_instruction_is_refused_before_motion(tmp_path) -> None:
    policy = _WrongPlanner()
    result = run_demo("place the blue block in the yellow bowl", policy, tmp_path / "never.mp4", progress=False)
    assert result.status == "refused" and policy.acted == 0 and result.video is None
    assert "policy planned pick(blue_block)" in result.reason and "place_in(blue_block, yellow_bowl)" in result.reason
    assert not (tmp_path / "never.mp4").exists()
    steps = (PlanStep.parse("pick(a_block)"), PlanStep.parse("place_in(a_block, b_bowl)"))
    check_plan_agrees(Plan("x", steps[::-1]), Plan("x", steps))  # another order is accepted


def test_candidate_tasks_follow_the_instruction() -> None:
    assert candidate_tasks("insert the peg into the hole")[0] == "insert"
    assert candidate_tasks("assemble the kit")[0] == "kit_assembly"
    assert candidate_tasks("put the red block in the green bowl")[0] == "pick_place"
    order = candidate_tasks("stack the red block on the blue block")
    assert order[:2] == ["stack", "build_tower"] and len(order) == 5


@pytest.mark.slow
def test_spoken_instruction(tmp_path, capsys) -> None:
    from keystone_vla.perception.speech_synth import add_noise, require_tools, synthesize

    try:
        require_tools()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(str(exc))
    clean = synthesize("insert the peg into the hole", "en-us", tmp_path / "clean.wav")
    wav = tmp_path / "cmd.wav"
    add_noise(clean, 30.0, wav)
    assert main(["demo", "--wav", str(wav), "--policy", "oracle", "--video", str(tmp_path / "v.mp4"), "--json"]) == 0
    out, _ = last_json(capsys)
    assert out["instruction"] == "insert the peg into the hole"
    assert out["status"] == "succeeded"


def test_a_tower_order_runs_in_a_scene_that_holds_its_blocks_judged_by_that_order() -> None:
    from keystone_vla.policies.episode import find_scene
    from keystone_vla.sim.rollout import EpisodeSpec, make_world
    from keystone_vla.sim.tasks import get_task

    text = "build a tower: red at the bottom, then blue, then green"
    assert candidate_tasks(text)[0] == "build_tower"  # 'tower:' with its colon still names the task
    task = get_task("build_tower")
    world = make_world(EpisodeSpec("build_tower", 0, "seen", "panda"), (), 64)
    try:
        # scene 0 holds all four blocks, but its own goal is another order: the goal is the order asked for
        assert set(task.reset(world, 0, "seen").instruction.split()) != set(text.split())
        hit = find_scene(world, task, 0, "seen", text, variants=4)
        assert not isinstance(hit, str), hit
        scene, goal = hit
        assert scene == 0 and goal is not None and goal.calls() == [
            "pick(blue_block)", "place_on(blue_block, red_block)", "pick(green_block)",
            "place_on(green_block, blue_block)"]
        # a colour the split lacks: refused with the reason, after the scenes tried
        miss = find_scene(world, task, 0, "seen", "build a tower: purple at the bottom, then blue, then red",
                          variants=3)
        assert isinstance(miss, str) and "no purple block" in miss and "3 build_tower scenes" in miss
        # an instruction that names no object is the task's goal as stated, in the first scene
        assert find_scene(world, get_task("kit_assembly"), 0, "seen", "assemble the kit", variants=4) == (0, None)
    finally:
        world.close()
