"""A run's report: one self-contained HTML file (plots embedded) written at the end of every run
and on demand (`specialize runs report RUN`). Every section reads the run directory's files."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from specialize.artifacts import (
    DatasetManifest,
    RetentionReport,
    RunRecord,
    atomic_write_text,
    delta_text,
)
from specialize.config import Config, build_config, config_diff
from specialize.track.html import esc, image, page, paragraph, section, table
from specialize.track.plots import curves_png
from specialize.track.rundir import RunDir, open_run_dir

REPORT_FILE = "report.html"
RETENTION_FILE = "retention.json"
SAMPLES_FILE = "samples.json"


def write_run_report(run_dir: str | Path, config_class: type[Config] | None = None) -> Path:
    """Write report.html into the run directory; return its path.

    `config_class` (the run's config, e.g. RecipeConfig, passed by the caller so that `track`
    stays a leaf) lets the report show only the fields that differ from their defaults.
    """
    run = open_run_dir(run_dir)
    record = run.record()
    html = page(
        f"Run {record.name or run.path.name}",
        _summary(run, record),
        _data(record),
        _config(run, config_class),
        _environment(run),
        curves_section(run),
        retention_section(RetentionReport.read_if_present(run.path / RETENTION_FILE)),
        _samples(_read(run.path / SAMPLES_FILE)),
        subtitle=f"{run.path} - {record.status or '?'}",
    )
    path = run.path / REPORT_FILE
    atomic_write_text(path, html)
    return path


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(run: RunDir, record: RunRecord) -> str:
    outcome = record.outcome
    chosen = record.chosen
    base = record.base_model
    rows = [
        ["method", record.method],
        [
            "base model",
            f"{base.get('ref', record.model)} ({str(base.get('content_hash', ''))[:12]})",
        ],
        ["status", record.status],
        ["duration (s)", record.duration_s],
        ["steps", outcome.get("steps")],
        ["why training stopped", outcome.get("stop_reason")],
        ["chosen checkpoint", chosen.get("checkpoint")],
        ["why that one", chosen.get("why")],
        ["final training loss", outcome.get("train_loss")],
        ["best validation loss", outcome.get("best_val_loss")],
    ]
    if outcome.get("error"):
        rows.append(["error", outcome["error"]])
    return section("Summary", table(["", ""], [r for r in rows if r[1] is not None]))


def _data(record: RunRecord) -> str:
    refs = record.data
    if not refs:
        return section("Data", paragraph("No data manifest recorded (the run did not finish)."))
    rows = []
    for ref in refs:
        manifest = DatasetManifest.read_if_present(ref["path"])
        for item in manifest.inputs if manifest else []:
            rows.append(["input", item["path"], item["sha256"][:16], item.get("rows")])
        for split, sha in ref["outputs"].items():
            rows.append(
                [
                    split,
                    str(Path(ref["path"]).parent),
                    sha[:16],
                    (manifest.outputs if manifest else {}).get(split, {}).get("rows"),
                ]
            )
    return section("Data", table(["file", "path", "sha256 (16)", "rows"], rows))


def _config(run: RunDir, config_class: type[Config] | None) -> str:
    raw = yaml.safe_load(run.config.read_text()) or {}
    if config_class is None:
        diff = {k: ("", v) for k, v in _flat_config(raw).items()}
        title = "Configuration (resolved)"
    else:
        diff = config_diff(build_config(config_class, raw, source=run.config))
        title = "Configuration (differences from the defaults)"
    rows = [
        [field, json.dumps(default), json.dumps(value)]
        for field, (default, value) in sorted(diff.items())
    ]
    return section(
        title,
        table(["field", "default", "this run"], rows),
        paragraph(f"Full resolved config: {run.config}", "muted"),
    )


def _flat_config(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix.rstrip("."): value}
    out: dict = {}
    for key, inner in value.items():
        out.update(_flat_config(inner, f"{prefix}{key}."))
    return out


def _environment(run: RunDir) -> str:
    env = _read(run.env) or {}
    packages = env.get("packages", {})
    hardware = env.get("hardware", {})
    rows = [
        ["python", env.get("python")],
        *[[name, version] for name, version in packages.items()],
        ["git", json.dumps(env.get("git"))],
        ["cpu", hardware.get("cpu")],
        ["gpu", json.dumps(hardware.get("gpus") or hardware.get("gpu"))],
        ["precision", json.dumps(env.get("precision"))],
        ["seed", env.get("seed")],
    ]
    return section("Environment", table(["", ""], [r for r in rows if r[1] not in (None, "null")]))


def curves_section(run: RunDir) -> str:
    return section("Curves", *curve_images(run))


def curve_images(run: RunDir) -> list[str]:
    """Loss, validation loss, learning rate and (when probed) retention per step, as images."""
    metrics = run.metrics()
    train = [m for m in metrics if "loss" in m]
    val = [m for m in metrics if "val_loss" in m]
    if not train:
        return [paragraph("No metrics were logged.")]
    loss = curves_png(
        {
            "training loss": ([m["step"] for m in train], [m["loss"] for m in train]),
            "validation loss": ([m["step"] for m in val], [m["val_loss"] for m in val]),
        },
        title="Loss",
        xlabel="step",
        ylabel="loss",
    )
    lr = curves_png(
        {"learning rate": ([m["step"] for m in train], [m.get("lr", 0.0) for m in train])},
        title="Learning rate",
        xlabel="step",
        ylabel="lr",
    )
    parts = [image(loss, "training and validation loss"), image(lr, "learning rate")]
    probes = [m for m in metrics if "probe_core" in m]
    if probes:
        parts.append(
            image(
                curves_png(
                    {
                        "core probe": (
                            [m["step"] for m in probes],
                            [m["probe_core"] for m in probes],
                        )
                    },
                    title="Retention probe at each checkpoint",
                    xlabel="step",
                    ylabel="core score",
                ),
                "retention probe",
            )
        )
    return parts


def retention_section(retention: RetentionReport | None) -> str:
    """Base and tuned on the retention suite, paired deltas with CIs, drift and the verdict."""
    if retention is None:
        return section("Retention", paragraph("No retention suite was measured for this run."))
    rows = []
    for name, row in retention.comparison.items():
        rows.append(
            [
                name,
                row["metric"],
                f"{row['base']['mean']:.3f} [{row['base']['ci95'][0]:.3f}, {row['base']['ci95'][1]:.3f}]",
                f"{row['tuned']['mean']:.3f} [{row['tuned']['ci95'][0]:.3f}, {row['tuned']['ci95'][1]:.3f}]",
                delta_text(row),
                f"{row['p_value']:.3g}",
                row["verdict"],
            ]
        )
    perplexity = retention.general_perplexity or {}
    return section(
        "Retention: general ability before and after (same items)",
        table(["task", "metric", "base", "tuned", "delta (points)", "p", "verdict"], rows),
        paragraph(
            f"General-text perplexity {perplexity['base']:.2f} -> {perplexity['tuned']:.2f}; "
            f"mean KL from the base on general prompts {retention.drift['kl']['mean']:.4f}. "
            f"Verdict: {retention.verdict}."
        ),
    )


def _samples(samples: dict | None) -> str:
    if not samples:
        return section(
            "Base and tuned answers", paragraph("No samples were recorded for this run.")
        )
    blocks = []
    for row in samples["items"]:
        blocks.append(
            f"<p><b>{esc(row['question'])}</b><br><span class='muted'>reference: {esc(row['reference'])}</span></p>"
            + table(["model", "answer"], [["base", row["base"]], ["tuned", row["tuned"]]])
        )
    return section("Base and tuned answers (validation prompts, greedy)", *blocks)


def compare_page(comparison: dict) -> str:
    """Return an HTML page: what differed between runs, how the outcome moved, curves overlaid."""
    names = [f"{r['name']} ({r['id'][:8]})" for r in comparison["runs"]]
    differences = [
        [key, *[json.dumps(v) for v in values]]
        for key, values in comparison["config_differences"].items()
    ]
    outcomes = []
    for metric, deltas in comparison["deltas_vs_first"].items():
        values = [o.get(metric) for o in comparison["outcomes"]]
        outcomes.append(
            [
                metric,
                *[
                    _with_delta(v, d, i)
                    for i, (v, d) in enumerate(zip(values, deltas, strict=True))
                ],
            ]
        )
    series = {}
    for name, curve in zip(names, comparison["curves"], strict=True):
        series[f"{name} train"] = ([x for x, _ in curve["loss"]], [y for _, y in curve["loss"]])
        if curve["val_loss"]:
            series[f"{name} val"] = (
                [x for x, _ in curve["val_loss"]],
                [y for _, y in curve["val_loss"]],
            )
    plot = curves_png(series, title="Loss, runs overlaid", xlabel="step", ylabel="loss")
    return page(
        "Compare runs",
        section(
            "What differed",
            table(["config field", *names], differences)
            if differences
            else paragraph("The runs' configs are the same."),
        ),
        section(
            "How the outcome moved (delta against the first run)",
            table(["metric", *names], outcomes),
        ),
        section("Curves", image(plot, "loss curves overlaid")),
        subtitle=" vs ".join(names),
    )


def _with_delta(value, delta, index: int) -> str:
    if value is None:
        return ""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if index == 0 or delta is None else f"{text} ({delta:+.4g})"
