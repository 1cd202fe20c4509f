"""`specialize eval`: task metrics on an eval file and/or the retention suite, written to eval.json."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

from specialize.artifacts import EvalReport, sha256_file
from specialize.evaluate.contamination import find_overlaps, training_files_of
from specialize.evaluate.retention import compare, measure_drift, measure_retention, overall_verdict
from specialize.evaluate.skew import check_skew, conform, training_format
from specialize.evaluate.tasks import evaluate_items, load_eval_items
from specialize.models.loading import adapter_dir, content_hash, load_model, resolve_model

EVAL_SCHEMA_VERSION = EvalReport.schema_version


@dataclass
class LoadedModels:
    """The model under evaluation, its tokenizer, and how to see the base beside it."""

    model: object
    tokenizer: object
    base_model: (
        object | None
    )  # a separate base (after full fine-tuning); None when an adapter can be disabled
    has_adapter: bool
    base_hash: str


def load_for_eval(model_ref: str, adapter: str | Path | None) -> LoadedModels:
    """Load base (+ adapter), or a fully fine-tuned run's model with the base beside it."""
    base = resolve_model(model_ref)
    base_hash = content_hash(base.path)
    if adapter is not None and (Path(adapter) / "model" / "config.json").is_file():
        tuned, tokenizer = load_model(str(Path(adapter) / "model"))
        base_model, _ = load_model(base)
        return LoadedModels(tuned, tokenizer, base_model, False, base_hash)
    model, tokenizer = load_model(
        base, adapter=adapter_dir(adapter) if adapter is not None else None
    )
    return LoadedModels(model, tokenizer, None, adapter is not None, base_hash)


def run_eval(
    model_ref: str,
    *,
    adapter: str | Path | None = None,
    data: str | Path | None = None,
    metrics: list[str] | None = None,
    suite: str | None = None,
    system: str | None = None,
    train_data: list[Path] | None = None,
    out: str | Path = "eval.json",
    progress: bool = True,
    conform_layout: bool = False,
) -> dict:
    """Evaluate and write eval.json; return its content.

    `conform_layout` lays the items out as the adapter's training rows (the skew check's fix).
    """
    skew, layout = None, None
    if adapter is not None and data is not None:  # before the model loads: the warning comes first
        training = training_format(adapter, model_ref)
        layout = training.layout if conform_layout else None
        prompts = [conform(i.prompt, layout) for i in load_eval_items(data, system=system)]
        skew = check_skew(adapter, prompts, model_ref, training=training).as_dict()
        skew["conformed"] = layout is not None
    loaded = load_for_eval(model_ref, adapter)
    report: dict = {
        "schema_version": EVAL_SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {"ref": model_ref, "content_hash": loaded.base_hash},
        "adapter": str(adapter) if adapter else None,
    }
    if skew is not None:
        report["prompt_format"] = skew
    if data is not None:
        report["task"] = task_eval(
            loaded, data, metrics, system, train_data, adapter, progress, layout=layout
        )
    if suite is not None:
        report["retention"] = retention_eval(loaded, suite, progress)
    EvalReport.from_dict(report).write(out)
    return report


def task_eval(
    loaded: LoadedModels, data, metrics, system, train_data, adapter, progress: bool, layout=None
) -> dict:
    started = time.monotonic()
    items = load_eval_items(data, system=system)
    for item in items:
        item.prompt = conform(item.prompt, layout)
    result = evaluate_items(
        loaded.model, loaded.tokenizer, items, metrics, progress="task" if progress else None
    )
    train_files = list(train_data or []) or (training_files_of(Path(adapter)) if adapter else [])
    contamination = (
        find_overlaps(items, train_files)
        if train_files
        else {
            "checked_against": [],
            "note": "no training data known: pass --train-data, or an adapter from a run directory",
        }
    )
    return {
        "data": {"path": str(data), "sha256": sha256_file(data)},
        "summary": result.summary,
        "contamination": contamination,
        "seconds": round(time.monotonic() - started, 1),
        "items": result.items,
    }


def retention_eval(
    loaded: LoadedModels, suite: str, progress: bool, *, budget_points: float | None = None
) -> dict:
    """Return base and tuned retention with paired deltas and a verdict (base alone if nothing is tuned)."""
    started = time.monotonic()
    base = _measure_base(loaded, suite, progress)
    if not loaded.has_adapter and loaded.base_model is None:
        return {
            "suite": suite,
            "base": _strip(base),
            "seconds": round(time.monotonic() - started, 1),
        }
    tuned = measure_retention(loaded.model, loaded.tokenizer, suite, progress=progress)
    comparison = compare(base, tuned, budget_points=budget_points)
    drift = measure_drift(
        loaded.model, loaded.tokenizer, base_model=loaded.base_model, progress=progress
    )
    return {
        "suite": suite,
        "base": _strip(base),
        "tuned": _strip(tuned),
        "comparison": comparison,
        "drift": drift,
        "general_perplexity": {
            "base": base["general_perplexity"]["mean"],
            "tuned": tuned["general_perplexity"]["mean"],
        },
        "verdict": overall_verdict(comparison),
        "seconds": round(time.monotonic() - started, 1),
        "items": {name: task["items"] for name, task in tuned["tasks"].items()},
    }


def _measure_base(loaded: LoadedModels, suite: str, progress: bool) -> dict:
    if loaded.base_model is not None:
        return measure_retention(
            loaded.base_model, loaded.tokenizer, suite, as_base=loaded.base_hash, progress=progress
        )
    if loaded.has_adapter:
        with loaded.model.disable_adapter():
            return measure_retention(
                loaded.model, loaded.tokenizer, suite, as_base=loaded.base_hash, progress=progress
            )
    return measure_retention(
        loaded.model, loaded.tokenizer, suite, as_base=loaded.base_hash, progress=progress
    )


def _strip(measure: dict) -> dict:
    """Return summaries only (items are kept once, under the report's items)."""
    return {
        "tasks": {
            name: {"summary": t["summary"], "seconds": t.get("seconds")}
            for name, t in measure["tasks"].items()
        },
        "general_perplexity": {
            k: v for k, v in measure["general_perplexity"].items() if k != "per_text_nll"
        },
    }
