"""`specialize runs list | show | compare | report | reproduce | tag | rm`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from specialize.adapters.registry import forget_run, register_finished
from specialize.artifacts import atomic_write_text
from specialize.cli.output import print_json
from specialize.track import runs as track_runs
from specialize.track.report import write_run_report
from specialize.train.config import RecipeConfig
from specialize.train.run import reproduce

app = typer.Typer(
    help="Training runs: list, inspect, compare, report, reproduce, tag, remove.",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)
SORTABLE = ("started", "name", "val_loss", "retention_delta", "duration_s")


@app.command("list")
def list_cmd(
    base: str | None = typer.Option(
        None, help="Only runs on this base model (alias, path or hash)."
    ),
    method: str | None = typer.Option(None, help="Only runs of this method (sft, cpt, ...)."),
    tag: str | None = typer.Option(None, help="Only runs with this tag."),
    sort: str = typer.Option("started", help=f"Sort by: {', '.join(SORTABLE)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """A table of runs: identity, key hyperparameters, outcome, retention delta, duration, status."""
    if sort not in SORTABLE:
        from specialize.errors import ConfigError

        raise ConfigError([f"--sort {sort!r}: expected one of {', '.join(SORTABLE)}"])
    rows = track_runs.list_rows(base=base, method=method, tag=tag)
    rows.sort(
        key=lambda r: (r[sort] is None, r[sort] if r[sort] is not None else 0),
        reverse=sort == "started",
    )
    if as_json:
        console.print_json(json.dumps(rows))
        return
    grid = Table(title=f"{len(rows)} run(s)")
    columns = [
        "name",
        "id",
        "method",
        "base",
        "data",
        "settings",
        "val loss",
        "retention Δ pts",
        "seconds",
        "status",
        "tags",
    ]
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(
            row["name"],
            row["id"][:8],
            row["method"],
            Path(row["base"]).name,
            row["data"],
            _settings(row),
            _cell(row["val_loss"]),
            _cell(row["retention_delta"]),
            _cell(row["duration_s"]),
            row["status"],
            _cell(row["tags"]),
        )
    console.print(grid)


def _settings(row: dict) -> str:
    """Key hyperparameters in one cell: adaptation, learning rate, epochs, batch, replay."""
    adapt = f"lora r{row['r']}" if row["adapt"] == "lora" else str(row["adapt"])
    replay = f" replay {row['replay']:g}" if row["replay"] else ""
    return f"{adapt} lr {row['lr']:g} ep {row['epochs']:g} bs {row['batch']}{replay}"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


@app.command("show")
def show_cmd(run: str = typer.Argument(..., help="Run id, name or directory.")) -> None:
    """Everything recorded about one run."""
    row = track_runs.find_run(run)
    console.print_json(json.dumps(row, default=str))


@app.command("compare")
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="Two or more runs (id, name or directory)."),
    out: Path = typer.Option(Path("compare.html"), help="Where to write the comparison page."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Config differences and outcome deltas side by side; the page overlays the curves."""
    if len(runs) < 2:
        from specialize.errors import ConfigError

        raise ConfigError(["runs compare needs two or more runs"])
    from specialize.track.report import compare_page

    comparison = track_runs.compare(runs)
    if as_json:
        atomic_write_text(out, compare_page(comparison))
        console.print_json(json.dumps({**comparison, "page": str(out)}, default=str))
        return
    names = [f"{r['name']} ({r['id'][:8]})" for r in comparison["runs"]]
    differences = Table(title="What differed")
    for column in ["field", *names]:
        differences.add_column(column)
    for key, values in comparison["config_differences"].items():
        differences.add_row(key, *[json.dumps(v) for v in values])
    console.print(differences)
    outcome = Table(title="Outcome (delta against the first run)")
    for column in ["metric", *names]:
        outcome.add_column(column)
    for metric, deltas in comparison["deltas_vs_first"].items():
        values = [o.get(metric) for o in comparison["outcomes"]]
        outcome.add_row(
            metric,
            *[
                _cell(v) + ("" if i == 0 or d is None else f" ({d:+.4g})")
                for i, (v, d) in enumerate(zip(values, deltas, strict=True))
            ],
        )
    console.print(outcome)
    atomic_write_text(out, compare_page(comparison))
    console.print(f"curves overlaid: {out}")


@app.command("report")
def report_cmd(
    run: str = typer.Argument(..., help="Run id, name or directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the run and report paths as JSON."),
) -> None:
    """(Re)write the run's self-contained report.html."""
    found = track_runs.find_run(run)
    report = write_run_report(found["path"], RecipeConfig)
    if as_json:
        print_json(console, {"run": str(found["path"]), "report": str(report)})
        return
    console.print(str(report))


@app.command("reproduce")
def reproduce_cmd(
    run: str = typer.Argument(..., help="Run id, name or directory."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the new run's record (run.json) as JSON."
    ),
) -> None:
    """Train again from the run's resolved config; refuses if its data changed since."""
    new = reproduce(run, progress=progress and not as_json)
    register_finished(new.path)
    if as_json:
        print_json(console, {"run": str(new.path), **new.record().to_dict()})
        return
    console.print(f"reproduced into {new.path}")


@app.command("tag")
def tag_cmd(run: str = typer.Argument(...), tag: str = typer.Argument(...)) -> None:
    """Add a tag to a run (filter with `runs list --tag`)."""
    console.print(", ".join(track_runs.add_tag(run, tag)))


@app.command("rm")
def rm_cmd(
    run: str = typer.Argument(..., help="Run id, name or directory."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete a run's directory and its registry entry (and the entries of its adapters)."""
    row = track_runs.find_run(run)
    if not yes and not typer.confirm(f"delete {row['path']}?"):
        raise typer.Exit(1)
    adapters = forget_run(row["id"], row["path"])
    removed = track_runs.remove(row["id"])
    if removed["deleted"]:
        console.print(f"removed {row['name']} ({removed['deleted']})")
    else:
        console.print(
            f"removed {row['name']} from the registry; its folder {row['path']} was left alone "
            "(not provably this run's own: a relative path, or run.json names another run)"
        )
    for name in adapters:
        console.print(f"removed the registry entry of its adapter {name!r}")


def register_ui(root: typer.Typer) -> None:
    @root.command("ui")
    def ui_cmd(
        host: str = typer.Option("127.0.0.1", help="Address to bind (local only by default)."),
        port: int = typer.Option(8765, help="Port."),
    ) -> None:
        """The dashboard: runs table with sort and filter, each run's report, comparisons."""
        from specialize.serve.app import serve

        console.print(f"specialize ui on http://{host}:{port}/  (Ctrl-C to stop)")
        serve(host, port)
