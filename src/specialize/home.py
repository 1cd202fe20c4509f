"""Where user state lives: `$SPECIALIZE_HOME`, default `~/.specialize`."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SPECIALIZE_HOME"


def home_dir() -> Path:
    """Return the home directory, created if missing."""
    root = Path(os.environ.get(HOME_ENV) or Path.home() / ".specialize").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Return where materialised base models are kept."""
    return _subdir("models")


def cache_dir() -> Path:
    """Return where downloads and cached measurements are kept."""
    return _subdir("cache")


def runs_dir() -> Path:
    """Return the default parent of run directories."""
    return _subdir("runs")


def registry_path() -> Path:
    """Return the path of the SQLite registry of runs, adapters and feedback."""
    return home_dir() / "registry.sqlite"


def _subdir(name: str) -> Path:
    path = home_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
