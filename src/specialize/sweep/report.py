"""sweep.html: the recommendation, the Pareto front as a plot, parameter importances, every trial."""

from __future__ import annotations

import json
from pathlib import Path

from specialize.artifacts import atomic_write_text
from specialize.track.html import image, page, paragraph, pre, section, table
from specialize.track.plots import bars_png, front_png


def write_sweep_page(results: dict, path: Path) -> Path:
    """Write the sweep's self-contained page; return its path."""
    counts = ", ".join(f"{n} {state}" for state, n in results["counts"].items())
    html = page(
        f"Sweep {results['name']}",
        section("Recommendation", _recommendation(results)),
        section("Pareto front: task gain against general ability lost", _front(results)),
        section("Parameter importances", _importances(results)),
        section("Trials", _trials(results)),
        section("Objectives", pre(json.dumps(results["objectives"], indent=2))),
        subtitle=f"{len(results['trials'])} trial(s): {counts}; sampler {results['sampler']}; "
        f"retention budget {results['retention_budget']}",
    )
    atomic_write_text(path, html)
    return path


def _recommendation(results: dict) -> str:
    rec = results["recommendation"]
    if rec["trial"] is None:
        return paragraph(rec["why"], "bad")
    adapter = rec.get("adapter") or {}
    return paragraph(f"Trial {rec['trial']}: {rec['why']}.", "good") + table(
        ["run", "run directory", "adapter", "adapter path", "parameters"],
        [
            [
                rec["run_id"],
                rec["run_dir"],
                adapter.get("name"),
                adapter.get("path"),
                ", ".join(f"{k}={v}" for k, v in rec["params"].items()),
            ]
        ],
    )


def _front(results: dict) -> str:
    measured = [t for t in results["trials"] if t["state"] == "complete" and t.get("task")]
    if not measured:
        return paragraph("No trial completed yet.", "muted")
    if any(t.get("general") is None for t in measured):
        return paragraph(
            "Only the task score is an objective here; the best trial is the front.", "muted"
        )
    points = {
        f"t{t['number']}": (
            t["general"]["value"],
            t["task"]["gain_points"],
            tuple(t["general"]["ci95"]),
            tuple(t["task"]["gain_ci95_points"]),
        )
        for t in measured
    }
    unit = measured[0]["general"]["unit"]
    png = front_png(
        points,
        [f"t{n}" for n in results["front"]],
        title="Task gain against general ability lost (95% CIs)",
        xlabel=f"general ability: {unit}",
        ylabel="task gain over the base (points)",
        limit=results["retention_budget"],
    )
    return image(png, "Pareto front") + paragraph(
        f"Front: trials {', '.join(str(n) for n in results['front'])} "
        "(no other trial has both more task gain and less general ability lost)."
    )


def _importances(results: dict) -> str:
    found = results["importances"]
    if "note" in found:
        return paragraph(found["note"], "muted")
    parts = []
    for name, values in found.items():
        if not isinstance(values, dict):
            continue
        if "note" in values:
            parts.append(paragraph(f"{name}: {values['note']}", "muted"))
            continue
        parts.append(
            image(
                bars_png(list(values), list(values.values()), title=name, xlabel="importance"),
                f"importances for {name}",
            )
        )
    note = (
        f"Optuna's {found.get('evaluator')} over {found.get('completed_trials')} completed trials."
    )
    return paragraph(note, "muted") + "".join(parts)


def _trials(results: dict) -> str:
    names = sorted({k for t in results["trials"] for k in t["params"]})
    headers = ["trial", "state", *names, "task score [95% CI]", "n", "gain (pts) [95% CI]"]
    headers += ["general [95% CI]", "run", "reason"]
    rows = []
    for t in results["trials"]:
        task, general = t.get("task") or {}, t.get("general") or {}
        score = task.get("score") or {}
        rows.append(
            [
                t["number"],
                t["state"] + (" (front)" if t["number"] in results["front"] else ""),
                *[t["params"].get(n) for n in names],
                _interval(score.get("mean"), score.get("ci95"), "{:.3f}"),
                score.get("n"),
                _interval(task.get("gain_points"), task.get("gain_ci95_points"), "{:+.1f}"),
                _interval(general.get("value"), general.get("ci95"), "{:.3f}"),
                t.get("run_id"),
                t.get("reason"),
            ]
        )
    return table(headers, rows)


def _interval(value, ci, fmt: str) -> str:
    if value is None:
        return ""
    text = fmt.format(value)
    return f"{text} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else text
