"""Runs as users see them: find one by id, name or path; list with filters; compare; remove;
check that a run's data still matches its recorded hashes (training reproduces it: train/run.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from specialize.artifacts import DatasetManifest, RunRecord, sha256_file
from specialize.errors import DataError, NotFoundError, UserFileError
from specialize.track import registry

# The hyperparameters a runs table shows, as (column, path in the recipe).
KEY_HYPERPARAMETERS = (
    ("lr", ("training", "learning_rate")),
    ("epochs", ("training", "epochs")),
    ("batch", ("training", "batch_size")),
    ("adapt", ("adaptation", "kind")),
    ("r", ("adaptation", "lora", "r")),
    ("replay", ("data", "replay", "ratio")),
)


def find_run(ref: str) -> dict[str, Any]:
    """Return the registry row of a run given its id, directory or name (the newest of a name)."""
    runs = registry.list_runs()  # newest first
    path = Path(ref).expanduser()
    for run in runs:
        if run["id"] == ref:
            return run
    if path.exists():
        for run in runs:
            if Path(run["path"]).resolve() == path.resolve():
                return run
    for run in runs:
        if run["name"] == ref:
            return run
    raise NotFoundError(
        f"no run {ref!r} in the registry",
        fix="use an id, name or directory from `specialize runs list`",
    )


def list_rows(
    *, base: str | None = None, method: str | None = None, tag: str | None = None
) -> list[dict]:
    """Return every registered run (newest first) that matches the filters, flattened for a table."""
    rows = []
    for run in registry.list_runs():
        if base and base not in (run["base_model"], run.get("base_hash")):
            continue
        if method and run["method"] != method:
            continue
        if tag and tag not in (run.get("tags") or []):
            continue
        rows.append(flatten(run))
    return rows


def flatten(run: dict) -> dict[str, Any]:
    """Return one table row: identity, key hyperparameters, outcome and retention."""
    config = run.get("config") or {}
    summary = run.get("summary") or {}
    retention = (summary.get("retention") or {}).get("tasks") or {}
    delta = next(iter(retention.values()), {}).get("delta_points") if retention else None
    row = {
        "id": run["id"],
        "name": run["name"],
        "method": run["method"],
        "base": run["base_model"],
        "data": (run.get("data_hash") or "")[:10],
        **{column: _get(config, path) for column, path in KEY_HYPERPARAMETERS},
        "val_loss": summary.get("best_val_loss"),
        "retention_delta": delta,
        "duration_s": run.get("duration_s"),
        "status": run["status"],
        "tags": run.get("tags") or [],
        "started": run["started_at"],
        "path": run["path"],
    }
    if row["adapt"] != "lora":
        row["r"] = None
    return row


def _get(config: dict, path: tuple[str, ...]) -> Any:
    value: Any = config
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def compare(refs: list[str]) -> dict[str, Any]:
    """Return config differences, outcome deltas against the first run, and the runs' curves."""
    runs = [find_run(r) for r in refs]
    configs = [_flat(r["config"] or {}) for r in runs]
    keys = sorted(set().union(*configs))
    differences = {
        key: [c.get(key) for c in configs]
        for key in keys
        if len({json.dumps(c.get(key), sort_keys=True) for c in configs}) > 1
        and not key.startswith("output.")
    }
    outcomes = [_outcome(r) for r in runs]
    deltas = {
        metric: [
            None
            if o.get(metric) is None or outcomes[0].get(metric) is None
            else o[metric] - outcomes[0][metric]
            for o in outcomes
        ]
        for metric in outcomes[0]
    }
    return {
        "runs": [
            {"id": r["id"], "name": r["name"], "path": r["path"], "status": r["status"]}
            for r in runs
        ],
        "config_differences": differences,
        "outcomes": outcomes,
        "deltas_vs_first": deltas,
        "curves": [_curve(Path(r["path"])) for r in runs],
    }


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _outcome(run: dict) -> dict[str, float | None]:
    summary = run.get("summary") or {}
    retention = (summary.get("retention") or {}).get("tasks") or {}
    out: dict[str, float | None] = {
        "best_val_loss": summary.get("best_val_loss"),
        "train_loss": summary.get("train_loss"),
        "steps": summary.get("steps"),
        "duration_s": run.get("duration_s"),
    }
    for name, task in retention.items():
        out[f"retention_{name}"] = task.get("tuned")
    if summary.get("retention"):
        out["drift_kl"] = summary["retention"].get("drift_kl")
    return out


def _curve(path: Path) -> dict[str, list]:
    metrics_file = path / "metrics.jsonl"
    rows = (
        [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
        if metrics_file.is_file()
        else []
    )
    return {
        "loss": [[m["step"], m["loss"]] for m in rows if "loss" in m],
        "val_loss": [[m["step"], m["val_loss"]] for m in rows if "val_loss" in m],
    }


def remove(ref: str) -> dict:
    """Delete a run's registry row and its folder; return the row with `deleted` (the folder
    removed, or None). Only a folder that is provably this run's own is deleted: an absolute path
    whose run.json carries this run's id. Anything else (a relative path from an old registry, a
    folder now holding another run) is left alone."""
    run = find_run(ref)
    folder = own_folder(run)
    if folder is not None:
        shutil.rmtree(folder)
    with registry.connect() as db:
        db.execute("DELETE FROM runs WHERE id = ?", (run["id"],))
    return {**run, "deleted": str(folder) if folder else None}


def own_folder(run: dict) -> Path | None:
    """The run's folder if it is certainly its own (absolute, run.json with the run's id)."""
    path = Path(run["path"])
    record = path / "run.json"
    if not path.is_absolute() or not record.is_file():
        return None
    try:
        owner = RunRecord.read(record).id or path.name
    except UserFileError:  # unreadable or of an unknown version: not provably this run's
        return None
    return path if owner == run["id"] else None


def add_tag(ref: str, tag: str) -> list[str]:
    run = find_run(ref)
    tags = sorted(set(run.get("tags") or []) | {tag})
    registry.update_run(run["id"], tags_json=tags)
    return tags


def check_data_unchanged(run_path: Path) -> None:
    """Raise DataError naming the first input or prepared file whose content no longer matches."""
    refs = RunRecord.read(run_path / "run.json").data
    if not refs:
        raise DataError(
            "the run recorded no data manifests, so its data cannot be checked",
            where=str(run_path / "run.json"),
            fix="reproduce only runs that finished",
        )
    for ref in refs:
        manifest_path = Path(ref["path"])
        inside_run = run_path.resolve() in manifest_path.resolve().parents
        if (
            not inside_run
        ):  # a prepared dataset the recipe pointed at: its files must be as they were
            for split, sha in ref["outputs"].items():
                _same(manifest_path.parent / f"{split}.jsonl", sha)
        manifest = DatasetManifest.read_if_present(manifest_path)
        if manifest is None:
            raise DataError("a data manifest the run used is gone", where=str(manifest_path))
        if manifest.generated:
            continue  # generated from the base model, re-generated on demand
        for item in manifest.inputs:
            _same(Path(item["path"]), item["sha256"])


def _same(path: Path, sha: str) -> None:
    if not path.is_file():
        raise DataError(
            "a data file the run used is missing", where=str(path), fix="restore it, or train anew"
        )
    if sha256_file(path) != sha:
        raise DataError(
            "a data file changed since the run (its sha256 differs from the recorded one)",
            where=str(path),
            fix="restore the file as it was, or start a new run with `specialize train`",
        )
