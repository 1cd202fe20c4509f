"""Plots as PNG bytes, drawn off-screen with matplotlib, for embedding in reports."""

from __future__ import annotations

import io
from collections.abc import Sequence


def _figure(width: float = 7.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def histogram_png(
    series: dict[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    limit: float | None = None,
    bins: int = 40,
) -> bytes:
    """Return a histogram of one or more series, with an optional vertical limit line."""
    plt, fig, ax = _figure()
    values = [v for s in series.values() for v in s]
    edges = (
        bins
        if not values
        else [min(values) + i * (max(values) - min(values) + 1) / bins for i in range(bins + 1)]
    )
    for name, data in series.items():
        if data:
            ax.hist(data, bins=edges, alpha=0.6, label=f"{name} (n={len(data)})")
    if limit is not None:
        ax.axvline(limit, color="#b42318", linestyle="--", label=f"limit {limit:g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    ax.legend()
    return _png(plt, fig)


def curves_png(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> bytes:
    """Return line plots of named (x, y) series on one axis."""
    plt, fig, ax = _figure()
    for name, (xs, ys) in series.items():
        if xs:
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend()
    return _png(plt, fig)


def bars_png(labels: Sequence[str], values: Sequence[float], *, title: str, xlabel: str) -> bytes:
    """Return a horizontal bar chart."""
    plt, fig, ax = _figure(height=max(2.0, 0.35 * len(labels) + 1))
    ax.barh(list(labels), list(values), color="#3b6fd8")
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(plt, fig)


def intervals_png(
    groups: dict[str, dict[str, tuple[float, float, float]]], *, title: str, xlabel: str
) -> bytes:
    """Return grouped horizontal bars with 95% intervals: {group: {label: (mean, low, high)}}."""
    import numpy as np

    labels = list(dict.fromkeys(label for bars in groups.values() for label in bars))
    plt, fig, ax = _figure(height=max(2.2, 0.3 * len(labels) * len(groups) + 1.2))
    height = 0.8 / max(1, len(groups))
    positions = np.arange(len(labels))
    for index, (group, bars) in enumerate(groups.items()):
        means = [bars.get(label, (0.0, 0.0, 0.0)) for label in labels]
        ys = positions + index * height
        ax.barh(
            ys,
            [m for m, _, _ in means],
            height=height,
            # max(0, ...): an interval's end can sit a rounding error past its mean
            xerr=[
                [max(0.0, m - lo) for m, lo, _ in means],
                [max(0.0, hi - m) for m, _, hi in means],
            ],
            capsize=3,
            label=group,
        )
    ax.set_yticks(positions + height * (len(groups) - 1) / 2, labels)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if len(groups) > 1:
        ax.legend(loc="lower right")
    return _png(plt, fig)


def front_png(
    points: dict[str, tuple[float, float, tuple[float, float], tuple[float, float]]],
    front: Sequence[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    limit: float | None = None,
) -> bytes:
    """Return a scatter of labelled points (x, y, x interval, y interval) with 95% error bars; the
    points named in `front` are joined as a Pareto front; an optional vertical limit line."""
    plt, fig, ax = _figure(height=4.2)
    for label, (x, y, (xlo, xhi), (ylo, yhi)) in points.items():
        on_front = label in front
        ax.errorbar(
            x,
            y,
            xerr=[[max(0.0, x - xlo)], [max(0.0, xhi - x)]],
            yerr=[[max(0.0, y - ylo)], [max(0.0, yhi - y)]],
            fmt="o",
            color="#3b6fd8" if on_front else "#98a2b3",
            capsize=3,
            markersize=6 if on_front else 4,
        )
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ordered = sorted((points[label][0], points[label][1]) for label in front if label in points)
    if len(ordered) > 1:
        ax.plot(
            [p[0] for p in ordered],
            [p[1] for p in ordered],
            color="#3b6fd8",
            alpha=0.6,
            label="Pareto front",
        )
    if limit is not None:
        ax.axvline(limit, color="#b42318", linestyle="--", label=f"budget {limit:g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if limit is not None or len(ordered) > 1:
        ax.legend()
    return _png(plt, fig)
