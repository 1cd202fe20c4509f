"""The adapter registry: every trained adapter by name, with its base model (alias and content
hash), where it came from, its scores, and its size. Adapters from runs register themselves."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

from specialize.artifacts import RunRecord
from specialize.errors import ModelError, NotFoundError, UserFileError
from specialize.track import registry

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_JSON_FIELDS = ("hyperparameters", "scores", "tags")


def register(
    name: str,
    path: str | Path,
    *,
    base_model: str,
    base_hash: str | None = None,
    run: RunRecord | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Register the adapter in `path` (a PEFT dir or a run dir) under `name`; return its entry.

    The adapter must have been trained on `base_model`: when its run recorded a base content hash,
    the two must match, so an adapter never silently lands on the wrong base.
    """
    from specialize.models.loading import adapter_dir, content_hash, resolve_model

    check_name(name)
    folder = adapter_dir(path).resolve()
    base_hash = base_hash or content_hash(resolve_model(base_model).path)
    run = run if run is not None else _run_record(folder)
    trained_on = run.base_model.get("content_hash") if run else None
    if trained_on and trained_on != base_hash:
        raise ModelError(
            f"adapter {name!r} was trained on another base model (content hash {trained_on[:12]}, "
            f"not {base_hash[:12]})",
            where=str(folder),
            fix=f"register it with the base it was trained on ({run.base_model.get('ref')})",
        )
    existing = get(name, missing_ok=True)
    if existing and not replace and Path(existing["path"]) != folder:
        raise UserFileError(
            f"an adapter named {name!r} is already registered",
            where=existing["path"],
            fix="choose another --name, or remove the old one with `specialize adapters rm`",
        )
    entry = {
        "name": name,
        "path": str(folder),
        "base_model": base_model,
        "base_hash": base_hash,
        "method": run.method if run else None,
        "run_id": run.id if run else None,
        "data_hash": run.data_hash if run else None,
        "hyperparameters": _hyperparameters(folder, run),
        "scores": _scores(run),
        "size_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tags": existing["tags"] if existing else [],
    }
    row = {
        k + ("_json" if k in _JSON_FIELDS else ""): json.dumps(v) if k in _JSON_FIELDS else v
        for k, v in entry.items()
    }
    with registry.connect() as db:
        db.execute(
            f"INSERT OR REPLACE INTO adapters ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})",
            row,
        )
    return entry


def register_run(run_path: Path, record: RunRecord) -> dict[str, Any] | None:
    """Register a finished run's adapter under the run's name (suffixed when the name is taken)."""
    if not (run_path / "adapter" / "adapter_config.json").is_file():
        return None
    base = record.base_model
    name = _free_name(_slug(record.name or run_path.name), run_path / "adapter")
    run = record if record.id else record.merged(id=run_path.name)
    return register(
        name, run_path, base_model=base.get("ref"), base_hash=base.get("content_hash"), run=run
    )


def register_finished(run_path: str | Path) -> dict[str, Any] | None:
    """Register a finished run's adapter and note its name in run.json; the caller of training
    does this (train sits below adapters). Return the entry, or None when there is nothing to
    register (the run failed, or it trained a full model)."""
    run_path = Path(run_path)
    record_path = run_path / "run.json"
    record = RunRecord.read_if_present(record_path)
    if record is None or record.status != "finished":
        return None
    entry = register_run(run_path, record)
    if entry is not None:
        record.merged(adapter_name=entry["name"]).write(record_path)
    return entry


def forget_run(run_id: str, run_path: str | Path) -> list[str]:
    """Remove the entries of adapters that live in a run's folder (or came from its id), before
    the run is deleted; return their names."""
    folder = Path(run_path)
    gone = [
        e["name"]
        for e in list_all()
        if e.get("run_id") == run_id or (folder.is_absolute() and folder in Path(e["path"]).parents)
    ]
    with registry.connect() as db:
        db.executemany("DELETE FROM adapters WHERE name = ?", [(n,) for n in gone])
    return gone


def check_name(name: str) -> None:
    if not NAME.match(name) or name == "base":
        raise UserFileError(
            f"invalid adapter name {name!r}",
            fix="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (not 'base')",
        )


def get(name: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
    with registry.connect() as db:
        row = db.execute("SELECT * FROM adapters WHERE name = ?", (name,)).fetchone()
    if row is None:
        if missing_ok:
            return None
        raise NotFoundError(f"no adapter named {name!r}", fix="see `specialize adapters list`")
    return _decode(row)


def list_all() -> list[dict[str, Any]]:
    with registry.connect() as db:
        rows = db.execute("SELECT * FROM adapters ORDER BY created_at DESC, name").fetchall()
    return [_decode(r) for r in rows]


def tag(name: str, label: str) -> list[str]:
    entry = get(name)
    tags = sorted(set(entry["tags"]) | {label})
    with registry.connect() as db:
        db.execute("UPDATE adapters SET tags_json = ? WHERE name = ?", (json.dumps(tags), name))
    return tags


def remove(name: str, *, delete_files: bool = False) -> dict[str, Any]:
    entry = get(name)
    with registry.connect() as db:
        db.execute("DELETE FROM adapters WHERE name = ?", (name,))
    if delete_files:
        shutil.rmtree(entry["path"], ignore_errors=True)
    return entry


def _decode(row) -> dict[str, Any]:
    out = dict(row)
    for key in _JSON_FIELDS:
        out[key] = json.loads(out.pop(f"{key}_json") or "null")
    return out


def _run_record(folder: Path) -> RunRecord | None:
    record = folder.parent / "run.json"
    if folder.name == "adapter" and record.is_file():
        body = RunRecord.read(record)
        return body if body.id else body.merged(id=folder.parent.name)
    return None


def _hyperparameters(folder: Path, run: RunRecord | None) -> dict:
    config = json.loads((folder / "adapter_config.json").read_text())
    out = {k: config.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")}
    if isinstance(out["target_modules"], list):
        out["target_modules"] = sorted(out["target_modules"])
    run_config = folder.parent / "config.yaml"
    if run and run_config.is_file():
        import yaml

        training = (yaml.safe_load(run_config.read_text()) or {}).get("training", {})
        out.update({k: training.get(k) for k in ("learning_rate", "epochs", "batch_size")})
    return out


def _scores(run: RunRecord | None) -> dict:
    outcome = run.outcome if run else {}
    retention = run.retention if run else {}
    return {
        "best_val_loss": outcome.get("best_val_loss"),
        "retention_verdict": retention.get("verdict"),
        "retention": {
            name: task.get("delta_points") for name, task in (retention.get("tasks") or {}).items()
        },
    }


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:56]
    return slug or "adapter"


def _free_name(name: str, folder: Path) -> str:
    candidate, number = name, 1
    while (found := get(candidate, missing_ok=True)) and Path(found["path"]) != folder.resolve():
        number += 1
        candidate = f"{name}-{number}"
    return candidate
