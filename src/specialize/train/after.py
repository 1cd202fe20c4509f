"""Steps that run after training, on the main process, when the loss stayed finite: retention
against the base, the reward model's win rate over the start, base/tuned samples for the report.

A method's entry in train/methods.py lists the steps that apply to it. A step returns what goes
into the run's outcome under its `key` (or None: nothing to record).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from specialize.artifacts import RetentionReport
from specialize.data.records import prompt_messages
from specialize.evaluate.evaluation import load_for_eval, retention_eval
from specialize.track.report import RETENTION_FILE
from specialize.track.rundir import RunDir
from specialize.train.config import RecipeConfig
from specialize.train.datasets import read_split, run_datasets
from specialize.train.judge import load_judge, win_rate
from specialize.train.samples import write_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AfterStep:
    """One after-training step: `key` names its entry in the run's outcome; with None the step
    writes files only, or returns a dict whose own keys join the outcome."""

    key: str | None
    run: Callable[[RecipeConfig, RunDir, bool], dict | None]


def measure_retention_after(
    recipe: RecipeConfig, run: RunDir, progress: bool = True
) -> dict | None:
    """Measure general ability of the trained result against the base (base side cached).

    Writes retention.json into the run directory and returns the headline for run.json.
    """
    if recipe.retention.suite == "none":
        return None
    loaded = load_for_eval(recipe.model, run.path)
    report = RetentionReport.from_dict(
        retention_eval(
            loaded, recipe.retention.suite, progress, budget_points=recipe.retention.budget_points
        )
    )
    report.write(run.path / RETENTION_FILE)
    log.info("retention: %s", report.verdict)
    return report.headline()


def retention_not_applicable(recipe: RecipeConfig, run: RunDir, progress: bool = True) -> dict:
    """A reward model scores text rather than writing it: generation-based retention does not apply."""
    return {"suite": "none", "why": "a reward model scores text; it does not generate"}


def judged_win_rate(recipe: RecipeConfig, run: RunDir, progress: bool = True) -> dict | None:
    """Reward-model win rate of the tuned model over its start, on the run's held-out prompts."""
    if not recipe.preference.reward_model:
        return None
    prompts = [
        p
        for data in run_datasets(run, replay=False)
        for p in map(prompt_messages, read_split(data, "val"))
        if p
    ]
    if not prompts:
        return {"note": "no held-out prompts (the val split is empty)"}
    judge = load_judge(recipe.preference.reward_model, recipe.model)
    result = win_rate(judge, recipe.model, run.path, prompts, recipe.preference.max_new_tokens)
    log.info(
        "win rate over the start: %.3f [%.3f, %.3f], n=%d",
        result["win_rate"],
        *result["ci95"],
        result["n"],
    )
    return result


def record_samples(recipe: RecipeConfig, run: RunDir, progress: bool = True) -> None:
    """Base and tuned answers to a few validation chats of the run's own data, for its report."""
    rows = [row for data in run_datasets(run, replay=False) for row in read_split(data, "val")[:10]]
    rows = [r for r in rows if "images" not in r]  # text answers to image questions say nothing
    write_samples(recipe.model, run, rows)


RETENTION = AfterStep("retention", measure_retention_after)
NO_RETENTION = AfterStep("retention", retention_not_applicable)
WIN_RATE = AfterStep("win_rate", judged_win_rate)
SAMPLES = AfterStep(None, record_samples)


def speech_after(recipe: RecipeConfig, run: RunDir, progress: bool = True) -> dict:
    """WER on the run's test recordings and on general speech, base against tuned."""
    from specialize.train.asr import evaluate_after

    return evaluate_after(recipe, run, progress=progress)


# `test_wer` and `retention` (general-speech WER before and after, paired, with its verdict).
SPEECH = AfterStep(None, speech_after)
