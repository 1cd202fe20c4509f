"""What a trial is worth: the task score on validation items and the general ability it kept.

Task score: a ladder task (its metric, category and answer length) or an eval file, scored on the
run's validation items, never the test split; the gain is paired against the base on the same
items. General ability: points lost on the core retention suite (the run's own measurement, or an
even spread of N core questions) or drift (KL from the base). Base numbers are cached in the
sweep folder, so each trial pays only for its own side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from specialize.artifacts import (
    DatasetManifest,
    RetentionReport,
    RunRecord,
    atomic_write_json,
    sha256_text,
)
from specialize.errors import DataError
from specialize.evaluate.evaluation import LoadedModels, load_for_eval
from specialize.evaluate.metrics import BINARY_METRICS
from specialize.evaluate.retention import CORE_METRIC
from specialize.evaluate.runner import drift_kl
from specialize.evaluate.stats import bootstrap_mean, paired_difference
from specialize.evaluate.suites import core_items, drift_prompts
from specialize.evaluate.tasks import EvalItem, evaluate_items, load_eval_items
from specialize.sweep.config import GeneralObjective, TaskObjective

TRIAL_FILE = "sweep-trial.json"  # written into each trial's run directory: every item and score


@dataclass(frozen=True)
class TaskSpec:
    """The task a sweep optimises, resolved from a ladder or an eval file."""

    name: str
    metric: str
    category: str | None
    max_new_tokens: int
    limit: int | None
    data: str | None  # an eval file of validation items; None: the run's own validation split
    system: str | None


def task_spec(objective: TaskObjective) -> TaskSpec:
    """Return the task to score; a ladder task keeps its metric, category and answer length."""
    if objective.ladder is not None:
        from specialize.ladder.config import load_ladder

        task = next(t for t in load_ladder(objective.ladder).tasks if t.name == objective.name)
        # Items as in training (the tuned rung's way), so no engineered system prompt.
        return TaskSpec(
            task.name, task.metric, task.category, task.max_new_tokens, objective.limit, None, None
        )
    return TaskSpec(
        Path(objective.data).stem,
        objective.metric,
        objective.category,
        objective.max_new_tokens,
        objective.limit,
        objective.data,
        objective.system,
    )


def validation_items(spec: TaskSpec, run_path: Path) -> list[EvalItem]:
    """Return the task's validation items: the eval file, or the run's validation split."""
    files = [Path(spec.data)] if spec.data else validation_files(run_path)
    if not files:
        raise DataError(
            "the run has no validation split to score the task on",
            where=str(run_path),
            fix="give the recipe validation data (data.val, or a val split), or objectives.task.data",
        )
    items = [item for file in files for item in load_eval_items(file, system=spec.system)]
    if spec.category is not None:
        items = [i for i in items if i.category == spec.category]
    if not items:
        raise DataError(
            f"no validation items for task {spec.name!r}"
            + (f" with category {spec.category!r}" if spec.category else ""),
            where=", ".join(map(str, files)),
        )
    return items[: spec.limit] if spec.limit else items


def validation_files(run_path: Path) -> list[Path]:
    """Return the validation files a run used: its data.val, else the val splits it prepared or read."""
    import yaml

    config = yaml.safe_load((run_path / "config.yaml").read_text())
    given = [Path(p) for p in config["data"].get("val") or [] if Path(p).is_file()]
    if given:
        return given
    files = []
    for ref in RunRecord.read(run_path / "run.json").data or []:
        if DatasetManifest.read(ref["path"]).replay:
            continue  # general replay data, not the task (the manifest says so)
        val = Path(ref["path"]).parent / "val.jsonl"
        if val.is_file() and val.stat().st_size:
            files.append(val)
    return files


def measure_trial(
    model_ref: str,
    run_path: Path,
    spec: TaskSpec,
    general: GeneralObjective | None,
    cache: Path,
    *,
    progress: bool,
) -> dict:
    """Return the trial's task score (with the gain over the base) and its general ability, and
    write every item into the run directory."""
    items = validation_items(spec, run_path)
    loaded = load_for_eval(model_ref, run_path)
    task, task_items = _task(loaded, items, spec, cache, progress)
    result = {"task": task}
    details = {"task_items": task_items}
    if general is not None:
        result["general"], details["general_items"] = _general(
            loaded, run_path, general, cache, progress
        )
    atomic_write_json(run_path / TRIAL_FILE, {**result, **details})
    return result


def _task(loaded: LoadedModels, items, spec: TaskSpec, cache: Path, progress: bool):
    options = {"metrics": [spec.metric], "max_new_tokens": spec.max_new_tokens}
    key = _key("task", loaded.base_hash, items, options)
    base = _cached(cache, key, lambda: _score_base(loaded, items, options, progress))
    tuned = evaluate_items(
        loaded.model,
        loaded.tokenizer,
        items,
        progress="task (validation)" if progress else None,
        **options,
    )
    before = [base["scores"][i.id] for i in items]
    after = [row["scores"][spec.metric] for row in tuned.items]
    gain = paired_difference(before, after)
    task = {
        "name": spec.name,
        "metric": spec.metric,
        "binary": spec.metric in BINARY_METRICS,
        "score": tuned.summary[spec.metric],
        "base": base["summary"][spec.metric],
        "gain_points": round(100 * gain.delta, 2),
        "gain_ci95_points": [round(100 * gain.low, 2), round(100 * gain.high, 2)],
        "p_value": gain.p_value,
        "test": gain.test,
        "n": gain.n,
        "items_from": spec.data or "the run's validation split",
    }
    return task, tuned.items


def _general(
    loaded: LoadedModels, run_path: Path, general: GeneralObjective, cache: Path, progress: bool
):
    if general.items is None:
        return _from_run(run_path, general), None
    if general.measure == "drift":
        values = drift_kl(
            loaded.model,
            loaded.tokenizer,
            drift_prompts(general.items),
            base_model=loaded.base_model,
            progress="drift" if progress else None,
        )
        kl = bootstrap_mean(values)
        return _drift_row(kl.as_dict(), f"{general.items} general prompts"), values
    items = core_spread(general.items)
    options = {"metrics": [CORE_METRIC], "max_new_tokens": 32, "batch_size": 64}
    key = _key("core", loaded.base_hash, items, options)
    base = _cached(cache, key, lambda: _score_base(loaded, items, options, progress))
    tuned = evaluate_items(
        loaded.model,
        loaded.tokenizer,
        items,
        progress="retention (core spread)" if progress else None,
        **options,
    )
    diff = paired_difference(
        [base["scores"][i.id] for i in items], [r["scores"][CORE_METRIC] for r in tuned.items]
    )
    row = _retention_row(
        100 * diff.delta,
        [100 * diff.low, 100 * diff.high],
        diff.p_value,
        diff.n,
        base["summary"][CORE_METRIC]["mean"],
        tuned.summary[CORE_METRIC]["mean"],
        f"an even spread of {len(items)} core questions",
    )
    return row, tuned.items


def core_spread(count: int) -> list[EvalItem]:
    """Return an even spread of `count` core questions (the retention probe's way)."""
    items = core_items()
    return items[:: max(1, len(items) // count)][:count]


def _from_run(run_path: Path, general: GeneralObjective) -> dict:
    """Return general ability from the run's own retention measurement (retention.json)."""
    path = run_path / "retention.json"
    if not path.is_file():
        raise DataError(
            "the run did not measure retention", where=str(run_path), fix="keep retention.suite on"
        )
    report = RetentionReport.read(path)
    if general.measure == "drift":
        return _drift_row(report.drift["kl"], "the run's drift measurement")
    core = report.comparison["core"]
    low, high = core["delta_ci95_points"]
    return _retention_row(
        core["delta_points"],
        [low, high],
        core["p_value"],
        core["tuned"]["n"],
        core["base"]["mean"],
        core["tuned"]["mean"],
        f"the run's core retention suite ({core['tuned']['n']} questions)",
    )


def _retention_row(delta, ci, p_value, n, base, tuned, source) -> dict:
    return {
        "measure": "retention",
        "unit": "points lost",
        "value": round(-delta, 2) + 0.0,  # points of general ability lost (negative: gained)
        "ci95": [round(-ci[1], 2) + 0.0, round(-ci[0], 2) + 0.0],
        "p_value": p_value,
        "n": n,
        "base": base,
        "tuned": tuned,
        "source": source,
    }


def _drift_row(kl: dict, source: str) -> dict:
    return {
        "measure": "drift",
        "unit": "KL from the base",
        "value": kl["mean"],
        "ci95": kl["ci95"],
        "n": kl["n"],
        "source": source,
    }


def _score_base(loaded: LoadedModels, items, options: dict, progress: bool) -> dict:
    """Return the base model's per-item scores and summary on `items`."""
    metric = options["metrics"][0]
    label = "base" if progress else None
    if loaded.base_model is not None:
        result = evaluate_items(
            loaded.base_model, loaded.tokenizer, items, progress=label, **options
        )
    else:
        with loaded.model.disable_adapter():
            result = evaluate_items(
                loaded.model, loaded.tokenizer, items, progress=label, **options
            )
    return {
        "scores": {row["id"]: row["scores"][metric] for row in result.items},
        "summary": result.summary,
    }


def _key(kind: str, base_hash: str, items: list[EvalItem], options: dict) -> str:
    content = json.dumps(
        [base_hash, options, [(i.id, i.prompt, i.answers) for i in items]],
        sort_keys=True,
        default=str,
    )
    return f"{kind}-{sha256_text(content)[:16]}"


def _cached(cache: Path, key: str, compute) -> dict:
    path = cache / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_json(path, value)
    return value
