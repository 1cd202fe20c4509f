"""`specialize sweep SWEEP.yaml --out DIR`: an Optuna study over ordinary training runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from specialize.artifacts import atomic_write_text
from specialize.cli.output import print_json
from specialize.sweep.config import load_sweep
from specialize.sweep.results import write_results
from specialize.sweep.study import describe, run_sweep

console = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_cmd(
        config: Path = typer.Argument(..., help="Sweep config (YAML)."),
        out: Path = typer.Option(
            ..., help="Sweep folder: study.db, runs/, sweep.json, sweep.html. Re-run to continue."
        ),
        set_: list[str] = typer.Option([], "--set", help="Override a sweep field: a.b=value."),
        storage: str | None = typer.Option(
            None,
            help="Optuna RDB storage shared by workers on several machines, e.g. "
            "postgresql://user:pass@host/db; default: sqlite in the sweep folder.",
        ),
        progress: bool = typer.Option(True, help="Show progress bars."),
        as_json: bool = typer.Option(False, "--json", help="Print sweep.json's content."),
    ) -> None:
        """Search recipe fields for the best specialist that still remembers (TPE or NSGA-II)."""
        sweep = load_sweep(config, set_)  # every config problem, before any trial starts
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "sweep-resolved.yaml", describe(sweep))
        study = run_sweep(sweep, out, storage=storage, progress=progress and not as_json)
        results = write_results(sweep, study, out)
        if as_json:
            print_json(console, results)
            return
        console.print(trial_table(results))
        rec = results["recommendation"]
        if rec["trial"] is None:
            console.print(f"recommendation: none: {rec['why']}")
        else:
            adapter = (rec.get("adapter") or {}).get("name")
            console.print(f"recommendation: trial {rec['trial']}: {rec['why']}")
            console.print(f"  run {rec['run_id']} ({rec['run_dir']}), adapter {adapter}")
        console.print(f"sweep.json: {out / 'sweep.json'}\nreport: {out / 'sweep.html'}")


def trial_table(results: dict) -> Table:
    """Return the trials as a terminal table."""
    table = Table(
        "trial", "state", "params", "task score [95% CI]", "gain pts [CI]", "general [CI]", "reason"
    )
    for t in results["trials"]:
        task, general = t.get("task") or {}, t.get("general") or {}
        score = task.get("score") or {}
        table.add_row(
            str(t["number"]) + (" *" if t["number"] in results["front"] else ""),
            t["state"],
            ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in t["params"].items()),
            f"{score['mean']:.3f} [{score['ci95'][0]:.3f}, {score['ci95'][1]:.3f}] n={score['n']}"
            if score
            else "",
            f"{task['gain_points']:+.1f} [{task['gain_ci95_points'][0]:+.1f}, "
            f"{task['gain_ci95_points'][1]:+.1f}]"
            if task
            else "",
            f"{general['value']:.2f} [{general['ci95'][0]:.2f}, {general['ci95'][1]:.2f}] "
            f"{general['unit']}, n={general['n']}"
            if general
            else "",
            (t.get("reason") or "")[:80],
        )
    return table


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
