"""`specialize config validate | fields`: check config files without running anything."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from specialize.cli.output import print_json, print_table
from specialize.config import Config, field_help, load_config, read_text
from specialize.data.config import DataConfig
from specialize.errors import ConfigError
from specialize.ladder.config import LadderConfig
from specialize.models.generation import GenerationSettings
from specialize.simulate.config import SimulationConfig, load_scenarios
from specialize.sweep.config import SweepConfig, load_sweep
from specialize.train.config import RecipeConfig
from specialize.train.methods import check_recipe

app = typer.Typer(help="Check config files and list their fields.", no_args_is_help=True)
console = Console()

# Every config kind a user can write, in one table: name -> (class, checks beyond the fields'
# own: a function (config, source) that raises ConfigError, or None).
CONFIG_KINDS: dict[str, tuple[type[Config], Callable[[Any, Path], Any] | None]] = {
    "generation": (GenerationSettings, None),
    "data": (DataConfig, None),
    "recipe": (RecipeConfig, check_recipe),
    "ladder": (LadderConfig, None),
    "scenarios": (SimulationConfig, None),
    "sweep": (SweepConfig, None),
}
# Kinds whose files need more than the schema (cross-references, the files they name: a scenario
# file's adapters and attachments, a sweep's recipe and tasks) load through their own loader.
LOADERS = {"scenarios": load_scenarios, "sweep": load_sweep}


def detect_kind(path: Path) -> str:
    """Return the config kind whose fields are closest to the file's top-level keys: an exact
    key counts 1, a misspelled one (close to a field) half; the best kind must be clear."""
    raw = yaml.safe_load(read_text(path)) or {}
    keys = list(raw) if isinstance(raw, dict) else []
    scores = {name: _closeness(keys, cls) for name, (cls, _) in CONFIG_KINDS.items()}
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    best, score = ranked[0]
    if score == 0 or (len(ranked) > 1 and ranked[1][1] == score):
        tied = [n for n, s in ranked if s == score]
        raise ConfigError(
            [
                f"{path}: cannot tell which kind of config this is (its keys fit "
                f"{' and '.join(tied) if score else 'none of ' + ', '.join(CONFIG_KINDS)}); "
                "pass --kind"
            ]
        )
    return best


def _closeness(keys: list, cls: type[Config]) -> float:
    fields = list(cls.model_fields)
    return sum(
        1.0 if key in fields else 0.5 if difflib.get_close_matches(str(key), fields, 1, 0.75) else 0
        for key in keys
    )


def validate_file(
    path: Path, kind: str | None = None, overrides: list[str] | None = None
) -> Config:
    """Return the validated config in `path`, raising ConfigError with every problem."""
    kind = kind or detect_kind(path)
    if kind not in CONFIG_KINDS:
        raise ConfigError([f"--kind {kind!r}: expected one of {', '.join(CONFIG_KINDS)}"])
    cls, check = CONFIG_KINDS[kind]
    loader = LOADERS.get(kind)
    config = loader(path, overrides) if loader else load_config(cls, path, overrides)
    if callable(check):
        check(config, path)
    return config


@app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., help="YAML config files."),
    kind: str | None = typer.Option(
        None, help=f"One of: {', '.join(CONFIG_KINDS)}; detected if omitted."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a field: a.b=c (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (problems included; exit 0)."),
) -> None:
    """Validate config files; every problem in every file is reported at once."""
    problems: list[str] = []
    results = []
    for path in files:
        try:
            validate_file(path, kind, set_)
            results.append({"file": str(path), "ok": True, "problems": []})
            if not as_json:
                console.print(f"[green]ok[/green] {path}")
        except ConfigError as exc:
            problems.extend(exc.problems)
            results.append({"file": str(path), "ok": False, "problems": exc.problems})
    if as_json:
        print_json(console, results)
        return
    if problems:
        raise ConfigError(problems, source=", ".join(map(str, files)))


@app.command("fields")
def fields(
    kind: str = typer.Argument(..., help=f"One of: {', '.join(CONFIG_KINDS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List every field of a config kind with its default and help text."""
    if kind not in CONFIG_KINDS:
        raise ConfigError([f"unknown kind {kind!r}: expected one of {', '.join(CONFIG_KINDS)}"])
    rows = [list(row) for row in field_help(CONFIG_KINDS[kind][0])]
    if as_json:
        print_json(console, [dict(zip(("field", "default", "help"), r, strict=True)) for r in rows])
        return
    print_table(console, ["field", "default", "help"], rows)
