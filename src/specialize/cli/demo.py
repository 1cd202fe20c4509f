"""`specialize demo`: the whole product, end to end, on the default model and the Nordvik example."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from specialize.cli.output import print_json
from specialize.home import home_dir

console = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path | None = typer.Option(None, help="Demo folder; default: $SPECIALIZE_HOME/demo."),
        quick: bool = typer.Option(
            False, help="A few items and steps: minutes, numbers that mean little."
        ),
        example: Path | None = typer.Option(
            None, help="Example folder (default: examples/nordvik)."
        ),
        progress: bool = typer.Option(True, help="Show progress bars."),
        as_json: bool = typer.Option(False, "--json", help="Print demo.json's content."),
        simulation_scenarios: int | None = typer.Option(
            None,
            min=0,
            help="Scenarios in the simulation step, half adversarial (default 8, 4 with --quick; "
            "0 leaves the step out).",
        ),
    ) -> None:
        """Prepare data, climb the ladder, tune with replay and a retention budget, climb again, report.

        Finished steps are re-used on a re-run (keyed by content hashes)."""
        from specialize.demo.pipeline import run_demo
        from specialize.demo.report import print_summary

        summary = run_demo(
            out or home_dir() / "demo",
            example=example,
            quick=quick,
            progress=progress and not as_json,
            simulation_scenarios=simulation_scenarios,
        )
        if as_json:
            print_json(console, summary)
            return
        print_summary(summary, console)
