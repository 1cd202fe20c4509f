"""`specialize config validate | fields`: check config files without running anything."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table

from specialize.config import Config, field_help, load_config, read_text
from specialize.data.config import DataConfig
from specialize.errors import ConfigError
from specialize.ladder.config import LadderConfig
from specialize.models.generation import GenerationSettings
from specialize.sweep.config import SweepConfig, load_sweep
from specialize.train.config import RecipeConfig

app = typer.Typer(help="Check config files and list their fields.", no_args_is_help=True)
console = Console()

# Every config kind a user can write, in one table: name -> (class, a top-level key that only
# files of that kind have, used to recognise a file without --kind).
CONFIG_KINDS: dict[str, tuple[type[Config], str]] = {
    "generation": (GenerationSettings, "max_new_tokens"),
    "data": (DataConfig, "sources"),
    "recipe": (RecipeConfig, "method"),
    "ladder": (LadderConfig, "tasks"),
    "sweep": (SweepConfig, "space"),
}
# Kinds whose loader checks more than the fields: the files they name (a sweep's recipe and tasks).
FULL_LOADERS = {"sweep": load_sweep}


def detect_kind(path: Path) -> str:
    """Return the config kind of a YAML file from its top-level keys."""
    raw = yaml.safe_load(read_text(path)) or {}
    keys = set(raw) if isinstance(raw, dict) else set()
    found = [name for name, (_, marker) in CONFIG_KINDS.items() if marker in keys]
    if len(found) != 1:
        markers = ", ".join(f"{m!r} ({n})" for n, (_, m) in CONFIG_KINDS.items())
        raise ConfigError(
            [
                f"{path}: cannot tell which kind of config this is; it needs one of the keys {markers}, "
                "or pass --kind"
            ]
        )
    return found[0]


def validate_file(
    path: Path, kind: str | None = None, overrides: list[str] | None = None
) -> Config:
    """Return the validated config in `path`, raising ConfigError with every problem."""
    kind = kind or detect_kind(path)
    if kind not in CONFIG_KINDS:
        raise ConfigError([f"--kind {kind!r}: expected one of {', '.join(CONFIG_KINDS)}"])
    if kind in FULL_LOADERS:
        return FULL_LOADERS[kind](path, overrides)
    return load_config(CONFIG_KINDS[kind][0], path, overrides)


@app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., help="YAML config files."),
    kind: str | None = typer.Option(
        None, help=f"One of: {', '.join(CONFIG_KINDS)}; detected if omitted."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a field: a.b=c (repeatable)."),
) -> None:
    """Validate config files; every problem in every file is reported at once."""
    problems: list[str] = []
    for path in files:
        try:
            validate_file(path, kind, set_)
            console.print(f"[green]ok[/green] {path}")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, source=", ".join(map(str, files)))


@app.command("fields")
def fields(kind: str = typer.Argument(..., help=f"One of: {', '.join(CONFIG_KINDS)}.")) -> None:
    """List every field of a config kind with its default and help text."""
    if kind not in CONFIG_KINDS:
        raise ConfigError([f"unknown kind {kind!r}: expected one of {', '.join(CONFIG_KINDS)}"])
    table = Table("field", "default", "help")
    for name, default, text in field_help(CONFIG_KINDS[kind][0]):
        table.add_row(name, default, text)
    console.print(table)
