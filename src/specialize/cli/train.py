"""`specialize train RECIPE.yaml [--set k=v]` and `specialize train --resume RUN_DIR`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from specialize.adapters.registry import register_finished
from specialize.artifacts import delta_text
from specialize.cli.output import print_json
from specialize.errors import ConfigError
from specialize.train.config import load_recipe
from specialize.train.run import resume, train

console = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        recipe: Path | None = typer.Argument(None, help="Recipe YAML."),
        set_: list[str] = typer.Option(
            [], "--set", help="Override a recipe field: a.b=c (repeatable)."
        ),
        resume_dir: Path | None = typer.Option(
            None, "--resume", help="Continue this run directory after an interruption."
        ),
        progress: bool = typer.Option(True, help="Show the progress bar."),
        as_json: bool = typer.Option(
            False, "--json", help="Print the run record (run.json) as JSON."
        ),
    ) -> None:
        """Train a model from a recipe (LoRA by default), or resume an interrupted run."""
        if (recipe is None) == (resume_dir is None):
            raise ConfigError(["give a recipe file, or --resume RUN_DIR (not both)"])
        run = (
            resume(resume_dir, progress=progress and not as_json)
            if resume_dir
            else train(load_recipe(recipe, set_), progress=progress and not as_json)
        )
        entry = register_finished(run.path)  # train sits below adapters: the caller registers
        record = run.record()
        if as_json:
            print_json(console, {"run": str(run.path), **record.to_dict()})
            return
        outcome = record.outcome
        console.print(f"run: {run.path}")
        console.print(f"{outcome.get('stop_reason', '')}")
        chosen = record.chosen
        if chosen.get("checkpoint"):
            console.print(f"chosen: {chosen['checkpoint']} ({chosen['why']})")
        console.print(f"result: {outcome.get('result_dir')}")
        if entry is not None:
            console.print(f"adapter registered as {entry['name']!r}")
        if "held_out_preference_accuracy" in chosen:
            console.print(
                f"held-out preference accuracy: {chosen['held_out_preference_accuracy']:.3f}"
            )
        retention = record.retention
        test_wer = outcome.get("test_wer")
        if test_wer:  # a speech run: WER on its test split, base then tuned
            console.print(
                f"test WER: {_wer(test_wer['base'])} -> {_wer(test_wer['tuned'])}; {test_wer['verdict']}"
            )
        if retention and "wer_before" in retention:
            delta = retention["per_item_delta"]
            console.print(
                f"retention ({retention['suite']}): {retention['verdict']}; WER "
                f"{_wer(retention['wer_before'])} -> {_wer(retention['wer_after'])}, per-item "
                f"change p={delta['p_value']:.2g} ({delta['test']})"
            )
        elif retention and "tasks" not in retention:
            console.print(f"retention: not measured ({retention.get('why', 'suite none')})")
        elif retention:
            deltas = ", ".join(
                f"{name} {delta_text(row, ' pts')}" for name, row in retention["tasks"].items()
            )
            console.print(f"retention ({retention['suite']}): {retention['verdict']}; {deltas}")


def _wer(summary: dict) -> str:
    """'0.640 [0.545, 0.735] n=40' from a WER summary."""
    low, high = summary["ci95"]
    return f"{summary['mean']:.3f} [{low:.3f}, {high:.3f}] n={summary['n']}"
