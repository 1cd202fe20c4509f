"""`specialize ladder`: the same held-out items on every rung (base, prompt, rag, tuned, tuned+rag)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from specialize.cli.output import print_json
from specialize.ladder.config import load_ladder
from specialize.ladder.report import ladder_table, verdict
from specialize.ladder.run import run_ladder

console = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("ladder")
    def ladder_cmd(
        config: Path = typer.Argument(..., help="Ladder config (YAML)."),
        out: Path = typer.Option(
            Path("ladder"), help="Directory for ladder.json, ladder.html, rungs/."
        ),
        set_: list[str] = typer.Option([], "--set", help="Override a field: a.b=value."),
        progress: bool = typer.Option(True, help="Show progress bars."),
        as_json: bool = typer.Option(False, "--json", help="Print ladder.json's content."),
    ) -> None:
        """Climb the ladder and say which rung is worth it, with a paired test on the same items."""
        report = run_ladder(load_ladder(config, set_), out, progress=progress and not as_json)
        if as_json:
            print_json(console, report)
            return
        speech = report.get("speech")
        if speech:
            console.print(
                f"spoken questions, heard by {speech['model']}"
                + (f" + {speech['adapter']}" if speech["adapter"] else "")
            )
            for name, wer in speech["question_wer"].items():
                console.print(
                    f"  {name}: question WER {wer['mean']:.3f} "
                    f"[{wer['ci95'][0]:.3f}, {wer['ci95'][1]:.3f}] n={wer['n']}"
                )
        console.print(ladder_table(report))
        for name, task in report["tasks"].items():
            console.print(f"{name}: {verdict(task['decision'])}: {task['decision']['reason']}")
        console.print(f"ladder.json: {out / 'ladder.json'}\nreport: {out / 'ladder.html'}")
