"""How commands print: JSON for scripts (`--json`), tables that fit the terminal.

A table wider than the terminal folds into records, one block per row with `column: value`
lines wrapped to the width, instead of squeezing every column into a sliver.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def print_json(console: Console, data: Any) -> None:
    """Print `data` as JSON (paths and other objects as strings), nothing else."""
    console.print_json(json.dumps(data, default=str, ensure_ascii=False))


def print_table(
    console: Console, columns: list[str], rows: list[list[str]], title: str | None = None
) -> None:
    """Print rows as a table if it fits the console's width, else as records."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    natural = sum(widths) + 3 * len(columns) + 1  # rich's borders and padding
    if natural <= console.width:
        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    if title:
        console.print(Text(title, style="bold"))
    key_width = max(len(c) for c in columns)
    room = max(20, console.width - key_width - 2)
    for row in rows:
        console.print(Text("-" * min(console.width, 40), style="dim"))
        for column, cell in zip(columns, row, strict=True):
            lines = textwrap.wrap(cell, room) or [""]
            console.print(Text(f"{column:<{key_width}}  {lines[0]}"))
            for line in lines[1:]:
                console.print(Text(f"{'':<{key_width}}  {line}"))
