"""Self-contained HTML pages: escaped text, tables, embedded PNG plots; they work offline."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from typing import Any

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:72rem;color:#1d2330;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #dde;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f7fa;padding:.5rem;white-space:pre-wrap;word-break:break-word;max-height:16rem;overflow:auto}
.muted{color:#667}.bad{color:#b42318}.good{color:#067647}img{max-width:100%}
"""


def esc(value: Any) -> str:
    """Return text safe to place in HTML: model output and user data are never markup."""
    return html.escape(str(value), quote=True)


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """Return an HTML table; numbers are right-aligned, everything is escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            css = (
                ' class="num"'
                if isinstance(cell, int | float) and not isinstance(cell, bool)
                else ""
            )
            cells.append(f"<td{css}>{esc(_fmt(cell))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(png: bytes, alt: str) -> str:
    """Return an <img> with the PNG embedded as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def paragraph(text: str, css: str = "") -> str:
    return f'<p class="{css}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>"


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def page(title: str, *sections: str, subtitle: str = "") -> str:
    """Return a whole HTML document."""
    sub = f'<p class="muted">{esc(subtitle)}</p>' if subtitle else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>{sub}{''.join(sections)}</body></html>\n"
    )


def _fmt(cell: Any) -> str:
    if isinstance(cell, float):
        return f"{cell:.4g}"
    if isinstance(cell, int) and not isinstance(cell, bool):
        return f"{cell:,}"
    return "" if cell is None else str(cell)
