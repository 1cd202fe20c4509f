"""simulation.json (pass rates with n and Wilson 95% CIs, paired McNemar comparisons, judge
agreement), simulation.html (table, plot, transcripts side by side), and the registry entry."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

from specialize.artifacts import (
    SimulationRecord,
    atomic_write_text,
    sha256_file,
)
from specialize.evaluate.stats import agreement, paired_difference, wilson
from specialize.simulate.config import TURN_CHECKS, Scenario, SimulationConfig
from specialize.simulate.run import TRANSCRIPTS, conversation_fingerprint
from specialize.track import html
from specialize.track.plots import intervals_png

SIMULATION_SCHEMA_VERSION = SimulationRecord.schema_version
JUDGE_KINDS = ("judge", "reward")


def current_transcripts(
    config: SimulationConfig, out: Path, scenarios: list[Scenario], hashes: dict
) -> list[dict]:
    """The latest transcript of each conversation this config asks for (older inputs' are skipped)."""
    wanted = {}
    for contestant in config.contestants:
        for scenario in scenarios:
            if scenario.contestants is None or contestant.name in scenario.contestants:
                key = f"{contestant.name}/{scenario.name}"
                wanted[key] = conversation_fingerprint(config, contestant, scenario, hashes)
    latest: dict[str, dict] = {}
    path = out / TRANSCRIPTS
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if wanted.get(row.get("key")) == row.get("fingerprint"):
            latest[row["key"]] = row
    return [latest[k] for k in wanted if k in latest]


def summarise(config: SimulationConfig, rows: list[dict]) -> dict:
    names = [c.name for c in config.contestants]
    by_contestant = {n: [r for r in rows if r["contestant"] == n] for n in names}
    contestants = {n: _contestant_summary(by_contestant[n]) for n in names}
    checks: dict[str, dict] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        for result in row["checks"]:
            checks.setdefault(result["check"], {}).setdefault(row["contestant"], []).append(
                float(bool(result["passed"]))
            )
    scenarios: dict[str, dict] = {}
    for row in rows:
        scenarios.setdefault(
            row["scenario"], {"adversarial": row["adversarial"], "contestants": {}}
        )
        scenarios[row["scenario"]]["contestants"][row["contestant"]] = {
            "status": row["status"],
            "passed": row["passed"],
            "reason": row["reason"] or _first_failure(row),
        }
    return {
        "contestants": contestants,
        "checks": {
            label: {n: _rate(v) for n, v in per.items()} for label, per in sorted(checks.items())
        },
        "scenarios": scenarios,
        "paired": _paired(names, by_contestant),
        "judges": judge_report(rows),
    }


def _contestant_summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    adversarial = [r for r in ok if r["adversarial"]]
    return {
        "pass_rate": _rate([float(r["passed"]) for r in ok]),
        "adversarial_pass_rate": _rate([float(r["passed"]) for r in adversarial]),
        "conversations": len(rows),
        "ok": len(ok),
        "errored": [
            {"scenario": r["scenario"], "reason": r["reason"]}
            for r in rows
            if r["status"] == "errored"
        ],
        "overflow": [
            {"scenario": r["scenario"], "reason": r["reason"]}
            for r in rows
            if r["status"] == "overflow"
        ],
        "seconds_per_conversation": (
            round(sum(r["seconds"] for r in rows) / len(rows), 2) if rows else None
        ),
    }


def _rate(values: list[float]) -> dict:
    return wilson(sum(values), len(values)).as_dict()


def _first_failure(row: dict) -> str:
    failed = next((c for c in row["checks"] if not c["passed"]), None)
    return f"{failed['check']}: {failed['reason']}" if failed else ""


def _paired(names: list[str], by_contestant: dict[str, list[dict]]) -> list[dict]:
    """McNemar's exact test on the scenarios both contestants finished."""
    comparisons = []
    for a, b in itertools.combinations(names, 2):
        first = {r["scenario"]: r for r in by_contestant[a] if r["status"] == "ok"}
        second = {r["scenario"]: r for r in by_contestant[b] if r["status"] == "ok"}
        shared = sorted(set(first) & set(second))
        if not shared:
            continue
        before = [float(first[s]["passed"]) for s in shared]
        after = [float(second[s]["passed"]) for s in shared]
        result = paired_difference(before, after).as_dict()
        result.update(
            first=a,
            second=b,
            only_first_passed=sum(1 for x, y in zip(before, after, strict=True) if x > y),
            only_second_passed=sum(1 for x, y in zip(before, after, strict=True) if y > x),
        )
        comparisons.append(result)
    return comparisons


def judge_report(rows: list[dict]) -> dict:
    """Judge failures, and how often each judge agrees with the rule checks.

    Per turn (the main measure): on every assistant turn with both a judge's verdict (on the
    conversation so far) and at least one rule check, the judge's pass against "every rule check of
    this turn passed". Per conversation: the judge's final verdict against all rule checks."""
    failures = []
    per_turn: dict[str, tuple[list[bool], list[bool]]] = {}
    per_conversation: dict[str, tuple[list[bool], list[bool]]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        rules = [c for c in row["checks"] if c["kind"] not in JUDGE_KINDS]
        for check in row["checks"]:
            if check["kind"] not in JUDGE_KINDS:
                continue
            if check.get("judge_failed"):
                failures.append(
                    {"key": row["key"], "reason": check["reason"], "raw": check.get("raw")}
                )
            elif rules:
                judged, ruled = per_conversation.setdefault(check["kind"], ([], []))
                judged.append(bool(check["passed"]))
                ruled.append(all(c["passed"] for c in rules))
        for turn in row["turns"]:
            turn_rules = turn.get("checks") or []
            for verdict in turn.get("judges") or []:
                if verdict.get("judge_failed") or not turn_rules:
                    continue
                judged, ruled = per_turn.setdefault(verdict["kind"], ([], []))
                judged.append(bool(verdict["passed"]))
                ruled.append(all(c["passed"] for c in turn_rules))
    return {
        "failed": failures,
        "agreement_with_rules": {k: agreement(*v).as_dict() for k, v in per_turn.items()},
        "agreement_with_rules_per_conversation": {
            k: agreement(*v).as_dict() for k, v in per_conversation.items()
        },
        "agreement_rule": "per turn: the judge's verdict on the conversation up to that turn "
        "against every rule check of that turn passing; Cohen's kappa (None when undefined: "
        "one verdict throughout) with a bootstrap 95% CI, raw agreement with a Wilson 95% CI",
    }


def write_reports(
    config: SimulationConfig,
    out: Path,
    scenarios: list[Scenario],
    scenario_file: str | Path | None,
    hashes: dict,
) -> dict:
    """Write simulation.json and simulation.html from the transcripts; register the simulation."""
    rows = current_transcripts(config, out, scenarios, hashes)
    file_hash = sha256_file(scenario_file) if scenario_file else None
    report = {
        "schema_version": SIMULATION_SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scenario_file": str(scenario_file) if scenario_file else None,
        "scenario_file_sha256": file_hash,
        "model": config.model,
        "weights": hashes,
        "seed": config.seed,
        "contestants": [c.model_dump(mode="json", exclude_none=True) for c in config.contestants],
        "n_scenarios": len(scenarios),
        "transcripts": str(out / TRANSCRIPTS),
        "rule": "a conversation passes when every one of its checks passes; errored and overflow "
        "conversations are counted apart, never as passes or failures; pass rates carry Wilson 95% "
        "intervals; contestants are compared on the scenarios both finished (McNemar's exact test)",
        **summarise(config, rows),
    }
    SimulationRecord.from_dict(report).write(out / "simulation.json")
    atomic_write_text(out / "simulation.html", simulation_page(report, rows))
    _register(report, out)
    return report


def _register(report: dict, out: Path) -> None:
    from specialize.track.registry import record_simulation

    record_simulation(
        {
            "path": str(out.resolve()),
            "scenario_file": report["scenario_file"],
            "scenario_hash": report["scenario_file_sha256"],
            "model": report["model"],
            "created_at": report["created"],
            "summary_json": {
                name: {
                    "pass_rate": info["pass_rate"]["mean"],
                    "n": info["pass_rate"]["n"],
                    "errored": len(info["errored"]),
                }
                for name, info in report["contestants"].items()
            },
        }
    )


def format_rate(rate: dict) -> str:
    """A pass rate as `62% [31%, 86%] n=8`."""
    if not rate["n"]:
        return "n=0"
    low, high = rate["ci95"]
    return f"{rate['mean']:.0%} [{low:.0%}, {high:.0%}] n={rate['n']}"


def simulation_page(report: dict, rows: list[dict]) -> str:
    names = list(report["contestants"])
    overview = html.table(
        ["contestant", "pass rate (95% CI)", "adversarial", "ok", "errored", "overflow", "s/conv"],
        [
            [
                name,
                format_rate(info["pass_rate"]),
                format_rate(info["adversarial_pass_rate"]),
                info["ok"],
                len(info["errored"]),
                len(info["overflow"]),
                info["seconds_per_conversation"],
            ]
            for name, info in report["contestants"].items()
        ],
    )
    groups = {
        "all": {
            n: _triple(i["pass_rate"])
            for n, i in report["contestants"].items()
            if i["pass_rate"]["n"]
        },
        "adversarial": {
            n: _triple(i["adversarial_pass_rate"])
            for n, i in report["contestants"].items()
            if i["adversarial_pass_rate"]["n"]
        },
    }
    groups = {k: v for k, v in groups.items() if v}
    plot = (
        html.image(
            intervals_png(
                groups, title="Scenario pass rate", xlabel="share of conversations passed"
            ),
            "pass rates",
        )
        if groups
        else html.paragraph("no finished conversations to plot", "muted")
    )
    checks = html.table(
        ["check", *names],
        [
            [label, *(format_rate(per[n]) if n in per else "" for n in names)]
            for label, per in report["checks"].items()
        ],
    )
    paired = html.table(
        [
            "first",
            "second",
            "delta (second - first)",
            "95% CI",
            "p (McNemar)",
            "n",
            "only first",
            "only second",
        ],
        [
            [
                p["first"],
                p["second"],
                p["delta"],
                f"[{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]",
                p["p_value"],
                p["n"],
                p["only_first_passed"],
                p["only_second_passed"],
            ]
            for p in report["paired"]
        ],
    )
    problems = [
        [name, status, item["scenario"], item["reason"]]
        for name, info in report["contestants"].items()
        for status in ("errored", "overflow")
        for item in info[status]
    ] + [
        ["judge", "judge failed", f["key"], f"{f['reason']}; raw: {f['raw']!r}"]
        for f in report["judges"]["failed"]
    ]
    sections = [
        html.section("Contestants", overview, plot),
        html.section("Checks", checks),
        html.section(
            "Paired comparisons",
            paired if report["paired"] else html.paragraph("fewer than two contestants", "muted"),
        ),
    ]
    if report["judges"]["agreement_with_rules"]:
        sections.append(_agreement_section(report["judges"]))
    if problems:
        sections.append(
            html.section(
                "Errored, overflowing and judge-failed",
                html.table(["contestant", "status", "scenario", "reason"], problems),
            )
        )
    sections.append(html.section("Transcripts", _side_by_side(names, rows)))
    return _with_style(
        html.page(
            "Simulation",
            *sections,
            subtitle=f"{report['n_scenarios']} scenarios, model {report['model']}, seed {report['seed']}, "
            f"scenario file sha256 {report['scenario_file_sha256']}",
        )
    )


def _agreement_section(judges: dict) -> str:
    rows = []
    for scope, key in (
        ("per turn", "agreement_with_rules"),
        ("per conversation", "agreement_with_rules_per_conversation"),
    ):
        for kind, found in judges[key].items():
            kappa = found["kappa"]
            interval = found["kappa_ci95"]
            rows.append(
                [
                    kind,
                    scope,
                    found["n"],
                    format_rate(found["agreement"]),
                    "undefined (one verdict throughout)"
                    if kappa is None
                    else f"{kappa:.2f}"
                    + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""),
                    "{both_pass} / {both_fail} / {only_first_pass} / {only_second_pass}".format(
                        **found["counts"]
                    ),
                ]
            )
    return html.section(
        "Judges against the rule checks",
        html.table(
            [
                "judge",
                "where",
                "n",
                "agreement (95% CI)",
                "Cohen's kappa (95% CI)",
                "both pass / both fail / only judge / only rules",
            ],
            rows,
        ),
        html.paragraph(judges["agreement_rule"], "muted"),
    )


def _triple(rate: dict) -> tuple[float, float, float]:
    return (rate["mean"], rate["ci95"][0], rate["ci95"][1])


def _side_by_side(names: list[str], rows: list[dict]) -> str:
    by_key = {(r["scenario"], r["contestant"]): r for r in rows}
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    parts = []
    for scenario in scenarios:
        cells = []
        for name in names:
            row = by_key.get((scenario, name))
            cells.append(f'<td class="conv">{_conversation_html(row) if row else ""}</td>')
        parts.append(f'<tr><th class="scenario">{html.esc(scenario)}</th>{"".join(cells)}</tr>')
    head = "".join(f"<th>{html.esc(n)}</th>" for n in names)
    return f'<table class="transcripts"><thead><tr><th>scenario</th>{head}</tr></thead><tbody>{"".join(parts)}</tbody></table>'


def _conversation_html(row: dict) -> str:
    verdict = {True: ("pass", "good"), False: ("fail", "bad"), None: (row["status"], "bad")}[
        row["passed"]
    ]
    out = [f'<div class="verdict {verdict[1]}">{html.esc(verdict[0])}</div>']
    if row["reason"]:
        out.append(f'<div class="bad">{html.esc(row["reason"])}</div>')
    for turn in row["turns"]:
        user = turn["user"]
        tags = ", ".join(p["kind"] for p in user["perturbations"])
        out.append(
            f'<div class="user"><b>user</b>{" (" + html.esc(tags) + ")" if tags else ""}: {html.esc(user["text"])}</div>'
        )
        for note in turn.get("notes", []):
            out.append(f'<div class="muted">{html.esc(note)}</div>')
        if turn["assistant"] is not None:
            failed = [c for c in turn.get("checks", []) if not c["passed"]]
            css = "assistant failed" if failed else "assistant"
            out.append(f'<div class="{css}"><b>assistant</b>: {html.esc(turn["assistant"])}</div>')
            out += [
                f'<div class="bad">✗ {html.esc(c["check"])}: {html.esc(c["reason"])}</div>'
                for c in failed
            ]
            out += [
                f'<div class="muted">{html.esc(j["check"])} on the conversation so far: '
                f"{'failed to judge' if j.get('judge_failed') else 'pass' if j['passed'] else 'fail'}"
                f" ({html.esc(j['reason'])})</div>"
                for j in turn.get("judges", [])
            ]
    for check in row["checks"]:
        if check["kind"] not in TURN_CHECKS:  # turn checks are shown under their turn
            css = "good" if check["passed"] else "bad"
            mark = "✓" if check["passed"] else "✗"
            out.append(
                f'<div class="{css} check">{mark} {html.esc(check["check"])}: {html.esc(check["reason"])}</div>'
            )
    return "".join(out)


_EXTRA_STYLE = (
    "<style>table.transcripts td.conv{min-width:18rem;font-size:.85rem}.user{background:#eef2fb;"
    "margin:.2rem 0;padding:.2rem}.assistant{background:#f6f7fa;margin:.2rem 0;padding:.2rem}"
    ".assistant.failed{background:#fde8e7;border-left:3px solid #b42318}.verdict{font-weight:bold}"
    "</style>"
)


def _with_style(page: str) -> str:
    return page.replace("</head>", _EXTRA_STYLE + "</head>", 1)
