"""Comparisons people make: pairs of answers to one prompt, and who preferred which.

Pairs and labels live in the registry (SQLite, WAL). A unique index allows one live label per
person and pair, so two submissions at the same moment store one label and the other is told
it was already recorded; undo marks the person's last label undone rather than deleting it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from dataclasses import dataclass

from specialize.track import registry

CHOICES = ("a", "b", "tie", "both_bad")


@dataclass
class Pair:
    id: str
    prompt: list[dict]
    first: str  # shown as A
    second: str  # shown as B
    first_source: str
    second_source: str


class AlreadyLabelled(Exception):
    pass


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def add_pairs(session: str, pairs: list[Pair]) -> None:
    with registry.connect() as db:
        for position, pair in enumerate(pairs):
            db.execute(
                "INSERT OR IGNORE INTO feedback_pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pair.id,
                    session,
                    position,
                    json.dumps(pair.prompt),
                    pair.first,
                    pair.second,
                    pair.first_source,
                    pair.second_source,
                    _now(),
                ),
            )


def pair_id(
    prompt: list[dict], first_source: str, second_source: str, first: str, second: str
) -> str:
    text = json.dumps([prompt, sorted([[first_source, first], [second_source, second]])])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def next_pair(session: str, annotator: str) -> tuple[Pair | None, int, int]:
    """The first pair of the session this person has not labelled, with (done, total)."""
    with registry.connect() as db:
        total = db.execute(
            "SELECT COUNT(*) FROM feedback_pairs WHERE session = ?", (session,)
        ).fetchone()[0]
        done = db.execute(
            """SELECT COUNT(*) FROM feedback_labels l JOIN feedback_pairs p ON p.id = l.pair_id
               WHERE p.session = ? AND l.annotator = ? AND l.undone = 0""",
            (session, annotator),
        ).fetchone()[0]
        row = db.execute(
            """SELECT * FROM feedback_pairs p WHERE p.session = ? AND NOT EXISTS (
                 SELECT 1 FROM feedback_labels l WHERE l.pair_id = p.id AND l.annotator = ? AND l.undone = 0)
               ORDER BY p.position LIMIT 1""",
            (session, annotator),
        ).fetchone()
    return (_pair(row) if row else None), done, total


def label(
    pair: str, annotator: str, choice: str, comment: str | None = None, corrected: str | None = None
) -> int:
    """Record a label; raise AlreadyLabelled when this person already has a live label on the pair."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}")
    with registry.connect() as db:
        if db.execute("SELECT 1 FROM feedback_pairs WHERE id = ?", (pair,)).fetchone() is None:
            raise KeyError(pair)
        try:
            cursor = db.execute(
                "INSERT INTO feedback_labels (pair_id, annotator, choice, comment, corrected, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (pair, annotator, choice, comment or None, corrected or None, _now()),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyLabelled(pair) from exc
        return cursor.lastrowid


def undo_last(annotator: str, session: str | None = None) -> str | None:
    """Mark this person's newest live label undone; return its pair id (None if nothing to undo)."""
    with registry.connect() as db:
        row = db.execute(
            """SELECT l.id, l.pair_id FROM feedback_labels l JOIN feedback_pairs p ON p.id = l.pair_id
               WHERE l.annotator = ? AND l.undone = 0 AND (? IS NULL OR p.session = ?)
               ORDER BY l.id DESC LIMIT 1""",
            (annotator, session, session),
        ).fetchone()
        if row is None:
            return None
        db.execute("UPDATE feedback_labels SET undone = 1 WHERE id = ?", (row["id"],))
    return row["pair_id"]


def live_labels(session: str | None = None) -> list[dict]:
    """Every label not undone, joined with its pair."""
    with registry.connect() as db:
        rows = db.execute(
            """SELECT l.*, p.prompt_json, p.first, p.second, p.first_source, p.second_source, p.session
               FROM feedback_labels l JOIN feedback_pairs p ON p.id = l.pair_id
               WHERE l.undone = 0 AND (? IS NULL OR p.session = ?) ORDER BY l.id""",
            (session, session),
        ).fetchall()
    return [dict(r) | {"prompt": json.loads(r["prompt_json"])} for r in rows]


def _pair(row) -> Pair:
    return Pair(
        row["id"],
        json.loads(row["prompt_json"]),
        row["first"],
        row["second"],
        row["first_source"],
        row["second_source"],
    )
