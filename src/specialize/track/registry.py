"""The registry: one SQLite file under the home for runs and adapters (and later feedback).

Schema changes are append-only migrations: a new function at the end of MIGRATIONS; the file's
`user_version` says how many have run, so an old registry opens and upgrades.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from specialize.home import registry_path


def _m001_runs(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            method TEXT NOT NULL,
            base_model TEXT NOT NULL,
            base_hash TEXT,
            data_hash TEXT,
            config_json TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_s REAL,
            summary_json TEXT NOT NULL DEFAULT '{}',
            tags_json TEXT NOT NULL DEFAULT '[]'
        )"""
    )


def _m002_adapters(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE adapters (
            name TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            base_model TEXT NOT NULL,
            base_hash TEXT NOT NULL,
            method TEXT,
            run_id TEXT,
            data_hash TEXT,
            hyperparameters_json TEXT NOT NULL DEFAULT '{}',
            scores_json TEXT NOT NULL DEFAULT '{}',
            size_bytes INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            tags_json TEXT NOT NULL DEFAULT '[]'
        )"""
    )


def _m003_feedback(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE feedback_pairs (
            id TEXT PRIMARY KEY,
            session TEXT NOT NULL,
            position INTEGER NOT NULL,
            prompt_json TEXT NOT NULL,
            first TEXT NOT NULL,
            second TEXT NOT NULL,
            first_source TEXT NOT NULL,
            second_source TEXT NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE feedback_labels (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            pair_id TEXT NOT NULL REFERENCES feedback_pairs(id),
            annotator TEXT NOT NULL,
            choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
            comment TEXT,
            corrected TEXT,
            created_at TEXT NOT NULL,
            undone INTEGER NOT NULL DEFAULT 0
        )"""
    )
    # One live label per person and pair: a double submission cannot count twice.
    db.execute(
        "CREATE UNIQUE INDEX one_label ON feedback_labels(pair_id, annotator) WHERE undone = 0"
    )


def _m004_simulations(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE simulations (
            path TEXT PRIMARY KEY,
            scenario_file TEXT,
            scenario_hash TEXT,
            model TEXT NOT NULL,
            created_at TEXT NOT NULL,
            summary_json TEXT NOT NULL DEFAULT '{}'
        )"""
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_runs,
    _m002_adapters,
    _m003_feedback,
    _m004_simulations,
]


@contextlib.contextmanager
def connect(path: Path | None = None) -> Iterator[sqlite3.Connection]:
    """Yield a connection to the registry, migrated to the latest schema; commits on success."""
    db = sqlite3.connect(path or registry_path(), timeout=30)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        migrate(db)
        yield db
        db.commit()
    finally:
        db.close()


def migrate(db: sqlite3.Connection) -> None:
    """Run the migrations this registry has not seen yet, all in one transaction: a failure or a
    kill leaves the registry as it was (SQLite's DDL and `user_version` are transactional), and
    of two processes opening an old registry at once, one migrates and the other waits."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
        return
    db.execute("BEGIN IMMEDIATE")  # the write lock first, then a fresh look at the version
    try:
        done = db.execute("PRAGMA user_version").fetchone()[0]
        for migration in MIGRATIONS[done:]:
            migration(db)
        db.execute(f"PRAGMA user_version = {max(done, len(MIGRATIONS))}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def record_run(row: dict[str, Any]) -> None:
    """Insert a run's row, or update it (a resumed run) keeping what users added: its tags."""
    row = {
        **row,
        "config_json": json.dumps(row["config_json"])
        if not isinstance(row["config_json"], str)
        else row["config_json"],
    }
    columns = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    updates = ", ".join(f"{k} = excluded.{k}" for k in row if k != "id")
    with connect() as db:
        db.execute(
            f"INSERT INTO runs ({columns}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}",
            row,
        )


def update_run(run_id: str, **fields: Any) -> None:
    """Update some fields of a run; dicts and lists are stored as JSON."""
    encoded = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in fields.items()}
    assignments = ", ".join(f"{k} = :{k}" for k in encoded)
    with connect() as db:
        db.execute(f"UPDATE runs SET {assignments} WHERE id = :_id", {**encoded, "_id": run_id})


def get_run(run_id: str) -> dict[str, Any] | None:
    """Return a run's row with JSON fields decoded, or None."""
    with connect() as db:
        found = db.execute(
            "SELECT * FROM runs WHERE id = ? OR name = ? OR path = ?", (run_id, run_id, run_id)
        ).fetchone()
    return _decode(found) if found else None


def list_runs() -> list[dict[str, Any]]:
    """Return every run, newest first."""
    with connect() as db:
        rows = db.execute("SELECT * FROM runs ORDER BY started_at DESC").fetchall()
    return [_decode(r) for r in rows]


def record_simulation(row: dict[str, Any]) -> None:
    """Insert or replace a simulation's row (keyed by its output folder)."""
    row = {**row, "summary_json": json.dumps(row["summary_json"])}
    columns = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    with connect() as db:
        db.execute(f"INSERT OR REPLACE INTO simulations ({columns}) VALUES ({marks})", row)


def list_simulations() -> list[dict[str, Any]]:
    """Return every simulation, newest first."""
    with connect() as db:
        rows = db.execute("SELECT * FROM simulations ORDER BY created_at DESC").fetchall()
    return [_decode(r) for r in rows]


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("config_json", "summary_json", "tags_json"):
        if key in out:
            out[key.removesuffix("_json")] = json.loads(out.pop(key) or "null")
    return out
