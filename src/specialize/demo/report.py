"""The demo's report: one HTML page (ladder, retention, curves, answers, provenance) and the
terminal summary."""

from __future__ import annotations

import json
from pathlib import Path

from specialize.artifacts import (
    DatasetManifest,
    LadderRecord,
    RetentionReport,
    RunRecord,
    atomic_write_text,
)
from specialize.ladder.report import decision_lines, ladder_section, ladder_table, verdict
from specialize.simulate.report import format_rate
from specialize.track.html import page, paragraph, section, table
from specialize.track.report import curve_images, retention_section
from specialize.track.rundir import open_run_dir


def write_report(summary: dict, baseline: dict, final: dict) -> Path:
    """Write report.html in the demo folder; return its path."""
    out = Path(summary["out"])
    run = Path(summary["run"])
    record = RunRecord.read(run / "run.json")
    retention = RetentionReport.read_if_present(run / "retention.json")
    manifest = DatasetManifest.read(Path(summary["data"]) / "manifest.json")
    html = page(
        "specialize demo: Nordvik Bank support",
        _steps(summary, retention),
        _data(summary, manifest),
        ladder_section(final),
        _verdicts(baseline, final),
        retention_section(retention),
        _simulation(summary),
        _training(run, record),
        _provenance(summary, final, run),
        subtitle=(
            f"model {summary['model']['ref']} ({summary['model']['content_hash'][:12]})"
            + (
                " - QUICK MODE: few items and steps, the numbers mean little"
                if summary["quick"]
                else ""
            )
        ),
    )
    path = out / "report.html"
    atomic_write_text(path, html)
    return path


def step_rows(summary: dict, retention: RetentionReport | None) -> list[list]:
    """Steps with their time; training and the retention suite are shown apart."""
    rows = []
    for step in summary["steps"]:
        rows.append(
            [step["name"], round(step["seconds"], 1), "re-used" if step["reused"] else "ran"]
        )
    if retention:
        rows.append(
            ["  of which the retention suite (core, base and tuned)", retention.seconds, ""]
        )
    return rows


def _steps(summary: dict, retention: RetentionReport | None) -> str:
    rows = step_rows(summary, retention)
    total = sum(s["seconds"] for s in summary["steps"])
    return section(
        "Steps and time",
        table(["step", "seconds (when it ran)", "this time"], rows),
        paragraph(
            f"Total {total / 60:.1f} minutes of step time; re-used steps cost nothing on a re-run."
        ),
    )


def _data(summary: dict, manifest: DatasetManifest) -> str:
    counts = manifest.counts
    rows = [[k, v] for k, v in counts.items() if not isinstance(v, dict)]
    hashes = [
        [name, info.get("sha256", "")[:16], info.get("rows", "")]
        for name, info in manifest.outputs.items()
    ]
    return section(
        "Data",
        table(["count", "value"], rows),
        table(["file", "sha256 (16)", "rows"], hashes),
        paragraph(f"Data report: {Path(summary['data']) / 'report.html'}", "muted"),
    )


def _verdicts(baseline: dict, final: dict) -> str:
    rows = []
    for name, task in final["tasks"].items():
        before = baseline["tasks"][name]["decision"]
        rows.append(
            [
                name,
                verdict(before),
                verdict(task["decision"]),
                task["decision"]["reason"],
            ]
        )
    return section(
        "What the ladder says",
        table(
            ["task", "recommended before tuning", "recommended with the tuned rungs", "why"], rows
        ),
    )


def simulation_rows(simulation: dict) -> tuple[list[list], list[list]]:
    """(per contestant: pass rates with n and Wilson CI; per pair: McNemar on shared scenarios)."""
    rates = [
        [
            name,
            format_rate(info["pass_rate"]),
            format_rate(info["adversarial_pass_rate"]),
            len(info["errored"]) + len(info["overflow"]),
        ]
        for name, info in simulation["contestants"].items()
    ]
    pairs = [
        [
            f"{p['second']} vs {p['first']}",
            f"{p['delta']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]",
            p["n"],
            f"{p['only_first_passed']} / {p['only_second_passed']}",
            f"{p['p_value']:.3g}",
            "significant" if p["significant"] else "not significant",
        ]
        for p in simulation["paired"]
    ]
    return rates, pairs


RATE_HEADERS = ["contestant", "pass rate (95% CI, n)", "adversarial", "errored / overflow"]
PAIR_HEADERS = [
    "comparison",
    "difference in pass rate (95% CI)",
    "n scenarios",
    "only first / only second passed",
    "p (McNemar exact)",
    "verdict",
]


def _simulation(summary: dict) -> str:
    if not summary.get("simulation"):
        return ""
    path = Path(summary["simulation"])
    simulation = json.loads(path.read_text(encoding="utf-8"))
    rates, pairs = simulation_rows(simulation)
    return section(
        "Simulation",
        paragraph(
            f"{simulation['n_scenarios']} scripted scenarios of {simulation['scenario_file']} "
            "(half of them adversarial), the same user turns for every contestant. A conversation "
            "passes when every one of its checks passes."
        ),
        table(RATE_HEADERS, rates),
        table(PAIR_HEADERS, pairs) if pairs else paragraph("fewer than two contestants", "muted"),
        paragraph(f"Transcripts side by side: {path.parent / 'simulation.html'}", "muted"),
    )


def _training(run: Path, record: RunRecord) -> str:
    outcome = record.outcome
    chosen = "; ".join(f"{k}: {v}" for k, v in record.chosen.items() if k != "probe")
    return section(
        "Training",
        *curve_images(open_run_dir(run)),
        paragraph(
            f"Stopped: {outcome.get('stop_reason', '?')}. Chosen: {chosen}. "
            f"Run time {record.duration_s or 0:.0f} s, retention included. "
            f"The run's own report: {run / 'report.html'}"
        ),
    )


def _provenance(summary: dict, final: dict, run: Path) -> str:
    files = [
        ["data manifest", str(Path(summary["data"]) / "manifest.json")],
        ["ladder before tuning", summary["baseline_ladder"]],
        ["ladder after tuning", summary["ladder"]],
        *[
            [f"rung {r}", info["eval_file"]]
            for r, info in next(iter(final["tasks"].values()))["rungs"].items()
        ],
        ["run record", str(run / "run.json")],
        ["resolved recipe", str(run / "config.yaml")],
        ["training curves", str(run / "metrics.jsonl")],
        ["retention", str(run / "retention.json")],
        ["environment", str(run / "env.json")],
        ["step ledger", str(Path(summary["out"]) / "steps.json")],
    ]
    if summary.get("simulation"):
        simulation = Path(summary["simulation"])
        files += [
            ["simulation", str(simulation)],
            ["simulation transcripts", str(simulation.parent / "transcripts.jsonl")],
        ]
    return section("Where every number came from", table(["what", "file"], files))


def print_summary(summary: dict, console) -> None:
    """Print the steps, the final ladder and retention to the terminal."""
    from rich.table import Table

    retention = RetentionReport.read_if_present(Path(summary["run"]) / "retention.json")
    steps = Table(title="Steps")
    for column in ("step", "seconds", "this time"):
        steps.add_column(column)
    for row in step_rows(summary, retention):
        steps.add_row(*[str(c) for c in row])
    console.print(steps)
    final = LadderRecord.read(summary["ladder"]).to_dict()
    console.print(ladder_table(final))
    for line in decision_lines(final):
        console.print(line)
    if retention:
        console.print(f"retention (core): {retention.verdict}")
    if summary.get("simulation"):
        rates, pairs = simulation_rows(json.loads(Path(summary["simulation"]).read_text()))
        simulated = Table(title="Simulation")
        for column in RATE_HEADERS:
            simulated.add_column(column)
        for row in rates:
            simulated.add_row(*[str(c) for c in row])
        console.print(simulated)
        for pair in pairs:
            console.print(f"  {pair[0]}: {pair[1]}, n={pair[2]}, p={pair[4]} ({pair[5]})")
    console.print(f"report: {summary['report']}")
