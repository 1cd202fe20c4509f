"""`specialize data check | prepare | preview`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from specialize.cli.output import print_json
from specialize.data.config import ColumnsConfig, load_data_config
from specialize.data.layouts import LayoutOptions
from specialize.data.prepare import prepare
from specialize.data.records import Defect
from specialize.data.templates import mask_row
from specialize.data.validate import LengthLimit, check_file, check_files
from specialize.errors import DataError, UserFileError
from specialize.models.catalog import DEFAULT_MODEL
from specialize.models.loading import load_tokenizer

app = typer.Typer(help="Validate, clean, split and inspect training data.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@app.command("check")
def check(
    files: list[Path] = typer.Argument(..., help="Data files or text folders."),
    kind: str = typer.Option("auto", help="Record kind, or auto to detect per file."),
    model: str | None = typer.Option(
        None, help=f"Tokenizer for length checks (default {DEFAULT_MODEL} with --max-length)."
    ),
    max_length: int | None = typer.Option(None, help="Flag rows longer than this many tokens."),
    strict: bool = typer.Option(False, help="Exit non-zero on any defect, warnings included."),
    show: int = typer.Option(20, help="Defects printed per category (0: all)."),
    defects_out: Path | None = typer.Option(None, help="Write every defect to this JSONL file."),
    columns: list[str] = typer.Option(
        [],
        "--column",
        help="Map a field: messages=dialog, role=speaker, prompt=question (repeatable).",
    ),
    roles: list[str] = typer.Option(
        [], "--role", help="Map a role tag: bot=assistant (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Validate files row by row; print each defect with file:line and a summary table."""
    layout = LayoutOptions(_pairs(columns, "--column"), _pairs(roles, "--role"))
    limit = None
    if max_length is not None or model is not None:
        limit = LengthLimit(load_tokenizer(model or DEFAULT_MODEL), max_length or 2048)
    shown: Counter = Counter()
    sink = open(defects_out, "w", encoding="utf-8") if defects_out else None  # noqa: SIM115 (closed below)

    def on_defect(defect: Defect) -> None:
        shown[defect.category] += 1
        if not as_json and (show == 0 or shown[defect.category] <= show):
            style = "red" if defect.severity == "error" else "yellow"
            console.print(Text(defect.line(), style=style))
        if sink:
            sink.write(json.dumps(defect.__dict__, ensure_ascii=False) + "\n")

    try:
        summary = check_files(files, kind, limit, on_defect, layout)
    finally:
        if sink:
            sink.close()
    if as_json:
        print_json(console, _check_json(summary))
    else:
        _print_check_summary(summary, shown, show)
    if strict and summary.defect_count:
        raise DataError(
            f"{summary.defect_count} defect(s) found (--strict)",
            fix="fix them, or run without --strict",
        )


def _pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise DataError(
                f"{option} {item!r} is not NAME=VALUE", fix=f"e.g. {option} bot=assistant"
            )
        pairs[key] = value
    allowed = set(ColumnsConfig.model_fields)
    unknown = sorted(set(pairs) - allowed) if option == "--column" else []
    if unknown:
        raise DataError(
            f"--column {unknown[0]}: not a column name",
            fix=f"use one of {', '.join(sorted(allowed))}",
        )
    return pairs


def _check_json(summary) -> dict:
    return {
        "rows": summary.rows,
        "valid": summary.valid,
        "dropped": summary.dropped,
        "kinds": dict(summary.kinds),
        "layouts": dict(summary.layouts),
        "errors": dict(summary.errors),
        "warnings": dict(summary.warnings),
        "samples": {k: [d.__dict__ for d in v] for k, v in summary.samples.items()},
    }


def _print_check_summary(summary, shown: Counter, show: int) -> None:
    hidden = sum(max(0, n - show) for n in shown.values()) if show else 0
    if hidden:
        console.print(
            f"... {hidden} more defect(s) not printed (use --show 0 or --defects-out FILE)"
        )
    table = Table("category", "severity", "rows", title="Defects")
    for category, count in summary.errors.most_common():
        table.add_row(category, "error (row dropped)", f"{count:,}")
    for category, count in summary.warnings.most_common():
        table.add_row(category, "warning", f"{count:,}")
    if summary.defect_count:
        console.print(table)
    kinds = ", ".join(f"{k}: {v:,}" for k, v in summary.kinds.items()) or "none"
    console.print(
        f"{summary.rows:,} rows: {summary.valid:,} valid, {summary.dropped:,} with errors; kinds {kinds}"
    )
    if summary.layouts:
        layouts = ", ".join(f"{k}: {v:,}" for k, v in summary.layouts.items())
        console.print(f"read from other layouts: {layouts}")


@app.command("prepare")
def prepare_cmd(
    config: Path = typer.Argument(..., help="Data config YAML."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config field: a.b=c (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Validate, clean, deduplicate, split and check leakage; write the dataset directory and report."""
    manifest = prepare(load_data_config(config, set_), out, progress=not as_json)
    counts = manifest.counts
    if as_json:
        print_json(console, {"out": str(out), "counts": counts, "tokens": manifest.tokens})
        return
    table = Table("", "rows", title=f"Dataset {out}")
    table.add_row("input", f"{counts['input']:,}")
    for split, rows in counts["kept_by_split"].items():
        table.add_row(f"kept: {split}", f"{rows:,}")
    for reason, rows in counts["rejected_by_reason"].items():
        table.add_row(f"rejected: {reason}", f"{rows:,}")
    for reason, rows in counts["changed_by_reason"].items():
        table.add_row(f"changed: {reason}", f"{rows:,}")
    console.print(table)
    console.print(
        f"{counts['input']:,} input = {counts['kept']:,} kept + {counts['rejected']:,} rejected"
    )
    console.print(f"report: {out / 'report.html'}")


@app.command("preview")
def preview(
    file: Path = typer.Argument(..., help="A data file."),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="Model whose chat template renders the row."
    ),
    row: int = typer.Option(1, help="Line (jsonl/csv) or row number to show."),
    markers: bool = typer.Option(
        False, help="Wrap trained tokens in [[ ]] as well as colouring them."
    ),
) -> None:
    """Render one row through the chat template and show which tokens are trained on."""
    tokenizer = load_tokenizer(model)
    checked = next((c for c in check_file(file) if c.raw.line == row), None)
    if checked is None:
        raise UserFileError(
            f"no row {row}", where=str(file), fix="pass --row with an existing line number"
        )
    if checked.row is None:
        raise DataError("this row has errors: " + "; ".join(d.line() for d in checked.errors))
    masked = mask_row(tokenizer, checked.row)
    text = Text()
    for token, trained in _spans(tokenizer, masked.input_ids, masked.mask):
        shown = f"[[{token}]]" if trained and markers else token
        text.append(shown, style="bold green" if trained else "dim")
    console.print(
        f"{file}:{row} ({checked.kind}): {len(masked.input_ids)} tokens, {masked.trained} trained on"
    )
    console.print(text)


def _spans(tokenizer, ids: list[int], mask: list[int]):
    """Yield (text, trained) for runs of tokens with the same mask value."""
    start = 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or mask[index] != mask[start]:
            yield tokenizer.decode(ids[start:index]), bool(mask[start])
            start = index
