"""Start, resume and finish a training run: run directory, environment, registry, one recipe per method."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from specialize.artifacts import atomic_write_json, atomic_write_text
from specialize.config import build_config, dump_config
from specialize.errors import TrainingError
from specialize.track import registry
from specialize.track.environment import capture_environment
from specialize.track.rundir import RunDir, new_run_dir, open_run_dir
from specialize.train.callbacks import complete_checkpoints
from specialize.train.config import RecipeConfig
from specialize.train.cpt import train_cpt
from specialize.train.dpo import train_dpo
from specialize.train.precision import Precision, choose_precision
from specialize.train.reward import train_reward
from specialize.train.rl import train_rl
from specialize.train.sft import train_sft
from specialize.train.trainer import Outcome

log = logging.getLogger(__name__)

# One entry per method; a new method is one line here and one recipe module.
METHODS: dict[str, Callable[..., Outcome]] = {
    "sft": train_sft,
    "cpt": train_cpt,
    "dpo": train_dpo,
    "reward": train_reward,
    "rl": train_rl,
}
# A reward model scores text rather than writing it: generation-based retention does not apply.
SCORERS = {"reward"}
# Methods whose result the reward model judges against the starting point (win rate).
JUDGED = {"dpo", "rl"}


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
    name = recipe.output.name or f"{recipe.method}-{Path(recipe.model).name}"
    if _world_size() > 1 and recipe.output.dir is None:
        raise TrainingError(
            "distributed runs need output.dir",
            fix="set output.dir so every process writes to the same run",
        )
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
    from transformers import set_seed

    precision = choose_precision(recipe.training.precision)
    log.info("precision: %s (%s)", precision.name, precision.reason)
    set_seed(recipe.training.seed)
    if _is_main():
        _record_start(recipe, run, precision, resumed=resume_from is not None)
    started = time.monotonic()
    try:
        outcome = METHODS[recipe.method](
            recipe, run, precision, resume_from=resume_from, progress=progress
        )
    except BaseException as exc:
        if _is_main():
            _record_end(
                run,
                "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted",
                {"error": f"{type(exc).__name__}: {exc}"},
                time.monotonic() - started,
            )
        raise
    status = "failed" if outcome.nonfinite else "finished"
    summary = dict(outcome.__dict__)
    if (
        _is_main()
        and not outcome.nonfinite
        and recipe.method in JUDGED
        and recipe.preference.reward_model
    ):
        summary["win_rate"] = _win_rate(recipe, run)
    if recipe.method in SCORERS:
        summary["retention"] = {
            "suite": "none",
            "why": "a reward model scores text; it does not generate",
        }
    elif _is_main() and not outcome.nonfinite and recipe.retention.suite != "none":
        summary["retention"] = measure_retention_after(recipe, run, progress=progress)
    if _is_main():
        if not outcome.nonfinite and recipe.method not in SCORERS:
            _record_samples(recipe, run)
        _record_end(run, status, summary, time.monotonic() - started)
        if status == "finished":
            _register_adapter(run)
        _write_report(run)
    if outcome.nonfinite:
        kept = [p.name for p in complete_checkpoints(run.checkpoints)]
        raise TrainingError(
            outcome.stop_reason
            + f"; kept the last good checkpoint ({kept[-1] if kept else 'none saved yet'})",
            where=str(run.path),
            fix="lower training.learning_rate (and check the data for extreme rows)",
        )


def measure_retention_after(recipe: RecipeConfig, run: RunDir, *, progress: bool) -> dict:
    """Measure general ability of the trained result against the base (base side cached).

    Writes retention.json into the run directory and returns the headline for run.json.
    """
    from specialize.evaluate.evaluation import load_for_eval, retention_eval

    loaded = load_for_eval(recipe.model, run.path)
    report = retention_eval(
        loaded, recipe.retention.suite, progress, budget_points=recipe.retention.budget_points
    )
    atomic_write_json(run.path / "retention.json", report)
    headline = {
        name: {
            k: row[k] for k in ("metric", "delta_points", "delta_ci95_points", "p_value", "verdict")
        }
        | {"base": row["base"]["mean"], "tuned": row["tuned"]["mean"]}
        for name, row in report["comparison"].items()
    }
    log.info("retention: %s", report["verdict"])
    return {
        "suite": recipe.retention.suite,
        "verdict": report["verdict"],
        "tasks": headline,
        "drift_kl": report["drift"]["kl"]["mean"],
        "general_perplexity": report["general_perplexity"],
    }


def _win_rate(recipe: RecipeConfig, run: RunDir) -> dict:
    """Reward-model win rate of the tuned model over its start, on the run's held-out prompts."""
    import json

    prompts = []
    for manifest in _data_manifests(run):
        val = Path(manifest["path"]).parent / "val.jsonl"
        for line in val.read_text().splitlines() if val.is_file() else []:
            row = json.loads(line)
            prompt = row.get("prompt") or (row.get("messages") or [])[:-1]
            if isinstance(prompt, list) and prompt:
                prompts.append(prompt)
    if not prompts:
        return {"note": "no held-out prompts (the val split is empty)"}
    from specialize.train.reward import win_rate

    result = win_rate(recipe, run, prompts)
    log.info(
        "win rate over the start: %.3f [%.3f, %.3f], n=%d",
        result["win_rate"],
        *result["ci95"],
        result["n"],
    )
    return result


def _record_samples(recipe: RecipeConfig, run: RunDir) -> None:
    """Base and tuned answers to a few validation chats of the run's own data, for its report."""
    import json

    from specialize.track.report import write_samples

    rows = []
    for manifest in _data_manifests(run):
        body = json.loads(Path(manifest["path"]).read_text())
        if any("/replay/" in item["path"] for item in body["inputs"]):
            continue  # general replay data, not the task
        val = Path(manifest["path"]).parent / "val.jsonl"
        if val.is_file():
            rows += [json.loads(line) for line in val.read_text().splitlines()[:10] if line]
    rows = [r for r in rows if "images" not in r]  # text answers to image questions say nothing
    write_samples(recipe.model, run, rows)


def _register_adapter(run: RunDir) -> None:
    """Put the run's adapter in the adapter registry under the run's name."""
    from specialize.adapters.registry import register_run

    entry = register_run(run.path, run.record())
    if entry is not None:
        run.update_record(adapter_name=entry["name"])
        log.info("adapter registered as %r", entry["name"])


def _write_report(run: RunDir) -> None:
    from specialize.track.report import write_run_report

    try:
        log.info("report: %s", write_run_report(run.path))
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
    from specialize.models.loading import content_hash, resolve_model

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
            "name": record["name"],
            "path": str(run.path),
            "method": recipe.method,
            "base_model": recipe.model,
            "base_hash": base_hash,
            "data_hash": None,
            "config_json": recipe.model_dump(mode="json"),
            "status": "running",
            "started_at": record["started"],
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
    import json

    from specialize.artifacts import sha256_file

    refs = []
    for manifest in sorted(run.path.glob("data/*/manifest.json")):
        body = json.loads(manifest.read_text())
        refs.append(
            {
                "path": str(manifest),
                "sha256": sha256_file(manifest),
                "outputs": {k: v["sha256"] for k, v in body["outputs"].items()},
            }
        )
    config = yaml.safe_load(run.config.read_text())
    for ref in (
        config["data"]["train"]
        + config["data"]["val"]
        + ([config["data"]["replay"]["source"]] if config["data"].get("replay") else [])
    ):
        manifest = Path(ref) / "manifest.json"
        if manifest.is_file():
            body = json.loads(manifest.read_text())
            refs.append(
                {
                    "path": str(manifest),
                    "sha256": sha256_file(manifest),
                    "outputs": {k: v["sha256"] for k, v in body["outputs"].items()},
                }
            )
    return refs


def _data_hash(refs: list[dict]) -> str | None:
    from specialize.artifacts import sha256_text

    return sha256_text("".join(sorted(r["outputs"]["train"] for r in refs))) if refs else None


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
