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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialize.artifacts import atomic_write_json
from specialize.errors import NotFoundError
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
        return self.path.name

    def record(self) -> dict[str, Any]:
        """Return run.json (empty before the run starts)."""
        return json.loads(self.record_path.read_text()) if self.record_path.exists() else {}

    def update_record(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into run.json, atomically; return the whole record."""
        record = {**self.record(), **fields}
        atomic_write_json(self.record_path, record)
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
    """Create a fresh run directory: `directory` if given, else a unique one under the home."""
    if directory is not None:
        path = Path(directory)
        if path.exists() and any(path.iterdir()):
            from specialize.errors import TrainingError

            raise TrainingError(
                "run directory is not empty",
                where=str(path),
                fix="choose another output.dir, or --resume it",
            )
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = runs_dir() / f"{_slug(name)}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = runs_dir() / f"{_slug(name)}-{stamp}-{suffix}"
    path.mkdir(parents=True, exist_ok=True)
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
