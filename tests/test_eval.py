"""Evaluation harness on real simulated episodes: oracle, broken policy, user phrasings, reports, compare, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v2 as imageio
import pytest

from keystone_vla.cli import main
from keystone_vla.errors import ConfigError
from keystone_vla.policies.evaluate import EvalConfig, evaluate, make_jobs, read_instructions_file
from keystone_vla.policies.report import compare
from keystone_vla.sim.rollout import run_episode
from keystone_vla.types import EpisodeSpec

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def oracle_report(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("oracle")
    cfg = EvalConfig(policy="oracle", tasks=("stack", "insert"), splits=("seen", "unseen"), episodes=2, workers=2,
                     seed=3, out=out)
    return out, evaluate(cfg, progress=False)


@pytest.fixture(scope="module")
def broken_report(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("broken")
    # in-process: `broken` is registered by the tests (tests/broken_policy.py), not in spawned workers
    cfg = EvalConfig(policy="broken", tasks=("stack", "insert"), splits=("seen", "unseen"), episodes=2, workers=1,
                     seed=3, out=out, max_steps=25)
    return out, evaluate(cfg, progress=False)


def test_oracle_success_matches_the_oracle_rollouts(oracle_report) -> None:
    out, summary = oracle_report
    for ep in summary["episodes_detail"]:
        direct = run_episode(EpisodeSpec(ep["task"], ep["seed"], ep["split"]), record=False)
        assert ep["success"] == direct.success
        assert ep["steps"] == direct.steps
        assert (ep["goal_lost"], ep["goal_first_met_step"]) == (direct.goal_lost, direct.goal_first_met_step)
        assert ep["plan"] == direct.plan.calls()
    expected = sum(e["success"] for e in summary["episodes_detail"]) / 8
    assert summary["success_rate"] == expected
    assert summary["episodes"] == 8 and summary["refused"] == 0
    assert summary["goal_lost"] == sum(e["goal_lost"] for e in summary["episodes_detail"])
    for task in ("stack", "insert"):
        for split in ("seen", "unseen"):
            cell = summary["tasks"][task][split]
            assert cell["episodes"] == 2 and cell["seeds"] == [3, 4]
            assert cell["plan_exact_rate"] == 1.0
    assert summary["latency_ms"]["calls"] == sum(e["steps"] for e in summary["episodes_detail"])


def test_report_files_and_numbers(oracle_report) -> None:
    out, summary = oracle_report
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["success_rate"] == summary["success_rate"]
    assert on_disk["report"] == str(out / "report.md")
    for name in ("report.md", "report.html", "success.png", "latency.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    cell = summary["tasks"]["stack"]["seen"]
    lo, hi = cell["success_ci95"]
    assert (f"| stack | seen | {100 * cell['success_rate']:.1f} % | [{100 * lo:.1f}-{100 * hi:.1f} %] | "
            f"{cell['successes']}/2 | {cell['goal_lost']} | 0 |") in md
    assert f"- **met the goal, then lost it**: {summary['goal_lost']} episode(s)" in md
    for key, rel in summary["videos"].items():
        assert key.endswith("-success")
        assert (out / rel).is_file() and rel in md and rel in (out / "report.html").read_text()


def test_broken_policy_fails_everything_and_writes_failure_videos(broken_report) -> None:
    out, summary = broken_report
    assert summary["success_rate"] == 0.0
    assert all(not e["success"] and e["steps"] == 25 for e in summary["episodes_detail"])
    keys = set(summary["videos"])
    assert keys == {f"{t}-{s}-failure" for t in ("stack", "insert") for s in ("seen", "unseen")}
    for rel in summary["videos"].values():
        frames = imageio.mimread(out / rel)
        assert len(frames) == 25 and frames[0].ndim == 3
    # one video per task x split outcome, the earliest episode's (job order), nothing else left behind
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(Path(v).name for v in summary["videos"].values())
    assert all(Path(v).stem.endswith(("000000", "000002", "000004", "000006")) for v in summary["videos"].values())


def test_compare_reports_on_the_same_seeds(oracle_report, broken_report, capsys) -> None:
    (a_dir, a), (b_dir, b) = oracle_report, broken_report
    d = compare(a, b)
    assert d["success_rate"]["delta"] == pytest.approx(b["success_rate"] - a["success_rate"])
    for row in d["cells"].values():
        assert row["same_seeds"]
        assert row["success_rate_delta"] == pytest.approx(row["b_success_rate"] - row["a_success_rate"])
    assert main(["eval", "compare", str(a_dir), str(b_dir), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["a"] == "oracle" and last["b"] == "broken"
    assert last["success_rate_delta"] == pytest.approx(-a["success_rate"])


def test_compare_writes_a_side_by_side_table(oracle_report, broken_report, tmp_path) -> None:
    (a_dir, a), (b_dir, b) = oracle_report, broken_report
    table = tmp_path / "table.md"
    assert main(["eval", "compare", str(a_dir), str(b_dir), str(a_dir), "--table", str(table)]) == 0
    lines = table.read_text().splitlines()
    assert lines[0] == f"| task / split | {a_dir.name} | {b_dir.name} | {a_dir.name} |"
    task, split = next((t, s) for t, ss in a["tasks"].items() for s in ss)
    row = next(line for line in lines if line.startswith(f"| {task}/{split} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ca, cb = a["tasks"][task][split], b["tasks"][task][split]
    assert cells[1] == cells[3] == (f"{100 * ca['success_rate']:.1f} % [{100 * ca['success_ci95'][0]:.1f}-"
                                    f"{100 * ca['success_ci95'][1]:.1f} %]")
    assert cells[2].startswith(f"{100 * cb['success_rate']:.1f} % [0.0-")


def test_instructions_file_refuses_unknown_objects_without_running(tmp_path) -> None:
    lines = [
        {"task": "stack", "instruction": "stack the purple block on the red block"},  # purple is never a seen colour
        {"task": "stack", "instruction": "stack the red florp on the blue block"},  # unknown word
        {"task": "insert", "instruction": "put the peg in the hole"},
    ]
    path = tmp_path / "phrasings.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    pairs = read_instructions_file(path)
    cfg = EvalConfig(policy="oracle", tasks=("stack", "insert"), splits=("seen",), episodes=1, workers=1, seed=0,
                     out=tmp_path / "rep", instructions=pairs, scene_search=3)
    summary = evaluate(cfg, progress=False)
    eps = summary["episodes_detail"]
    assert [e["line"] for e in eps] == [1, 2, 3]
    purple, florp, peg = eps
    assert purple["refused"] and purple["steps"] == 0 and not purple["success"] and purple["video"] is None
    assert "purple block" in purple["reason"]
    assert florp["refused"] and "florp" in florp["reason"]
    assert not peg["refused"] and peg["success"] and peg["instruction"] == "put the peg in the hole"
    assert summary["tasks"]["stack"]["seen"]["refused"] == 2
    assert summary["tasks"]["stack"]["seen"]["mean_steps"] is None
    # plan exactness: 1 of the 1 episode that ran, 1 of all 3 when a refused episode counts as not exact
    assert summary["plan_exact_rate"] == 1.0 and summary["plan_exact_rate_all"] == pytest.approx(1 / 3)
    assert summary["tasks"]["stack"]["seen"]["plan_exact_rate_all"] is None  # nothing ran: no plan to judge
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Refused episodes" in md and "purple block" in md
    assert "100.0 % of the episodes that ran, 33.3 % of all" in md


def test_instructions_file_errors_name_the_line(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "stack", "instruction": "stack it"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2"):
        read_instructions_file(bad)
    bad.write_text('{"task": "fly", "instruction": "fly away"}\n')
    with pytest.raises(ConfigError, match="unknown task 'fly'"):
        read_instructions_file(bad)


def test_seeds_are_fixed_per_cell() -> None:
    jobs = make_jobs(EvalConfig(policy="oracle", tasks=("stack", "insert"), episodes=3, seed=10))
    assert [(j.task, j.split, j.seed) for j in jobs[:4]] == [
        ("stack", "seen", 10), ("stack", "seen", 11), ("stack", "seen", 12), ("stack", "unseen", 10)]
    assert len(jobs) == 12 and [j.index for j in jobs] == list(range(12))


def test_cli_json_summary_keys(tmp_path, capsys) -> None:
    code = main(["eval", "--policy", "broken", "--tasks", "insert", "--split", "unseen", "--episodes", "1",
                 "--workers", "1", "--max-steps", "5", "--no-videos", "--out", str(tmp_path / "r"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"policy", "success_rate", "tasks", "latency_ms", "report", "plan_exact_rate_all"} <= set(out)
    assert set(out["tasks"]["insert"]["unseen"]) == {"success_rate", "episodes", "mean_steps", "refused"}
    assert out["tasks"]["insert"]["unseen"]["mean_steps"] == 5
    assert set(out["latency_ms"]) == {"p50", "p99"}
    assert Path(out["report"]).is_file()


def test_cli_bad_input_exits_2(capsys) -> None:
    assert main(["eval", "--policy", "no_such_policy", "--episodes", "1"]) == 2
    assert "unknown policy 'no_such_policy'" in capsys.readouterr().err
    assert main(["eval", "--policy", "oracle", "--tasks", "fly"]) == 2
    assert "unknown task 'fly'" in capsys.readouterr().err
    assert main(["eval", "--policy", "keystone-base", "--agent-set", "actions_per_chunk=0"]) == 2
    assert "actions_per_chunk must be >= 1" in capsys.readouterr().err
    assert main(["eval", "--policy", "keystone-base", "--agent-set", "alignment.radios=0.1"]) == 2
    assert "unknown key 'alignment.radios' (did you mean 'radius'?)" in capsys.readouterr().err
    assert main(["eval", "--policy", "oracle", "--agent", "raw"]) == 2  # the oracle has no agent to configure
    assert "--policy oracle is not one" in capsys.readouterr().err


def test_actions_per_chunk_reaches_the_vla_agents_runtime() -> None:
    from keystone_vla.policies.agent_config import AgentConfig
    from keystone_vla.policies.registry import load_policy

    assert load_policy("keystone-base").runtime_config.n_action_steps == 2  # the count its config.json records
    agent = load_policy("keystone-base", AgentConfig(actions_per_chunk=4))
    assert agent.runtime_config.n_action_steps == 4


def test_results_record_the_agent_and_the_actions_per_chunk_that_ran(oracle_report, tmp_path) -> None:
    from keystone_vla.policies.agent_config import get_agent_config

    assert oracle_report[1]["actions_per_chunk"] is None and oracle_report[1]["agent"] is None  # no chunks, no agent
    counts = []
    for sets in ((), ("actions_per_chunk=3",)):  # keystone-base records 2; the agent config overrides it
        out = tmp_path / f"r{len(sets)}"
        code = main(["eval", "--policy", "keystone-base", "--tasks", "pick_place", "--split", "seen", "--episodes",
                     "1", "--workers", "1", "--max-steps", "3", "--no-videos", "--out", str(out),
                     *[a for s in sets for a in ("--agent-set", s)]])
        assert code == 0
        summary = json.loads((out / "results.json").read_text())
        assert summary["episodes_detail"][0]["actions_per_chunk"] == summary["actions_per_chunk"]
        report = (out / "report.md").read_text()
        assert f"**actions per chunk**: {summary['actions_per_chunk']} run per predicted chunk" in report
        counts.append(summary["actions_per_chunk"])
        expected = get_agent_config("shipped").with_overrides(sets) if sets else get_agent_config("shipped")
        assert summary["agent"] == json.loads(json.dumps(expected.to_dict()))  # the full config that ran
        assert report.splitlines()[0].endswith(f"agent {expected.preset}, perception")  # the scene source it ran on
        assert summary["scene"] == "perception" and summary["privileged"] is False
        assert set(summary["episodes_detail"][0]["assists"]) >= {"regrasps", "aligned_ticks", "still_releases"}
    assert counts == [2, 3]
    raw = evaluate(EvalConfig(policy="keystone-base", tasks=("pick_place",), splits=("seen",), episodes=1,
                              workers=1, max_steps=3, videos=False, agent=get_agent_config("raw")), progress=False)
    assert raw["agent"]["preset"] == "raw" and raw["agent"]["assists"] == []
    with pytest.raises(ConfigError, match="not a VLA agent"):
        evaluate(EvalConfig(policy="oracle", tasks=("stack",), episodes=1, agent=get_agent_config("raw")))
    assert raw["episodes_detail"][0]["assists"] == {"regrasps": 0, "retries": 0, "look_ticks": 0}


def test_success_rates_carry_95_percent_wilson_intervals(oracle_report) -> None:
    from keystone_vla.policies.evaluate import wilson_interval

    assert wilson_interval(48, 50) == pytest.approx((0.8654, 0.9890), abs=1e-4)  # the textbook Wilson score values
    assert wilson_interval(50, 50) == pytest.approx((0.9286, 1.0), abs=1e-4)  # not empty at 100 %
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(0, 0) is None
    out, summary = oracle_report
    cell = summary["tasks"]["stack"]["seen"]
    assert tuple(cell["success_ci95"]) == wilson_interval(cell["successes"], cell["episodes"])
    lo, hi = cell["success_ci95"]
    assert f"[{100 * lo:.1f}-{100 * hi:.1f} %]" in (out / "report.md").read_text()


def test_a_privileged_run_says_so_in_results_and_report(tmp_path) -> None:
    """Simulator truth as the agent's scene source is an upper bound: results.json and the report heading say it."""
    from keystone_vla.policies.evaluate import EvalConfig, evaluate

    out = tmp_path / "priv"
    summary = evaluate(EvalConfig(policy="keystone-base", tasks=("stack",), splits=("seen",), episodes=1, workers=1,
                                  max_steps=3, videos=False, out=out, scene="privileged"), progress=False)
    assert summary["scene"] == "privileged" and summary["privileged"] is True
    heading = (out / "report.md").read_text().splitlines()[0]
    assert "PRIVILEGED" in heading and "upper bound" in heading
    assert "simulator truth" in (out / "report.md").read_text()
    with pytest.raises(Exception, match="scene source"):
        EvalConfig(policy="keystone-base", tasks=("stack",), scene="ground_truth")
