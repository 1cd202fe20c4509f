"""`specialize simulate SCENARIOS.yaml --out DIR` and `specialize simulations list`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from specialize.cli.output import print_json
from specialize.simulate.config import load_scenarios
from specialize.simulate.run import run_simulation

console = Console(highlight=False, soft_wrap=True)
app = typer.Typer(help="Simulations held so far.", no_args_is_help=True)


def register(app_: typer.Typer) -> None:
    @app_.command("simulate")
    def simulate_cmd(
        scenarios: Path = typer.Argument(..., help="Scenario file (YAML)."),
        out: Path = typer.Option(
            Path("simulation"), help="Directory for transcripts.jsonl, simulation.json/.html."
        ),
        set_: list[str] = typer.Option([], "--set", help="Override a field: a.b=value."),
        progress: bool = typer.Option(True, help="Show progress bars."),
        as_json: bool = typer.Option(False, "--json", help="Print simulation.json's content."),
    ) -> None:
        """Hold every scenario's conversation with every contestant; check, judge and compare them.

        Re-running with the same --out resumes: finished conversations are not held again."""
        config = load_scenarios(scenarios, set_)
        report = run_simulation(
            config, out, scenario_file=scenarios, progress=progress and not as_json
        )
        if as_json:
            print_json(console, report)
            return
        console.print(_table(report))
        for pair in report["paired"]:
            console.print(
                f"{pair['second']} vs {pair['first']}: {pair['delta']:+.2f} on {pair['n']} shared "
                f"scenarios (McNemar p={pair['p_value']:.3g})"
            )
        console.print(
            f"transcripts: {out / 'transcripts.jsonl'}\nsimulation.json: {out / 'simulation.json'}"
            f"\nreport: {out / 'simulation.html'}"
        )


def _table(report: dict) -> Table:
    table = Table("contestant", "pass rate", "95% CI", "n", "adversarial", "errored", "overflow")
    for name, info in report["contestants"].items():
        rate, adversarial = info["pass_rate"], info["adversarial_pass_rate"]
        table.add_row(
            name,
            f"{rate['mean']:.0%}" if rate["n"] else "-",
            f"[{rate['ci95'][0]:.0%}, {rate['ci95'][1]:.0%}]" if rate["n"] else "-",
            str(rate["n"]),
            f"{adversarial['mean']:.0%} (n={adversarial['n']})" if adversarial["n"] else "-",
            str(len(info["errored"])),
            str(len(info["overflow"])),
        )
    return table


@app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the rows as a JSON list."),
) -> None:
    """Every simulation: where, when, the scenario file and its hash, pass rates per contestant."""
    from specialize.track.registry import list_simulations

    rows = list_simulations()
    if as_json:
        print_json(console, rows)
        return
    table = Table("created", "path", "scenario file", "sha256", "pass rates")
    for row in rows:
        rates = ", ".join(
            f"{name} {info['pass_rate']:.0%} (n={info['n']})" if info["n"] else f"{name} -"
            for name, info in (row["summary"] or {}).items()
        )
        table.add_row(
            row["created_at"],
            row["path"],
            row["scenario_file"] or "",
            (row["scenario_hash"] or "")[:12],
            rates,
        )
    console.print(table)
    console.print(f"{len(rows)} simulation(s)")
