"""Retention: general ability of a model, measured on fixed suites, with the base side cached.

`measure_retention` scores one model on the chosen suites; `compare` sets tuned against base
item by item (paired), with deltas, CIs, p-values and a plain verdict. Base results are cached
under $SPECIALIZE_HOME/cache/baselines/<base content hash>/, keyed by the suite's own hash, so a
training run pays only for the tuned side.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from specialize.artifacts import atomic_write_json, sha256_text
from specialize.evaluate.runner import drift_kl
from specialize.evaluate.stats import paired_difference
from specialize.evaluate.suites import core_items, drift_prompts, general_texts, standard_tasks
from specialize.evaluate.tasks import EvalItem, evaluate_items, perplexity_of_texts
from specialize.home import cache_dir

log = logging.getLogger(__name__)
SCORING_VERSION = 1  # bump when scoring changes, so cached baselines are recomputed
CORE_METRIC = "contains"


def suite_tasks(suite: str) -> dict[str, tuple[list[EvalItem], dict]]:
    """Return {task: (items, scoring options)} of a suite name: core, standard or all."""
    tasks: dict[str, tuple[list[EvalItem], dict]] = {}
    if suite in ("core", "all"):
        # Wide batches amortise each decoding step on a CPU: 64 was 2x faster than 16, and 160
        # (the 310 items in two batches) 35.0 s against 40.1 s at 64 (2026-11-23, quiet machine);
        # one batch of 310 pads the prompts too much (36.9 s). Replies do not depend on the batch.
        tasks["core"] = (
            core_items(),
            {"metrics": [CORE_METRIC], "max_new_tokens": 32, "batch_size": 160},
        )
    if suite in ("standard", "all"):
        for name, items in standard_tasks().items():
            if name == "triviaqa":
                options = {"metrics": ["normalised"], "max_new_tokens": 24, "stop_at_newline": True}
            else:
                options = {"metrics": ["mc_acc", "mc_acc_norm"]}
            tasks[name] = (items, options)
    if not tasks:
        raise ValueError(f"unknown suite {suite!r}")
    return tasks


def measure_retention(
    model, tokenizer, suite: str = "core", *, as_base: str | None = None, progress: bool = True
) -> dict:
    """Return per-task item scores and summaries (and general-text perplexity) for one model.

    With `as_base` (the content hash of the model being measured, which is a base model), results
    are read from and written to the baseline cache.
    """
    out: dict = {"suite": suite, "tasks": {}}
    for name, (items, options) in suite_tasks(suite).items():
        key = _task_key(name, items, options)
        cached = _load_cached(as_base, key)
        if cached is not None:
            out["tasks"][name] = cached
            continue
        started = time.monotonic()
        result = evaluate_items(
            model, tokenizer, items, progress=f"retention {name}" if progress else None, **options
        )
        entry = {
            "items": result.items,
            "summary": result.summary,
            "seconds": round(time.monotonic() - started, 1),
            "key": key,
        }
        out["tasks"][name] = entry
        _store_cached(as_base, key, entry)
    out["general_perplexity"] = _general_perplexity(model, tokenizer, as_base, progress)
    return out


def measure_drift(model, tokenizer, *, base_model=None, progress: bool = True) -> dict:
    """Return the mean KL(base || model) over general prompts, with its spread."""
    from specialize.evaluate.stats import bootstrap_mean

    values = drift_kl(
        model,
        tokenizer,
        drift_prompts(),
        base_model=base_model,
        progress="drift" if progress else None,
    )
    return {"kl": bootstrap_mean(values).as_dict()}


def compare(before: dict, after: dict, *, budget_points: float | None = None) -> dict:
    """Return per task: base and tuned scores, paired delta (in points) with CI and p, and a verdict."""
    report = {}
    for name, tuned in after["tasks"].items():
        base = before["tasks"].get(name)
        if base is None:
            continue
        metric = headline_metric(tuned["summary"])
        b_scores = {r["id"]: r["scores"][metric] for r in base["items"]}
        paired = [
            (b_scores[r["id"]], r["scores"][metric]) for r in tuned["items"] if r["id"] in b_scores
        ]
        diff = paired_difference([p[0] for p in paired], [p[1] for p in paired])
        report[name] = {
            "metric": metric,
            "base": base["summary"][metric],
            "tuned": tuned["summary"][metric],
            "delta_points": round(100 * diff.delta, 2),
            "delta_ci95_points": [round(100 * diff.low, 2), round(100 * diff.high, 2)],
            "p_value": diff.p_value,
            "test": diff.test,
            "verdict": _verdict(diff, budget_points),
        }
    return report


def overall_verdict(report: dict) -> str:
    """Return one plain sentence over all tasks."""
    lost = [
        f"{name} {r['delta_points']:+.1f} pts"
        for name, r in report.items()
        if r["verdict"].startswith("lost")
    ]
    if lost:
        return "forgetting: significant loss of general ability on " + ", ".join(lost)
    return "no significant loss of general ability"


def _verdict(diff, budget_points: float | None) -> str:
    points = 100 * diff.delta
    if diff.significant and points < 0:
        over = (
            f", beyond the budget of {budget_points:g}"
            if budget_points is not None and -points > budget_points
            else ""
        )
        return f"lost {-points:.1f} points (p={diff.p_value:.3g}{over})"
    if diff.significant and points > 0:
        return f"gained {points:.1f} points (p={diff.p_value:.3g})"
    return f"no significant change ({points:+.1f} points, p={diff.p_value:.3g})"


def headline_metric(summary: dict) -> str:
    """The metric a retention task is judged on (the one place it is chosen)."""
    for name in (CORE_METRIC, "mc_acc_norm", "normalised", "mc_acc"):
        if name in summary:
            return name
    return next(iter(summary))


def _general_perplexity(model, tokenizer, base_hash: str | None, progress: bool) -> dict:
    texts = general_texts()
    key = "general-text-" + sha256_text("\n\n".join(texts) + f"v{SCORING_VERSION}")[:16]
    cached = _load_cached(base_hash, key)
    if cached is not None:
        return cached
    result = perplexity_of_texts(
        model, tokenizer, texts, progress="general perplexity" if progress else None
    )
    _store_cached(base_hash, key, result)
    return result


def _task_key(name: str, items: list[EvalItem], options: dict) -> str:
    fingerprint = json.dumps(
        [[i.id, i.prompt, i.answers, i.context, i.choices, i.gold] for i in items], default=str
    )
    return f"{name}-{sha256_text(fingerprint + json.dumps(options, sort_keys=True) + f'v{SCORING_VERSION}')[:16]}"


def _cache_file(base_hash: str, key: str) -> Path:
    return cache_dir() / "baselines" / base_hash / f"{key}.json"


def _load_cached(base_hash: str | None, key: str) -> dict | None:
    if base_hash is None:
        return None
    path = _cache_file(base_hash, key)
    if path.is_file():
        log.info("base result for %s from cache", key)
        return json.loads(path.read_text())
    return None


def _store_cached(base_hash: str | None, key: str, entry: dict) -> None:
    if base_hash is not None:
        atomic_write_json(_cache_file(base_hash, key), entry)
