"""Shared fixtures: a private home per test, one materialised default model per machine, tiny models.

The real default model is materialised once into a store under `.cache/test-home` (override with
SPECIALIZE_TEST_STORE) and linked into each test's home only by the fixtures that need it, so a
test never sees state it did not ask for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from specialize.models.catalog import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
STORE = Path(os.environ.get("SPECIALIZE_TEST_STORE", REPO / ".cache" / "test-home"))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $SPECIALIZE_HOME at a fresh folder for every test."""
    path = tmp_path / "home"
    monkeypatch.setenv("SPECIALIZE_HOME", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    return path


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """Return the materialised default model in the shared store (materialised on first use)."""
    from specialize.models.materialize import pull

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECIALIZE_HOME", str(STORE))
        return pull(DEFAULT_MODEL)


@pytest.fixture
def default_model(default_model_dir: Path, home: Path) -> str:
    """Make the default model's alias resolve in this test's home; return the alias."""
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / DEFAULT_MODEL
    if not link.exists():
        link.symlink_to(default_model_dir, target_is_directory=True)
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir: Path) -> Path:
    """Return a tiny random Llama (hidden 64, 2 layers) with the real SmolLM2 tokenizer."""
    from specialize.models.tiny import save_tiny_model

    path = STORE / "tiny-llama"
    if not (path / "config.json").exists():
        save_tiny_model(path, default_model_dir, seed=0)
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Return a function that runs the real CLI entry point and gives (exit code, stdout, stderr)."""
    from specialize.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()  # what earlier steps of the test printed is not this command's output
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


SUPPORT_DATA = REPO / "examples" / "quickstart" / "support.jsonl"


@pytest.fixture
def tiny_recipe(tiny_model_dir: Path, tmp_path: Path):
    """Return a function building a small recipe dict on the tiny model (override with nested dicts)."""

    def build(**overrides) -> dict:
        recipe = {
            "model": str(tiny_model_dir),
            "method": "sft",
            "data": {"train": [str(SUPPORT_DATA)]},
            "training": {
                "epochs": 2,
                "batch_size": 4,
                "learning_rate": 5e-3,
                "max_length": 256,
                "seed": 7,
            },
            "eval": {"every_steps": 2, "patience": None},
            "output": {"dir": str(tmp_path / "run")},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(recipe.get(key), dict):
                recipe[key] = {**recipe[key], **value}
            else:
                recipe[key] = value
        return recipe

    return build


@pytest.fixture(scope="session")
def whisper_tiny_dir() -> Path:
    """Return the converted Whisper tiny.en in the shared store (converted on first use)."""
    from specialize.models.catalog import DEFAULT_SPEECH_MODEL
    from specialize.models.materialize import pull

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECIALIZE_HOME", str(STORE))
        return pull(DEFAULT_SPEECH_MODEL)
