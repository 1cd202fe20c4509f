"""Run a sweep: an Optuna study whose every trial is an ordinary training run.

The study lives in `study.db` (SQLite) in the sweep folder, or in any RDB storage Optuna reaches
(`--storage postgresql://...`), so a killed sweep continues and workers on other machines join the
same study. TPE searches one objective (the task score), NSGA-II two (task score up, general
ability lost down). A trial that fails (NaN, out of memory, an error) is recorded with its reason
and the sweep goes on; a trial left running by a kill is failed and its parameters queued again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.trial import TrialState

from specialize.artifacts import sha256_text
from specialize.config import dump_config
from specialize.errors import ConfigError, SpecializeError, TrainingError
from specialize.sweep.config import SweepConfig, override
from specialize.sweep.objectives import measure_trial, task_spec
from specialize.sweep.pruning import TrialPruning, open_signal, val_loss_pruner
from specialize.train.callbacks import extra_callbacks
from specialize.train.config import RecipeConfig, load_recipe
from specialize.train.run import train

log = logging.getLogger(__name__)
INTERRUPTED = (
    "interrupted: the sweep was stopped during this trial; its parameters were queued again"
)


def run_sweep(
    config: SweepConfig, out: Path, *, storage: str | None = None, progress: bool = True
) -> optuna.Study:
    """Run (or continue) the sweep until `config.trials` trials have ended; return the study."""
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we log each trial in our own words
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    with _folder_lock(out):
        rdb = open_storage(url)
        study = _study(config, rdb)
        if storage is None:
            recover_interrupted(study)  # one local worker: anything still running was killed
        _enqueue_start_points(config, study)
        remaining = config.trials - len(ended_trials(study))
        if remaining > 0:
            log.info("sweep %s: %d trial(s) to run", config.name, remaining)
            study.sampler = _sampler(config, len(study.trials))
            # Companion studies are asked and told by hand: a storage without heartbeats.
            objective = TrialObjective(
                config, out, optuna.storages.RDBStorage(url), progress=progress
            )
            study.optimize(
                objective,
                n_trials=remaining,
                catch=(Exception,),
                callbacks=[_stop_when_done(config.trials)],
            )
        else:
            log.info("sweep %s: all %d trials have ended", config.name, config.trials)
    return study


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Return Optuna's RDB storage with heartbeats: a worker that dies mid-trial is noticed by the
    others, its trial failed and its parameters retried (Optuna's own stale-trial handling)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=60,
            grace_period=180,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=2
            ),
        )


def _study(config: SweepConfig, storage) -> optuna.Study:
    directions = ["maximize", "minimize"] if config.two_objectives else ["maximize"]
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        directions=directions,
        sampler=_sampler(config, 0),
        load_if_exists=True,
    )
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        raise ConfigError(
            [
                f"sweep {config.name!r} already exists with objectives {stored}, this config has "
                f"{directions} -- use a new name or a new --out folder"
            ]
        )
    return study


def _sampler(config: SweepConfig, offset: int) -> optuna.samplers.BaseSampler:
    # A resumed sweep seeds past the trials it has, so it does not draw its first points again.
    seed = config.seed + offset
    if config.two_objectives:
        population = config.population_size or max(2, min(50, config.trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fail the trials a kill left running and queue their parameters again; return their numbers."""
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "reason", INTERRUPTED)
        study.tell(trial.number, state=TrialState.FAIL)
        _requeue(study, study.get_trials(deepcopy=True)[trial.number])
        recovered.append(trial.number)
        log.info("trial %d was interrupted; its parameters are queued again", trial.number)
    _fail_running_companions(study)
    return recovered


def _requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue an interrupted trial's parameters again, linked to it as Optuna's own stale-trial
    retry does (system attrs failed_trial, retry_history), without the old trial's results."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs={"failed_trial": history[0], "retry_history": history},
        )
    )


def _fail_running_companions(study: optuna.Study) -> None:
    storage = study._storage
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name.startswith(f"{study.study_name}/prune:"):
            companion = optuna.load_study(study_name=summary.study_name, storage=storage)
            for trial in companion.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                companion.tell(trial.number, state=TrialState.FAIL)


def ended_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Return the trials that count towards the sweep's number: completed, pruned, or failed and
    not queued again (a retried trial counts once, through its retry)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials} | {
        n for t in trials for n in t.system_attrs.get("retry_history", [])
    }
    return [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and t.number not in retried)
    ]


def _enqueue_start_points(config: SweepConfig, study: optuna.Study) -> None:
    if study.user_attrs.get("start_points_queued"):
        return
    for point in config.start_with:
        study.enqueue_trial(point, skip_if_exists=True)
    study.set_user_attr("start_points_queued", True)


def _stop_when_done(total: int):
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ended = len(ended_trials(study))
        values = ", ".join(f"{v:.4g}" for v in trial.values or [])
        log.info(
            "trial %d %s%s (%d of %d trials ended)",
            trial.number,
            trial.state.name.lower(),
            f": {values}" if values else f": {trial.user_attrs.get('reason', '')}",
            ended,
            total,
        )
        if ended >= total:
            study.stop()  # other workers on the same storage may have finished the rest

    return callback


class TrialObjective:
    """One trial: the recipe with the trial's values, an ordinary run, its measurement."""

    def __init__(self, config: SweepConfig, out: Path, storage, *, progress: bool):
        self.config, self.out, self.storage, self.progress = config, out, storage, progress
        self.spec = task_spec(config.objectives.task)
        self.folder_key = sha256_text(str(out.resolve()))[:6]

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = {field: suggest(trial, field, spec) for field, spec in self.config.space.items()}
        run_path, pruning, started = self.run_path(trial.number), None, time.monotonic()
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in params.items()))
        try:
            recipe = self.trial_recipe(params, trial.number)
            trial.set_user_attr("run_dir", str(run_path))
            trial.set_user_attr("run_name", recipe.output.name)
            pruning = self._pruning(recipe)
            with extra_callbacks(*([pruning] if pruning else [])):
                run = train(recipe, progress=self.progress)
            measured = measure_trial(
                recipe.model,
                run.path,
                self.spec,
                self.config.objectives.general,
                self.out / "base-cache",
                progress=self.progress,
            )
            for key, value in measured.items():
                trial.set_user_attr(key, value)
            values = _objective_values(measured, self.config.two_objectives)
        except optuna.TrialPruned as exc:
            self._end(trial, run_path, pruning, TrialState.PRUNED, str(exc), started)
            raise
        except BaseException as exc:
            reason = _reason(exc)
            self._end(trial, run_path, pruning, TrialState.FAIL, reason, started)
            if isinstance(exc, KeyboardInterrupt):
                _requeue(trial.study, trial.study.get_trials(deepcopy=True)[trial.number])
                raise
            log.warning("trial %d failed: %s", trial.number, reason)
            raise
        self._end(trial, run_path, pruning, TrialState.COMPLETE, None, started)
        return values

    def trial_recipe(self, params: dict, number: int) -> RecipeConfig:
        """Return the base recipe with the sweep's fixed overrides and this trial's values."""
        overrides = [*self.config.set, *(override(k, v) for k, v in params.items())]
        recipe = load_recipe(self.config.recipe, overrides)
        recipe.output.name = f"{self.config.name}-t{number:03d}"
        recipe.output.dir = str(self.run_path(number))
        general = self.config.objectives.general
        if general is not None and general.items is not None:
            recipe.retention.suite = "none"  # the sweep measures its own spread of the suite
        elif general is not None and recipe.retention.suite in ("none", "standard"):
            recipe.retention.suite = "core" if recipe.retention.suite == "none" else "all"
        if self._prunes_on_retention() and not _probing(recipe):
            if general.measure == "drift":
                recipe.retention.max_drift = self.config.retention_budget
            else:
                recipe.retention.budget_points = self.config.retention_budget
        return recipe

    def run_path(self, number: int) -> Path:
        """Return the trial's run directory; its name is the run's registry id, so it is unique
        per sweep folder and trial."""
        return (self.out / "runs" / f"{self.config.name}-{self.folder_key}-t{number:03d}").resolve()

    def _prunes_on_retention(self) -> bool:
        return (
            self.config.pruning.retention
            and self.config.retention_budget is not None
            and self.config.objectives.general is not None
        )

    def _pruning(self, recipe: RecipeConfig) -> TrialPruning | None:
        signals = []
        pruner = val_loss_pruner(self.config.pruning)
        if pruner is not None:
            signals.append(open_signal(self.storage, self.config.name, "val_loss", pruner))
        if self._prunes_on_retention() and _probing(recipe):
            threshold = optuna.pruners.ThresholdPruner(upper=self.config.retention_budget)
            signals.append(open_signal(self.storage, self.config.name, "retention", threshold))
        if not signals:
            return None
        drift = self.config.objectives.general and self.config.objectives.general.measure == "drift"
        return TrialPruning(signals, probe_key="drift_kl" if drift else "core_lost_points")

    def _end(self, trial, run_path: Path, pruning, state: TrialState, reason, started) -> None:
        trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
        if reason:
            trial.set_user_attr("reason", reason)
        if pruning is not None:
            pruning.finish(state)
        _register(trial, run_path, self.config.name, state, reason)


def _objective_values(measured: dict, two: bool) -> float | tuple[float, float]:
    """Return the values Optuna optimises; a non-finite one fails the trial with the reason."""
    task = measured["task"]["score"]["mean"]
    values = (task, measured["general"]["value"]) if two else (task,)
    if not all(math.isfinite(v) for v in values):
        raise TrainingError(
            f"an objective value is non-finite ({', '.join(f'{v:.4g}' for v in values)}): "
            "the trial's weights diverged",
            fix="narrow the range of training.learning_rate",
        )
    return values if two else task


def suggest(trial: optuna.Trial, field: str, spec) -> object:
    """Return the trial's value for one searched field."""
    if spec.kind == "choice":
        return trial.suggest_categorical(field, spec.choices)
    if spec.kind == "int":
        return trial.suggest_int(
            field, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log
        )
    return trial.suggest_float(field, spec.low, spec.high, step=spec.step, log=spec.log)


def _probing(recipe: RecipeConfig) -> bool:
    return recipe.retention.budget_points is not None or recipe.retention.max_drift is not None


def _register(trial, run_path: Path, sweep: str, state: TrialState, reason: str | None) -> None:
    """Tag the trial's run (and adapter) with the sweep; a pruned run says so in its record."""
    from specialize.adapters import registry as adapters
    from specialize.track import registry
    from specialize.track.rundir import RunDir
    from specialize.track.runs import add_tag

    run = RunDir(run_path)
    if not (run_path / "run.json").is_file():
        return  # the trial failed before its run directory was written
    record = run.record()
    trial.set_user_attr("run_id", run.id)
    if state == TrialState.PRUNED:
        run.update_record(status="pruned", pruned=reason)
        with contextlib.suppress(SpecializeError):
            registry.update_run(run.id, status="pruned")
    with contextlib.suppress(SpecializeError):
        add_tag(str(run_path), sweep)
    if state == TrialState.COMPLETE:
        name = record.adapter_name
        if name is None:  # the caller of training registers the adapter (train sits below adapters)
            entry = adapters.register_finished(run_path)
            name = entry["name"] if entry else None
        if name:
            adapters.tag(name, sweep)
            trial.set_user_attr("adapter", {"name": name, "path": str(run.adapter)})


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    text = exc.one_line() if isinstance(exc, SpecializeError) else f"{type(exc).__name__}: {exc}"
    if "out of memory" in text.lower():
        text = f"out of memory: {text}"
    return text.splitlines()[0][:500]


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Hold the sweep folder for this process: two local workers would fail each other's trials."""
    handle = open(out / ".lock", "w")  # noqa: SIM115 -- held for the whole sweep
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecializeError(
                "another sweep is running in this folder",
                where=str(out),
                fix="wait for it, or join it from another folder with --storage",
            ) from None
        yield
    finally:
        handle.close()


def describe(config: SweepConfig) -> str:
    """Return the resolved sweep config as YAML (written beside the study)."""
    return dump_config(config)
