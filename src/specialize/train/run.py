"""Start, resume and finish a training run: run directory, environment, registry; the method
itself (builder, checks, after-training steps) comes from its entry in train/methods.py."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from pathlib import Path

import yaml
from transformers import set_seed

from specialize.artifacts import atomic_write_json, atomic_write_text, sha256_file, sha256_text
from specialize.config import build_config, dump_config
from specialize.errors import TrainingError
from specialize.models.loading import content_hash, resolve_model
from specialize.track import registry
from specialize.track.environment import capture_environment
from specialize.track.report import write_run_report
from specialize.track.rundir import RunDir, new_run_dir, open_run_dir
from specialize.track.runs import check_data_unchanged, find_run
from specialize.train.callbacks import complete_checkpoints
from specialize.train.config import RecipeConfig
from specialize.train.datasets import run_datasets
from specialize.train.methods import METHODS, Method, check_recipe, method_of  # noqa: F401
from specialize.train.precision import Precision, choose_precision
from specialize.train.trainer import Outcome

log = logging.getLogger(__name__)


def train(recipe: RecipeConfig, *, progress: bool = True) -> RunDir:
    """Run a recipe from scratch; return its run directory."""
    run = _start(recipe)
    _execute(recipe, run, resume_from=None, progress=progress)
    return run


def resume(run_dir: str | Path, *, progress: bool = True) -> RunDir:
    """Continue a run after an interruption from its last complete checkpoint."""
    run = open_run_dir(run_dir)
    recipe = build_config(RecipeConfig, yaml.safe_load(run.config.read_text()), source=run.config)
    checkpoints = complete_checkpoints(run.checkpoints)
    _discard_partial_checkpoints(run)
    last = checkpoints[-1] if checkpoints else None
    step = int(last.name.rsplit("-", 1)[1]) if last else 0
    run.drop_metrics_after(step)
    log.info("resuming %s from %s", run.path, last.name if last else "the start")
    _execute(recipe, run, resume_from=str(last) if last else None, progress=progress)
    return run


def _start(recipe: RecipeConfig) -> RunDir:
    check_recipe(recipe)
    name = recipe.output.name or f"{recipe.method}-{Path(recipe.model).name}"
    if _world_size() > 1 and recipe.output.dir is None:
        raise TrainingError(
            "distributed runs need output.dir",
            fix="set output.dir so every process writes to the same run",
        )
    if recipe.output.dir is not None:  # recorded absolute: valid from any folder later
        recipe.output.dir = str(Path(recipe.output.dir).expanduser().resolve())
    run = new_run_dir(name, recipe.output.dir) if _is_main() else RunDir(Path(recipe.output.dir))
    if _is_main():
        atomic_write_text(run.config, dump_config(recipe))
        run.update_record(
            name=name,
            method=recipe.method,
            model=recipe.model,
            status="created",
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
    return run


def _execute(recipe: RecipeConfig, run: RunDir, *, resume_from: str | None, progress: bool) -> None:
    """start -> train -> after-training steps -> end."""
    method = method_of(recipe)
    precision = choose_precision(recipe.training.precision)
    log.info("precision: %s (%s)", precision.name, precision.reason)
    set_seed(recipe.training.seed)
    if _is_main():
        _record_start(recipe, run, precision, resumed=resume_from is not None)
    started = time.monotonic()
    try:
        outcome = method.train(recipe, run, precision, resume_from=resume_from, progress=progress)
    except BaseException as exc:
        if _is_main():
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = {"error": f"{type(exc).__name__}: {exc}"}
            _record_end(run, status, error, time.monotonic() - started)
        raise
    summary = dict(outcome.__dict__)
    if _is_main() and not outcome.nonfinite:
        summary |= _after_training(method, recipe, run, progress)
    if _is_main():
        status = "failed" if outcome.nonfinite else "finished"
        _record_end(run, status, summary, time.monotonic() - started)
        _write_report(run)
    if outcome.nonfinite:
        _raise_nonfinite(run, outcome)


def _after_training(method: Method, recipe: RecipeConfig, run: RunDir, progress: bool) -> dict:
    """Run the method's after-training steps; return what they add to the run's outcome."""
    added = {}
    for step in method.after:
        result = step.run(recipe, run, progress)
        if result is None:
            continue
        if step.key is not None:
            added[step.key] = result
        else:
            added |= result
    return added


def _raise_nonfinite(run: RunDir, outcome: Outcome) -> None:
    kept = [p.name for p in complete_checkpoints(run.checkpoints)]
    raise TrainingError(
        outcome.stop_reason
        + f"; kept the last good checkpoint ({kept[-1] if kept else 'none saved yet'})",
        where=str(run.path),
        fix="lower training.learning_rate (and check the data for extreme rows)",
    )


def _write_report(run: RunDir) -> None:
    try:
        log.info("report: %s", write_run_report(run.path, RecipeConfig))
    except Exception as exc:  # the run's files are complete; `specialize runs report` can retry
        log.warning(
            "the run's report was not written (%s: %s); run `specialize runs report %s`",
            type(exc).__name__,
            exc,
            run.path,
        )


def _record_start(
    recipe: RecipeConfig, run: RunDir, precision: Precision, *, resumed: bool
) -> None:
    base = resolve_model(recipe.model)
    env = capture_environment(
        seed=recipe.training.seed,
        precision={"name": precision.name, "reason": precision.reason},
        world_size=_world_size(),
        resumed=resumed,
    )
    atomic_write_json(run.env, env)
    base_hash = content_hash(base.path)
    record = run.update_record(
        status="running",
        base_model={"ref": recipe.model, "path": str(base.path), "content_hash": base_hash},
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    registry.record_run(
        {
            "id": run.id,
            "name": record.name,
            "path": str(run.path),
            "method": recipe.method,
            "base_model": recipe.model,
            "base_hash": base_hash,
            "data_hash": None,
            "config_json": recipe.model_dump(mode="json"),
            "status": "running",
            "started_at": record.started,
        }
    )


def _record_end(run: RunDir, status: str, summary: dict, seconds: float) -> None:
    data = _data_manifests(run)
    finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    run.update_record(
        status=status,
        finished=finished,
        duration_s=round(seconds, 1),
        outcome=summary,
        data=data,
        data_hash=_data_hash(data),
    )
    registry.update_run(
        run.id,
        status=status,
        finished_at=finished,
        duration_s=round(seconds, 1),
        summary_json=summary,
        data_hash=_data_hash(data),
    )


def _data_manifests(run: RunDir) -> list[dict]:
    """Return references to every data manifest the run read (prepared in the run or given)."""
    return [
        {
            "path": str(data.path / "manifest.json"),
            "sha256": sha256_file(data.path / "manifest.json"),
            "outputs": {k: v["sha256"] for k, v in data.manifest.outputs.items()},
            "replay": data.replay,
        }
        for data in run_datasets(run)
    ]


def _data_hash(refs: list[dict]) -> str | None:
    return sha256_text("".join(sorted(r["outputs"]["train"] for r in refs))) if refs else None


def reproduce(ref: str, *, progress: bool = True) -> RunDir:
    """Re-run a registered run from its resolved config into a new run directory; return it."""
    found = find_run(ref)
    path = Path(found["path"])
    check_data_unchanged(path)
    recipe = build_config(
        RecipeConfig,
        yaml.safe_load((path / "config.yaml").read_text()),
        source=path / "config.yaml",
    )
    recipe.output.dir = None
    recipe.output.name = f"{found['name']}-repro"
    return train(recipe, progress=progress)


def _discard_partial_checkpoints(run: RunDir) -> None:
    complete = {p.name for p in complete_checkpoints(run.checkpoints)}
    for path in run.checkpoints.glob("checkpoint-*"):
        if path.name not in complete:
            log.info("discarding incomplete %s", path.name)
            shutil.rmtree(path, ignore_errors=True)


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
