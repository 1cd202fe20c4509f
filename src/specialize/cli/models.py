"""`specialize models list | pull | info`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from specialize.cli.output import print_json, print_table
from specialize.models.catalog import CATALOG
from specialize.models.loading import model_info
from specialize.models.materialize import is_materialised, materialised_path, pull

app = typer.Typer(help="List, fetch and describe models.", no_args_is_help=True)
console = Console()


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List catalog aliases and whether each is materialised."""
    rows = []
    for alias, entry in CATALOG.items():
        path = materialised_path(alias)
        rows.append(
            [alias, entry.description, entry.license, str(path) if is_materialised(path) else "no"]
        )
    columns = ["alias", "description", "license", "materialised"]
    if as_json:
        print_json(console, [dict(zip(columns, r, strict=True)) for r in rows])
        return
    print_table(console, columns, rows)


@app.command("pull")
def pull_model(
    name: str = typer.Argument(..., help="Catalog alias, e.g. smollm2-135m-instruct."),
    force: bool = typer.Option(False, help="Fetch and convert again even if present."),
) -> None:
    """Fetch a catalog model, check its sha256 and convert it once to safetensors."""
    path = pull(name, force=force)
    typer.echo(f"{name}: {path}")


@app.command("info")
def info(
    ref: str = typer.Argument(..., help="Alias, local model directory, .gguf file or hub id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a model: architecture, parameters, dtype, context, chat template, size, hash."""
    found = model_info(ref)
    if as_json:
        print_json(console, found.__dict__)
        return
    table = Table(show_header=False)
    rows = [
        ("reference", found.ref),
        ("path", found.path),
        ("architecture", found.architecture),
        ("parameters", f"{found.parameters:,} ({found.parameters / 1e6:.1f}M)"),
        ("dtype", found.dtype),
        ("context length", str(found.context_length)),
        ("chat template", "yes" if found.chat_template else "no"),
        ("size on disk", f"{found.size_bytes / 2**20:.1f} MiB"),
        ("content hash", found.content_hash),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
