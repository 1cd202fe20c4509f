"""The ladder in HTML (a section any report can embed, or a page of its own) and in the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from specialize.track.html import esc, image, page, paragraph, section, table
from specialize.track.plots import intervals_png


def ladder_section(report: dict, *, answers: int = 3) -> str:
    """Return the ladder's HTML: the table with CIs per task, the decision, and sample answers."""
    parts = [paragraph(f"Rule: {report['rule']}.", "muted"), _plot(report)]
    for rung, check in (report.get("prompt_format") or {}).items():
        if check.get("skewed"):
            parts.append(paragraph(f"{rung}: {check['warning']}", "bad"))
    for name, task in report["tasks"].items():
        parts.append(f"<h3>{esc(name)} ({esc(task['metric'])}, n={task['n']})</h3>")
        parts.append(table(*_rows(task)))
        parts.extend(paragraph(line, "muted") for line in _breakdowns(report, name))
        for rung, info in task["rungs"].items():
            note = info.get("few_shot", {}).get("note")
            if note:
                parts.append(paragraph(f"{rung}: {note}.", "bad"))
        decision = task["decision"]
        parts.append(paragraph(f"{verdict(decision)}. {decision['reason']}.", _css(decision)))
        parts.append(_answers(name, task, answers))
    overall = report["overall"]
    parts.append(
        paragraph(f"All tasks pooled: {verdict(overall)}; {overall['reason']}.", _css(overall))
    )
    return section("The ladder: prompt, retrieval or fine-tuning?", *parts)


def verdict(decision: dict) -> str:
    """Return "Recommended: RUNG", or "Unsolved" when no rung scores above zero."""
    if decision.get("unsolved"):
        return "Unsolved (no rung scores above zero; nothing to recommend)"
    return f"Recommended: {decision['recommended']}"


def _css(decision: dict) -> str:
    return "bad" if decision.get("unsolved") else "good"


def ladder_page(report: dict) -> str:
    return page(
        "Ladder",
        ladder_section(report),
        subtitle=f"model {report['model']['ref']} ({report['model']['content_hash'][:12]}), {report['created']}"
        + _heard_by(report.get("speech") or {}),
    )


def _heard_by(speech: dict) -> str:
    """Subtitle part of a ladder on spoken questions: who heard them, with what question WER."""
    if not speech:
        return ""
    wer = ", ".join(
        f"{name} {w['mean']:.3f} [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}] n={w['n']}"
        for name, w in speech["question_wer"].items()
    )
    heard = speech["model"] + (f" + {speech['adapter']}" if speech.get("adapter") else "")
    return f"; spoken questions heard by {heard} (question WER: {wer})"


def _rows(task: dict) -> tuple[list[str], list[list]]:
    headers = [
        "rung",
        "score",
        "95% CI",
        "vs best",
        "p",
        "s/item",
        "prompt tokens/item",
        "one-time cost (s)",
        "items in",
    ]
    against = task["decision"]["against_best"]
    rows = []
    for rung, info in task["rungs"].items():
        score = info["score"]
        diff = against.get(rung)
        rows.append(
            [
                rung + (" (recommended)" if rung == task["decision"]["recommended"] else ""),
                round(score["mean"], 3),
                f"[{score['ci95'][0]:.3f}, {score['ci95'][1]:.3f}]",
                f"{diff['delta']:+.3f}" if diff else "best",
                f"{diff['p_value']:.3g}" if diff else "",
                round(info["seconds_per_item"], 2),
                round(info["prompt_tokens_per_item"], 1),
                round(info["one_time_seconds"], 1),
                info["eval_file"],
            ]
        )
    return headers, rows


def _breakdown_label(report: dict, task_name: str) -> str:
    return next(t.get("breakdown") for t in report["config"]["tasks"] if t["name"] == task_name)


def _plot(report: dict) -> str:
    groups = {
        name: {
            rung: (info["score"]["mean"], *info["score"]["ci95"])
            for rung, info in task["rungs"].items()
        }
        for name, task in report["tasks"].items()
    }
    return image(
        intervals_png(groups, title="Score per rung, 95% CI", xlabel="score"), "ladder scores"
    )


def _answers(name: str, task: dict, count: int) -> str:
    """Side-by-side outputs of every rung for the first few items (from the rungs' eval files)."""
    outputs: dict[str, dict[str, dict]] = {}
    for rung, info in task["rungs"].items():
        path = Path(info["eval_file"])
        if path.is_file():
            for row in json.loads(path.read_text())["tasks"][name]["items"]:
                outputs.setdefault(row["id"], {})[rung] = row
    ids = [i for i in outputs if len(outputs[i]) == len(task["rungs"])][:count]
    blocks = []
    for item_id in ids:
        rows = outputs[item_id]
        first = next(iter(rows.values()))
        question = next(
            (m["content"] for m in reversed(first["prompt"]) if m["role"] == "user"), ""
        )
        blocks.append(
            f"<p><b>{esc(item_id)}</b>: {esc(question)}<br><span class='muted'>reference: "
            f"{esc(first['references'][0])}</span></p>"
            + table(
                ["rung", "score", "answer"],
                [[r, row["score"], row["output"]] for r, row in rows.items()],
            )
        )
    return "".join(blocks)


def decision_lines(report: dict) -> list[str]:
    """Which rung to use for which task and why, then each score broken down (terminal lines)."""
    lines = []
    for name, task in report["tasks"].items():
        decision = task["decision"]
        lines.append(f"{name}: {verdict(decision)}. {decision['reason']}.")
        lines.extend(f"  {line}" for line in _breakdowns(report, name))
    return lines


def _breakdowns(report: dict, task_name: str) -> list[str]:
    """One line per rung whose scores on task_name are broken down by a field."""
    return [
        f"{rung} by {_breakdown_label(report, task_name)}: "
        + "; ".join(
            f"{value} {s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] n={s['n']}"
            for value, s in info["breakdown"].items()
        )
        for rung, info in report["tasks"][task_name]["rungs"].items()
        if "breakdown" in info
    ]


def ladder_table(report: dict):
    """Return a rich Table: one row per rung, a score column per task, the recommendation marked."""
    from rich.table import Table

    grid = Table(
        title="Ladder (score [95% CI]; * = recommended; a task no rung solves is unsolved)"
    )
    grid.add_column("rung")
    for name, task in report["tasks"].items():
        unsolved = " UNSOLVED" if task["decision"].get("unsolved") else ""
        grid.add_column(f"{name} ({task['metric']}, n={task['n']}){unsolved}")
    grid.add_column("s/item")
    for rung in report["order"]:
        cells = []
        for task in report["tasks"].values():
            score = task["rungs"][rung]["score"]
            mark = " *" if task["decision"]["recommended"] == rung else ""
            cells.append(
                f"{score['mean']:.3f} [{score['ci95'][0]:.2f}, {score['ci95'][1]:.2f}]{mark}"
            )
        latency = sum(t["rungs"][rung]["seconds_per_item"] for t in report["tasks"].values()) / len(
            report["tasks"]
        )
        grid.add_row(rung, *cells, f"{latency:.2f}")
    return grid
