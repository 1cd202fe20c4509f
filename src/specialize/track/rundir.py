"""A run directory: everything needed to understand, compare and reproduce one experiment.

config.yaml      the resolved recipe
env.json         versions, git commit, hardware, seed, precision
run.json         status, data manifests, timings, why it stopped, which checkpoint was chosen
metrics.jsonl    one line per logged step or evaluation
checkpoints/     checkpoint-N folders; complete ones carry a marker file
adapter/ | model/  the result: a PEFT adapter, or a full model
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialize.artifacts import RunRecord
from specialize.errors import NotFoundError, TrainingError
from specialize.home import runs_dir


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def env(self) -> Path:
        return self.path / "env.json"

    @property
    def record_path(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def id(self) -> str:
        """The run's id, given when its folder was claimed (runs from before ids: the folder name)."""
        return self.record().id or self.path.name

    def record(self) -> RunRecord:
        """Return run.json (empty before the run starts)."""
        return RunRecord.read_if_present(self.record_path) or RunRecord()

    def update_record(self, **fields: Any) -> RunRecord:
        """Merge `fields` into run.json, atomically; return the whole record."""
        record = self.record().merged(**fields)
        record.write(self.record_path)
        return record

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [
            json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()
        ]

    def drop_metrics_after(self, step: int) -> None:
        """Forget metrics logged after `step` (a resumed run logs those steps again)."""
        kept = [m for m in self.metrics() if m.get("step", 0) <= step]
        self.metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))


def new_run_dir(name: str, directory: str | Path | None = None) -> RunDir:
    """Create and claim a fresh run directory, absolute: `directory` if given (it must be empty),
    else a new one under the home. Claiming writes run.json exclusively with a new unique id, so
    two runs started at once never share a folder or an id, whatever the folders are called."""
    if directory is not None:
        path = Path(directory).expanduser().resolve()
        if path.exists() and any(path.iterdir()):
            raise TrainingError(
                "run directory is not empty",
                where=str(path),
                fix="choose another output.dir, or --resume it",
            )
        path.mkdir(parents=True, exist_ok=True)
        return _claim(path)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = runs_dir().expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    for suffix in range(1, 10_000):
        path = base / (f"{_slug(name)}-{stamp}" + (f"-{suffix}" if suffix > 1 else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return _claim(path)
    raise TrainingError("no free run directory name", where=str(base))


def new_run_id() -> str:
    """A unique run id: the time it started and 8 random hex digits."""
    return f"{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


def _claim(path: Path) -> RunDir:
    """Write the first run.json with O_EXCL: only one run can own the folder."""
    record = path / "run.json"
    try:
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise TrainingError(
            "run directory was just taken by another run",
            where=str(path),
            fix="choose another output.dir",
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(RunRecord(id=new_run_id()).to_dict(), indent=2) + "\n")
    return RunDir(path)


def open_run_dir(path: str | Path) -> RunDir:
    """Return an existing run directory, or raise naming what is missing."""
    run = RunDir(Path(path))
    if not run.config.is_file():
        raise NotFoundError(
            "not a run directory (no config.yaml)",
            where=str(path),
            fix="pass the folder a training run wrote",
        )
    return run


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"
