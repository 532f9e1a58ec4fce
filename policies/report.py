"""Evaluation reports: `report.md` + `report.html` with the results table, a success bar chart, a latency
histogram and rollout videos, from the `results.json` summary the harness writes; and comparisons of reports.

Every number shown comes from `results.json` (the report never recomputes or rounds away what it does not show).
This module must never run episodes.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from keystone_vla.errors import ConfigError


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _count(x: int | None) -> str:
    """A count, or n/a where an older results.json lacks it."""
    return "n/a" if x is None else str(x)


def _ci(cell: dict[str, Any]) -> str:
    """A cell's 95 % Wilson interval as "[lo-hi] %" (computed from its counts when an older results.json lacks it)."""
    from .evaluate import wilson_interval

    ci = cell.get("success_ci95")
    if ci is None and "successes" in cell:
        ci = wilson_interval(int(cell["successes"]), int(cell["episodes"]))
    return "n/a" if ci is None else f"[{100 * ci[0]:.1f}-{100 * ci[1]:.1f} %]"


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Results table: one row per task x split."""
    rows = []
    for task, splits in summary["tasks"].items():
        for split, c in splits.items():
            rows.append([task, split, _pct(c["success_rate"]), _ci(c), f"{c['successes']}/{c['episodes']}",
                         _count(c.get("goal_lost")), str(c["refused"]),
                         _num(c["mean_steps"]), _pct(c["plan_exact_rate"]), _pct(c.get("plan_same_steps_rate")),
                         _num(c["interventions_per_episode"]),
                         "n/a" if c.get("regrasps") is None else str(c["regrasps"]),
                         _num(c["latency_ms"]["p50"], ".2f"), _num(c["latency_ms"]["p99"], ".2f"),
                         _num(c["wall_s"], ".0f")])
    return rows


HEADER = ["task", "split", "success", "95 % interval", "succeeded", "met goal, then lost it", "refused", "mean steps", "plan exact", "plan steps (any order)", "shield interventions / ep",
          "regrasps", "latency p50 (ms)", "latency p99 (ms)", "wall (s)"]


def plot_success(summary: dict[str, Any], path: Path) -> None:
    """Bar chart: success % per task, one bar per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"])
    splits = list(dict.fromkeys(s for t in tasks for s in summary["tasks"][t]))
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(tasks) + 1), 3.2), dpi=100)
    width = 0.8 / max(1, len(splits))
    for k, split in enumerate(splits):
        xs = [i + (k - (len(splits) - 1) / 2) * width for i in range(len(tasks))]
        ys = [100 * summary["tasks"][t][split]["success_rate"] if split in summary["tasks"][t] else 0 for t in tasks]
        bars = ax.bar(xs, ys, width, label=split)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("success (%)")
    ax.set_title(f"{summary['policy']}: success by task and split", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(summary: dict[str, Any], path: Path) -> None:
    """Histogram of policy act() latency (log-spaced bins from results.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = summary["latency_ms"]["histogram"]
    bins, counts = hist["bins_ms"], hist["counts"]
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    labels = [f"{bins[i]:g}-{bins[i + 1]:g}" for i in range(len(counts))]
    ax.bar(range(len(counts)), counts)
    ax.set_xticks(range(len(counts)), labels, rotation=60, fontsize=7)
    ax.set_xlabel("policy latency per act() (ms)")
    ax.set_ylabel("calls")
    ax.set_yscale("symlog")
    p50, p99 = summary["latency_ms"]["p50"], summary["latency_ms"]["p99"]
    ax.set_title(f"latency p50 {_num(p50, '.2f')} ms, p99 {_num(p99, '.2f')} ms", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report_title(summary: dict[str, Any]) -> str:
    """'keystone-base, agent shipped, perception' (+ 'PRIVILEGED: simulator truth, an upper bound')."""
    agent = summary.get("agent")
    title = summary["policy"] + (f", agent {agent['preset']}" if agent else "")
    if summary.get("privileged"):
        return title + ", PRIVILEGED (simulator truth at run time: an upper bound, not a robot's view)"
    scene = summary.get("scene")
    return title + (f", {scene}" if scene else "")


def _header_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    cfg = summary["config"]
    scene = summary.get("scene")
    lines = [
        ("policy", summary["policy"]),
        ("scene source", "simulator truth (privileged: an upper bound)" if summary.get("privileged") else
         f"{scene}: the cameras' RGB-D frames through the stack's perception" if scene == "perception" else
         str(scene)),
        ("success (all episodes)", _pct(summary["success_rate"])),
        ("episodes", f"{summary['episodes']} ({summary['refused']} refused, of which "
                     f"{summary.get('asked_back', 0)} asked back)"),
        ("wrong plans executed", f"{summary.get('wrong_plans_executed', 0)} (a plan other than the intended one ran: "
                                 "worse than a refusal)"),
        ("met the goal, then lost it", f"{_count(summary.get('goal_lost'))} episode(s): the goal held with the hand "
                                       "open at some tick, but never for 1 s with the hand clear and the parts at rest"),
        ("plan exactness", f"{_pct(summary['plan_exact_rate'])} of the episodes that ran, "
                           f"{_pct(summary.get('plan_exact_rate_all'))} of all (a refused episode counts as not exact)"),
        ("latency", f"p50 {_num(summary['latency_ms']['p50'], '.2f')} ms, p99 {_num(summary['latency_ms']['p99'], '.2f')} ms"),
        ("seeds", f"{summary['seeds']['rule']} (base {summary['seeds']['base']})"),
        ("arm / image size", f"{cfg['arm']} / {cfg['image_size']} px"),
        ("wall time", f"{summary['wall_s']:.0f} s with {cfg['workers']} worker(s)"),
    ]
    agent = summary.get("agent")
    if agent:
        assists = ", ".join(agent["assists"]) or "none: the model's actions only"
        lines.insert(1, ("agent", f"{agent['preset']} (assists, in order: {assists}; the full config is in "
                                  "results.json)"))
    if summary.get("actions_per_chunk") is not None:
        chosen = agent is not None and agent.get("actions_per_chunk") is not None
        source = "set in the agent config" if chosen else "the checkpoint's count"
        lines.append(("actions per chunk", f"{summary['actions_per_chunk']} run per predicted chunk ({source})"))
    if cfg["instructions"]:
        lines.append(("instructions", f"{len(cfg['instructions'])} user phrasing(s) from --instructions-file"))
    return lines


def _refusals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in summary["episodes_detail"] if e["refused"]]


def write_report(out: Path, summary: dict[str, Any]) -> None:
    """Write success.png, latency.png, report.md and report.html into `out` (videos are already in out/videos)."""
    out = Path(out)
    plot_success(summary, out / "success.png")
    plot_latency(summary, out / "latency.png")
    rows = table_rows(summary)
    md = [f"# Evaluation report: {report_title(summary)}", ""]
    md += [f"- **{k}**: {v}" for k, v in _header_lines(summary)]
    md += ["", "## Results", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", "![success by task and split](success.png)", "", "![latency histogram](latency.png)", ""]
    refusals = _refusals(summary)
    if refusals:
        md += ["## Refused episodes (not run)", ""]
        md += [f"- {e['task']} / {e['split']} seed {e['seed']}: {e['instruction']!r} -> {e['reason']}"
               for e in refusals[:50]]
        md.append("")
    md += ["## Rollouts", ""]
    if summary["videos"]:
        md += [f"- {key}: [{path}]({path})" for key, path in summary["videos"].items()]
    else:
        md.append("No videos (run with videos enabled).")
    md += ["", "Every number above is in `results.json` (per-episode records under `episodes_detail`).", ""]
    (out / "report.md").write_text("\n".join(md))

    esc = html.escape
    h = ["<!doctype html><html><head><meta charset='utf-8'>",
         f"<title>Evaluation report: {esc(report_title(summary))}</title>",
         "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}video{margin:4px}</style></head><body>",
         f"<h1>Evaluation report: {esc(report_title(summary))}</h1><ul>"]
    h += [f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in _header_lines(summary)]
    h += ["</ul><h2>Results</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in HEADER) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
    h += ["</table>", "<p><img src='success.png' alt='success by task and split'> "
          "<img src='latency.png' alt='latency histogram'></p>"]
    if refusals:
        h.append("<h2>Refused episodes (not run)</h2><ul>")
        h += [f"<li>{esc(e['task'])} / {esc(e['split'])} seed {e['seed']}: {esc(repr(e['instruction']))} &rarr; "
              f"{esc(e['reason'])}</li>" for e in refusals[:50]]
        h.append("</ul>")
    h.append("<h2>Rollouts</h2>")
    for key, path in summary["videos"].items():
        h.append(f"<figure style='display:inline-block'><video src='{esc(path)}' controls loop muted width='256'>"
                 f"</video><figcaption>{esc(key)}</figcaption></figure>")
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h))


# ------------------------------------------------------------------------------------------------ compare
def load_results(path: str | Path) -> dict[str, Any]:
    """results.json of a report folder (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise ConfigError(f"{path}: no results.json; give a folder written by `keystone eval --out`")
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise ConfigError(f"{p} is not valid JSON ({exc})") from exc


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Deltas b - a: overall success, per task x split success / mean steps, latency p50/p99."""
    cells: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys([*a["tasks"], *b["tasks"]]):
        for split in dict.fromkeys([*a["tasks"].get(task, {}), *b["tasks"].get(task, {})]):
            ca, cb = a["tasks"].get(task, {}).get(split), b["tasks"].get(task, {}).get(split)
            row: dict[str, Any] = {
                "a_success_rate": ca["success_rate"] if ca else None,
                "b_success_rate": cb["success_rate"] if cb else None,
            }
            row["success_rate_delta"] = (cb["success_rate"] - ca["success_rate"]) if ca and cb else None
            steps = (ca or {}).get("mean_steps"), (cb or {}).get("mean_steps")
            row["mean_steps_delta"] = (steps[1] - steps[0]) if None not in steps else None
            row["same_seeds"] = bool(ca and cb and ca.get("seeds") == cb.get("seeds"))
            cells[f"{task}/{split}"] = row
    lat = {}
    for q in ("p50", "p99"):
        va, vb = a["latency_ms"].get(q), b["latency_ms"].get(q)
        lat[q] = {"a": va, "b": vb, "delta": (vb - va) if va is not None and vb is not None else None}
    return {
        "a": a["policy"], "b": b["policy"],
        "success_rate": {"a": a["success_rate"], "b": b["success_rate"], "delta": b["success_rate"] - a["success_rate"]},
        "cells": cells,
        "latency_ms": lat,
    }


def comparison_table(results: list[dict[str, Any]], names: list[str] | None = None) -> str:
    """Markdown table, one success column per report, side by side (for multi-policy reports)."""
    names = names or [r["policy"] for r in results]
    keys = list(dict.fromkeys(f"{t}/{s}" for r in results for t, ss in r["tasks"].items() for s in ss))
    lines = ["| task / split | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        task, split = key.split("/")
        cells = [r["tasks"].get(task, {}).get(split) for r in results]
        vals = [f"{_pct(c['success_rate'])} {_ci(c)}" if c else "n/a" for c in cells]
        lines.append(f"| {key} | " + " | ".join(vals) + " |")
    lines.append("| **all** | " + " | ".join(_pct(r["success_rate"]) for r in results) + " |")
    lines.append("| latency p50 (ms) | " + " | ".join(_num(r["latency_ms"]["p50"], ".2f") for r in results) + " |")
    lines.append("| plan exact (episodes run) | " + " | ".join(_pct(r.get("plan_exact_rate")) for r in results) + " |")
    lines.append("| plan exact (all; refused = not) | " + " | ".join(_pct(r.get("plan_exact_rate_all")) for r in results)
                 + " |")
    return "\n".join(lines)
