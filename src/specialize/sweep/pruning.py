"""Pruning a trial from inside its training run: Optuna pruners fed with the validation loss and
the retention probe.

Optuna's `Trial.report` does not support multi-objective studies, so each signal has its own
single-objective companion study in the same storage (`<sweep>/prune:val_loss`, lower is better):
each trial asks one companion trial per signal, reports the signal at every evaluation or
checkpoint, and the signal's pruner compares it with the companion trials that finished. The same
mechanism serves one and two objectives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from transformers import TrainerCallback

from specialize.sweep.config import PruningSection
from specialize.train.retention import PROBE_FILE


def val_loss_pruner(section: PruningSection) -> optuna.pruners.BasePruner | None:
    """Return the configured Optuna pruner for the validation loss (None: never prune on it)."""
    if section.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=section.startup_trials, n_warmup_steps=section.warmup_steps
        )
    if section.pruner == "percentile":
        return optuna.pruners.PercentilePruner(
            section.percentile,
            n_startup_trials=section.startup_trials,
            n_warmup_steps=section.warmup_steps,
        )
    if section.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return None


@dataclass
class Signal:
    """One pruning signal: where its value comes from, its companion study and trial."""

    name: str
    study: optuna.Study
    trial: optuna.Trial
    last: float | None = None
    steps: list[int] = field(default_factory=list)


def open_signal(storage, sweep: str, name: str, pruner: optuna.pruners.BasePruner) -> Signal:
    """Return a fresh companion trial for `name` in the sweep's storage."""
    study = optuna.create_study(
        study_name=f"{sweep}/prune:{name}",
        storage=storage,
        direction="minimize",
        pruner=pruner,
        load_if_exists=True,
    )
    return Signal(name, study, study.ask())


class TrialPruning(TrainerCallback):
    """Reports validation loss (each evaluation) and the retention probe (each checkpoint) to
    their pruners; raises optuna.TrialPruned, which ends the run, when one says so."""

    def __init__(self, signals: list[Signal], probe_key: str = "core_lost_points"):
        self.signals = {s.name: s for s in signals}
        self.probe_key = probe_key
        self.pruned: str | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics and "val_loss" in self.signals:
            self._feed(self.signals["val_loss"], metrics["eval_loss"], state.global_step)

    def on_save(self, args, state, control, **kwargs):
        signal = self.signals.get("retention")
        probe = Path(args.output_dir) / f"checkpoint-{state.global_step}" / PROBE_FILE
        if signal is not None and probe.is_file():
            value = json.loads(probe.read_text()).get(self.probe_key)
            if value is not None:
                self._feed(signal, value, state.global_step)

    def _feed(self, signal: Signal, value: float, step: int) -> None:
        if not math.isfinite(value):
            return  # the non-finite guard stops the run and says why
        signal.trial.report(value, step)
        signal.last = value
        signal.steps.append(step)
        if signal.trial.should_prune():
            what = (
                "validation loss"
                if signal.name == "val_loss"
                else f"retention probe ({self.probe_key})"
            )
            pruner = type(signal.study.pruner).__name__
            self.pruned = f"pruned at step {step}: {what} {value:.4g} ({pruner})"
            raise optuna.TrialPruned(self.pruned)

    def finish(self, state: TrialState) -> None:
        """Close every companion trial: its last value when the trial completed, else its state."""
        for signal in self.signals.values():
            if state == TrialState.COMPLETE and signal.last is not None:
                signal.study.tell(signal.trial, signal.last)
            elif state == TrialState.PRUNED and signal.last is not None:
                signal.study.tell(signal.trial, state=TrialState.PRUNED)
            else:
                signal.study.tell(signal.trial, state=TrialState.FAIL)
