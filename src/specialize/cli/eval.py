"""`specialize eval`: task metrics with confidence intervals, and the retention suite."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from specialize.artifacts import delta_text
from specialize.cli.output import print_json, print_table
from specialize.errors import ConfigError
from specialize.evaluate.evaluation import run_eval
from specialize.evaluate.metrics import GENERATIVE_METRICS, LIKELIHOOD_METRICS
from specialize.evaluate.retention import headline_metric
from specialize.models.catalog import DEFAULT_MODEL

console = Console(highlight=False, soft_wrap=True)
METRIC_NAMES = [*GENERATIVE_METRICS, *LIKELIHOOD_METRICS]


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        model: str | None = typer.Option(
            None,
            "--model",
            "-m",
            help=f"Base model reference (default {DEFAULT_MODEL}; a speech adapter's own base).",
        ),
        adapter: Path | None = typer.Option(
            None, help="PEFT adapter dir, a run dir (adapter/ or model/), or a registered name."
        ),
        data: Path | None = typer.Option(
            None,
            help="Eval file: messages, question+answer(s), or question+choices+answer; "
            "for a speech model or adapter, audio+text rows (WER).",
        ),
        metrics: str | None = typer.Option(
            None, help=f"Comma-separated: {', '.join(METRIC_NAMES)}."
        ),
        suite: str | None = typer.Option(None, help="Retention suite: core, standard or all."),
        system: str | None = typer.Option(None, help="System message for generated answers."),
        train_data: list[Path] = typer.Option(
            [], help="Training files to check the eval file against (contamination)."
        ),
        out: Path = typer.Option(Path("eval.json"), help="Where to write eval.json."),
        progress: bool = typer.Option(True, help="Show progress bars."),
        conform_layout: bool = typer.Option(
            False, help="Lay items out as the adapter's training rows (the prompt-format fix)."
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print the summaries as JSON (items stay in eval.json)."
        ),
        blind: Path | None = typer.Option(
            None,
            help="Vision adapters: the same items with other images (default: swapped here).",
        ),
    ) -> None:
        """Score a model on an eval file and/or the retention suite; every item goes to eval.json."""
        adapter, registered_base = _registered(adapter)
        if _is_speech(model, adapter):
            if data is None or suite is not None:
                raise ConfigError(
                    [
                        "a speech model is scored with --data AUDIO_ROWS (audio + text); its "
                        "general-speech retention is in the run's speech_retention.json"
                    ]
                )
            base = model or registered_base or _speech_base(adapter)
            report = _speech_eval(base, adapter, data, out, progress)
            if as_json:
                slim = {k: v for k, v in report.items() if k != "items"}
                print_json(console, {**slim, "eval_json": str(out)})
            else:
                _print_speech(report, out)
            return
        model = model or registered_base or DEFAULT_MODEL
        if data is not None:
            _refuse_speech_rows(data, model)
        if adapter is not None and data is not None and _is_vision(adapter):
            _image_eval(model, adapter, data, blind, out, progress)
            if suite is None:
                return
            out = out.with_name(out.stem + "-retention.json")
            data = None
        if data is None and suite is None:
            raise ConfigError(["give --data FILE, --suite core|standard|all, or both"])
        if suite is not None and suite not in ("core", "standard", "all"):
            raise ConfigError([f"--suite {suite!r}: expected core, standard or all"])
        chosen = [m.strip() for m in metrics.split(",")] if metrics else None
        report = run_eval(
            model,
            adapter=adapter,
            data=data,
            metrics=chosen,
            suite=suite,
            system=system,
            train_data=train_data,
            out=out,
            progress=progress,
            conform_layout=conform_layout,
        )
        if as_json:
            print_json(console, _summaries(report, out))
            return
        _print(report)
        console.print(f"eval.json: {out}")

    @app.command("parity")
    def parity_cmd(
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model reference."),
        adapter: Path | None = typer.Option(None, help="PEFT adapter dir, or a run dir."),
        suite: str | None = typer.Option(
            None,
            help="Suite whose multiple-choice tasks are compared: standard (the default "
            "unless --data is given).",
        ),
        data: Path | None = typer.Option(
            None, help="Also compare an eval file's question+choices+answer rows."
        ),
        task: list[str] = typer.Option([], help="Only these tasks (repeatable), e.g. arc_easy."),
        limit: int | None = typer.Option(None, help="First N items of each task."),
        batch_size: int = typer.Option(8, help="Batch size of both scorers."),
        tolerance: float | None = typer.Option(
            None, help="Largest per-choice log-likelihood difference (default by dtype)."
        ),
        out: Path = typer.Option(Path("parity.json"), help="Where to write parity.json."),
        progress: bool = typer.Option(True, help="Show progress bars."),
        as_json: bool = typer.Option(False, "--json", help="Print the summaries as JSON."),
    ) -> None:
        """Check our multiple-choice scores against lm-evaluation-harness on the same items.

        Exits 1 if any prediction differs or a log-likelihood differs by more than the tolerance.
        """
        from specialize.evaluate.harness import run_parity

        report = run_parity(
            model,
            adapter=adapter,
            suite=suite,
            data=data,
            only=task or None,
            limit=limit,
            batch_size=batch_size,
            tolerance=tolerance,
            out=out,
            progress=progress,
        )
        if as_json:
            summary = {k: v for k, v in report.items() if k != "items"}
            print_json(console, {**summary, "parity_json": str(out)})
        else:
            _print_parity(report, out)
        if not report["passed"]:
            raise typer.Exit(1)


def _registered(adapter: Path | None) -> tuple[Path | None, str | None]:
    """A registered adapter name -> (its folder, its base model); a path stays as it is."""
    if adapter is None or adapter.exists():
        return adapter, None
    from specialize.adapters import registry

    entry = registry.get(str(adapter), missing_ok=True)
    if entry is None:
        return adapter, None  # the loaders name the missing path
    return Path(entry["path"]), entry["base_model"]


def _refuse_speech_rows(data: Path, model: str) -> None:
    """Spoken rows (audio + transcript) given to a text model: say which model scores them."""
    from specialize.data.formats import read_rows
    from specialize.data.records import detect_kind
    from specialize.errors import DataError

    if not data.is_file():
        return  # the loader names the missing file
    first = next(iter(read_rows(data)), None)
    if first is not None and not first.problem and detect_kind(first.value) == "speech":
        raise DataError(
            f"a speech row (audio + transcript), but {model} is a text model",
            where=first.where,
            fix="score recordings with --model whisper-tiny-en or --adapter SPEECH_RUN; spoken "
            "questions with typed answers go through `specialize cascade`",
        )


def _is_speech(model: str | None, adapter: Path | None) -> bool:
    from specialize.models.speech import is_speech_adapter, is_speech_model

    return (adapter is not None and is_speech_adapter(adapter)) or (
        model is not None and is_speech_model(model)
    )


def _speech_base(adapter: Path | None) -> str:
    from specialize.models.catalog import DEFAULT_SPEECH_MODEL
    from specialize.models.speech import speech_base_of

    return (speech_base_of(adapter) if adapter is not None else None) or DEFAULT_SPEECH_MODEL


def _speech_eval(model: str, adapter: Path | None, data: Path, out: Path, progress: bool) -> dict:
    from specialize.artifacts import atomic_write_json
    from specialize.evaluate.speech import speech_eval

    report = speech_eval(model, adapter, data, progress=progress)
    atomic_write_json(out, report)
    return report


def _print_speech(report: dict, out: Path) -> None:
    model, adapter = report["model"], report["adapter"]
    table = Table("system", "WER", "95% CI", "n", title=f"Speech: {report['data']['path']}")
    for name, summary in report["summary"].items():
        if name == "change":
            continue
        w = summary["wer"]
        table.add_row(
            f"{name} ({model if name == 'base' else adapter})",
            f"{w['mean']:.3f}",
            f"[{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}]",
            str(w["n"]),
        )
    console.print(table)
    change = report["summary"].get("change")
    if change:
        d = change["per_item_delta"]
        c = change["corpus_delta"]
        console.print(
            f"tuned - base: WER {c['delta']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] "
            f"(paired bootstrap, n={c['n']}); per-item WER {d['delta']:+.3f}, "
            f"p={d['p_value']:.2g} ({d['test']}): "
            f"{'significant' if d['significant'] else 'not significant'}, {change['verdict']}"
        )
    console.print(f"eval.json: {out}")


def _summaries(report: dict, out: Path) -> dict:
    """The report without its per-item rows (those are in eval.json)."""
    task = report.get("task")
    slim = {k: v for k, v in report.items() if k not in ("task",)}
    if task:
        slim["task"] = {k: v for k, v in task.items() if k != "items"}
    return {**slim, "eval_json": str(out)}


def _is_vision(adapter: Path) -> bool:
    from specialize.errors import ModelError
    from specialize.models.loading import adapter_dir
    from specialize.models.vision import is_vision_adapter

    try:
        return is_vision_adapter(adapter_dir(adapter))
    except ModelError:  # a fully fine-tuned run (model/) or a bad path: the text path says which
        return False


def _image_eval(
    model: str, adapter: Path, data: Path, blind: Path | None, out: Path, progress: bool
) -> None:
    from specialize.evaluate.vision import evaluate_image_items

    report = evaluate_image_items(model, adapter, data, blind=blind, out=out, progress=progress)
    table = Table("system", "contains", "95% CI", "n", title=f"Image items: {data}")
    for name, s in report["summary"].items():
        table.add_row(
            name, f"{s['mean']:.3f}", f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]", str(s["n"])
        )
    console.print(table)
    for name, p in report["paired"].items():
        console.print(
            f"{name}: {p['delta']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}], "
            f"p={p['p_value']:.2g} ({p['test']}, n={p['n']})"
        )
    console.print(f"eval.json: {out}")


def _print(report: dict) -> None:
    skew = report.get("prompt_format") or {}
    if skew.get("skewed"):
        console.print(f"[yellow]{skew['warning']}[/yellow]")
    task = report.get("task")
    if task:
        table = Table("metric", "mean", "95% CI", "n", title=f"Task: {task['data']['path']}")
        for name, s in task["summary"].items():
            table.add_row(
                name, f"{s['mean']:.4f}", f"[{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]", str(s["n"])
            )
        console.print(table)
        overlap = task["contamination"].get("overlapping_items")
        if overlap:
            console.print(
                f"[yellow]contamination: {overlap} eval item(s) also appear in the training data[/yellow]"
            )
    retention = report.get("retention")
    if retention:
        table = Table(
            "task",
            "base",
            "tuned",
            "delta (points)",
            "verdict",
            title=f"Retention ({retention['suite']})",
        )
        for name, summary in retention["base"]["tasks"].items():
            metric = headline_metric(summary["summary"])
            base = summary["summary"][metric]
            row = retention.get("comparison", {}).get(name)
            tuned = f"{row['tuned']['mean']:.3f}" if row else ""
            delta = delta_text(row) if row else ""
            table.add_row(
                f"{name} ({metric})",
                f"{base['mean']:.3f} [{base['ci95'][0]:.3f}, {base['ci95'][1]:.3f}]",
                tuned,
                delta,
                row["verdict"] if row else "",
            )
        console.print(table)
        if "verdict" in retention:
            console.print(
                f"verdict: {retention['verdict']}; drift KL {retention['drift']['kl']['mean']:.4f}"
            )


def _print_parity(report: dict, out: Path) -> None:
    def score(s: dict) -> str:
        return f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"

    rows = []
    for name, t in report["tasks"].items():
        rows.append(
            [
                name,
                str(t["n"]),
                score(t["ours"]["acc"]),
                score(t["harness"]["acc"]),
                score(t["ours"]["acc_norm"]),
                score(t["harness"]["acc_norm"]),
                f"{t['max_abs_ll_diff']:.1e}",
                f"{t['predictions_differ']['acc']}/{t['predictions_differ']['acc_norm']}",
                "pass" if t["passed"] else "FAIL",
            ]
        )
    harness = report["harness"]
    print_table(
        console,
        [
            "task",
            "n",
            "acc (ours)",
            "acc (lm-eval)",
            "acc_norm (ours)",
            "acc_norm (lm-eval)",
            "max |dLL|",
            "preds differ",
            "result",
        ],
        rows,
        title=f"Parity with lm-evaluation-harness {harness['version']} ({harness['model_class']})",
    )
    for name, why in report.get("skipped", {}).items():
        console.print(f"not compared in {name}: {why}")
    tolerance = report["tolerance"]["loglikelihood"]
    verdict = "passed" if report["passed"] else "FAILED"
    console.print(
        f"parity {verdict}: tolerance {tolerance:g} nats per choice ({report['dtype']}), "
        "no prediction may differ"
    )
    console.print(f"parity.json: {out}")
