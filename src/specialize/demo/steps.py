"""Steps that run once per input: each is keyed by a hash of what it reads, and re-used when the
key and its outputs are still there. The ledger (steps.json) records every step's key, how long it
took when it ran, and whether this invocation re-used it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialize.artifacts import atomic_write_json

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """Return a short sha256 of JSON-able parts (paths of files count by their content)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(_path_digest(part).encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


def _path_digest(path: Path) -> str:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return fingerprint([[str(p.relative_to(path)), fingerprint(p)] for p in files])
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class StepResult:
    name: str
    seconds: float  # how long the step took when it ran
    reused: bool
    value: Any


class Steps:
    """The ledger of a pipeline's steps in `folder/steps.json`."""

    def __init__(self, folder: Path):
        self.path = folder / "steps.json"
        self.ledger: dict[str, dict] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {}
        )
        self.results: list[StepResult] = []

    def run(
        self,
        name: str,
        key: str,
        compute: Callable[[], Any],
        *,
        done: Callable[[], bool] = lambda: True,
    ) -> Any:
        """Return the step's value: the recorded one when key matches and done() holds, else compute()."""
        entry = self.ledger.get(name)
        if entry and entry["key"] == key and done():
            log.info("%s: re-used (key %s, took %.0f s when it ran)", name, key, entry["seconds"])
            self.results.append(StepResult(name, entry["seconds"], True, entry.get("value")))
            return entry.get("value")
        log.info("%s: running", name)
        started = time.monotonic()
        value = compute()
        seconds = round(time.monotonic() - started, 1)
        self.ledger[name] = {
            "key": key,
            "seconds": seconds,
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "value": value,
        }
        atomic_write_json(self.path, self.ledger)
        self.results.append(StepResult(name, seconds, False, value))
        return value
