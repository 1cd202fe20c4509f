"""A sweep's results from its study: every trial, the Pareto front of task gain against general
ability lost, parameter importances, and the recommendation within the retention budget."""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from specialize.artifacts import SweepRecord
from specialize.sweep.config import SweepConfig

log = logging.getLogger(__name__)
SWEEP_SCHEMA_VERSION = SweepRecord.schema_version
MIN_TRIALS_FOR_IMPORTANCE = 3


def sweep_results(config: SweepConfig, study: optuna.Study, out: Path) -> dict:
    """Return sweep.json's content."""
    trials = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    measured = [t for t in trials if t["state"] == "complete" and t.get("task")]
    front = pareto_front(measured)
    return {
        "schema_version": SWEEP_SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "name": config.name,
        "folder": str(out),
        "sampler": type(study.sampler).__name__,
        "objectives": {
            "task": config.objectives.task.model_dump(mode="json"),
            "general": config.objectives.general.model_dump(mode="json")
            if config.objectives.general
            else None,
        },
        "retention_budget": config.retention_budget,
        "counts": _counts(trials),
        "trials": trials,
        "front": [t["number"] for t in front],
        "importances": importances(config, study),
        "recommendation": recommend(measured, config.retention_budget),
    }


def write_results(config: SweepConfig, study: optuna.Study, out: Path) -> dict:
    """Write sweep.json and sweep.html into the sweep folder; return the results."""
    from specialize.sweep.report import write_sweep_page

    results = sweep_results(config, study, out)
    SweepRecord.from_dict(results).write(out / "sweep.json")
    write_sweep_page(results, out / "sweep.html")
    return results


def trial_row(trial: optuna.trial.FrozenTrial) -> dict:
    """Return one trial as sweep.json lists it."""
    attrs = trial.user_attrs
    seconds = attrs.get("seconds")
    if seconds is None and trial.datetime_start and trial.datetime_complete:
        seconds = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "params": trial.params,
        "run_id": attrs.get("run_id"),
        "run_name": attrs.get("run_name"),
        "run_dir": attrs.get("run_dir"),
        "adapter": attrs.get("adapter"),
        "task": attrs.get("task"),
        "general": attrs.get("general"),
        "reason": attrs.get("reason"),
        "retry_of": trial.system_attrs.get("failed_trial"),
        "seconds": seconds,
    }


def pareto_front(trials: list[dict]) -> list[dict]:
    """Return the trials no other trial beats on both task score (higher; the gain over the base
    is the score less one shared base score) and general ability lost (lower), best first.
    Without a general measure: the best task score."""
    if not trials:
        return []
    if any(t.get("general") is None for t in trials):
        best = max(_score(t) for t in trials)
        return [t for t in trials if _score(t) == best]

    def dominates(a: dict, b: dict) -> bool:
        la, lb = a["general"]["value"], b["general"]["value"]
        return _score(a) >= _score(b) and la <= lb and (_score(a) > _score(b) or la < lb)

    front = [t for t in trials if not any(dominates(o, t) for o in trials)]
    return sorted(front, key=lambda t: (-_score(t), t["general"]["value"]))


def _score(trial: dict) -> float:
    return trial["task"]["score"]["mean"]


def recommend(trials: list[dict], budget: float | None) -> dict:
    """Return the trial with the best task score among those within the retention budget."""
    if not trials:
        return {"trial": None, "why": "no trial completed"}
    within = [
        t
        for t in trials
        if budget is None or (t.get("general") and t["general"]["value"] <= budget)
    ]
    if not within:
        lost = min(t["general"]["value"] for t in trials)
        return {
            "trial": None,
            "why": f"no completed trial stayed within the retention budget of {budget:g} "
            f"(the least lost was {lost:.2f} {trials[0]['general']['unit']})",
        }
    best = max(
        within,
        key=lambda t: (t["task"]["score"]["mean"], -(t["general"] or {}).get("value", 0.0)),
    )
    task = best["task"]
    score = task["score"]
    why = (
        f"best {task['metric']} on {task['name']} ({score['mean']:.3f} "
        f"[{score['ci95'][0]:.3f}, {score['ci95'][1]:.3f}], n={score['n']}; "
        f"{task['gain_points']:+.1f} points over the base)"
    )
    if budget is not None:
        general = best["general"]
        why += (
            f" among {len(within)} of {len(trials)} completed trial(s) within the budget of "
            f"{budget:g} {general['unit']} (this one: {general['value']:.2f} "
            f"[{general['ci95'][0]:.2f}, {general['ci95'][1]:.2f}])"
        )
    return {
        "trial": best["number"],
        "params": best["params"],
        "run_id": best["run_id"],
        "run_dir": best["run_dir"],
        "adapter": best["adapter"],
        "why": why,
    }


def importances(config: SweepConfig, study: optuna.Study) -> dict:
    """Return Optuna's parameter importances per objective, once enough trials completed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE or len(config.space) < 1:
        return {
            "note": f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials "
            f"({len(complete)} so far)"
        }
    names = ["task_score", "general_lost"][: len(study.directions)]
    found: dict = {"completed_trials": len(complete), "evaluator": "PedAnovaImportanceEvaluator"}
    for index, name in enumerate(names):
        if len({t.values[index] for t in complete}) == 1:
            found[name] = {"note": "every completed trial has the same value; nothing to attribute"}
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = optuna.importance.get_param_importances(
                    study, target=lambda t, i=index: t.values[i]
                )
            found[name] = {k: round(float(v), 4) for k, v in values.items()}
        except (ValueError, RuntimeError) as exc:  # e.g. every trial drew the same values
            found[name] = {"note": f"not computable: {exc}"}
    return found


def _counts(trials: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial["state"]] = counts.get(trial["state"], 0) + 1
    return counts
