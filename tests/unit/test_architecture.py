"""The seams between modules: methods declared once and checked by `config validate`, config
kinds guessed from their keys, `--set` into lists, run folders claimed exclusively with unique
ids, `runs rm` touching only its own run, resume keeping tags."""

import json
import os
import threading
from pathlib import Path

import pytest
import yaml

from specialize.artifacts import RunRecord
from specialize.config import apply_overrides, load_config
from specialize.errors import ConfigError, TrainingError
from specialize.track import registry
from specialize.track import runs as track_runs
from specialize.track.rundir import new_run_dir
from specialize.train.config import RecipeConfig
from specialize.train.methods import METHODS, recipe_problems


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_misspelled_method_is_named_with_the_right_one(cli, tmp_path):
    recipe = _write(tmp_path / "r.yaml", {"methdo": "sft", "data": {"train": ["x.jsonl"]}})
    code, _, err = cli("config", "validate", recipe)
    assert code == 2
    assert "unknown key 'methdo'; did you mean 'method'?" in err
    assert "cannot tell" not in err


def test_kind_is_guessed_from_the_closest_keys(cli, tmp_path):
    data = _write(tmp_path / "d.yaml", {"sourcs": [{"path": "a.jsonl"}], "model": "x"})
    code, _, err = cli("config", "validate", data)
    assert code == 2 and "unknown key 'sourcs'; did you mean 'sources'?" in err
    nothing = _write(tmp_path / "n.yaml", {"zzz": 1})
    code, _, err = cli("config", "validate", nothing)
    assert code == 2 and "cannot tell which kind of config" in err and "--kind" in err


@pytest.mark.parametrize(
    ("extra", "field", "fix"),
    [
        ({"method": "dpo", "adaptation": {"kind": "full"}}, "adaptation.kind", "lora"),
        ({"method": "rl"}, "preference.reward_model", "method: reward"),
        ({"method": "reward", "data": {"train": ["x"], "replay": {}}}, "data.replay", "remove"),
        ({"method": "sfft"}, "method", "sft, cpt"),
    ],
)
def test_config_validate_refuses_what_the_method_cannot_run(cli, tmp_path, extra, field, fix):
    recipe = _write(tmp_path / "r.yaml", {"data": {"train": ["x.jsonl"]}, **extra})
    code, _, err = cli("config", "validate", recipe)
    assert code == 2, err
    line = next(x for x in err.splitlines() if f": {field}: " in x)
    assert fix in line and "r.yaml:" in line  # file:line, the field and the fix


def test_a_valid_preference_recipe_passes(cli, tmp_path):
    recipe = _write(
        tmp_path / "r.yaml",
        {"method": "rl", "data": {"train": ["x"]}, "preference": {"reward_model": "runs/rm"}},
    )
    code, out, err = cli("config", "validate", recipe)
    assert code == 0 and "ok" in out, err


def test_every_method_is_one_table_entry():
    for name, entry in METHODS.items():
        assert callable(entry.train) and entry.help
        recipe = RecipeConfig.model_validate(
            {"method": name, "data": {"train": ["x"]}, "preference": {"reward_model": "r"}}
        )
        assert recipe_problems(recipe) == []


def test_set_takes_list_indices(tmp_path):
    assert apply_overrides({"data": {"train": ["a", "b"]}}, ["data.train.0=x"]) == {
        "data": {"train": ["x", "b"]}
    }
    assert apply_overrides({"tasks": [{"data": "p", "n": 1}]}, ["tasks.0.data=q"]) == {
        "tasks": [{"data": "q", "n": 1}]
    }
    assert apply_overrides({"l": ["a"]}, ["l.1=b"]) == {"l": ["a", "b"]}  # just past the end
    with pytest.raises(ConfigError, match=r"--set l\.5: '5' is not an index"):
        apply_overrides({"l": ["a"]}, ["l.5=b"])
    file = _write(tmp_path / "r.yaml", {"method": "sft", "data": {"train": ["a", "b"]}})
    recipe = load_config(RecipeConfig, file, ["data.train.1=c"])
    assert recipe.data.train == ["a", "c"]


def test_run_folders_are_absolute_claimed_once_and_ids_unique(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = new_run_dir("x", "a/run")
    b = new_run_dir("x", "b/run")
    assert a.path.is_absolute() and a.path == tmp_path / "a" / "run"
    assert a.id != b.id and a.path.name == b.path.name == "run"
    with pytest.raises(TrainingError, match="not empty"):
        new_run_dir("x", "a/run")
    made, errors = [], []

    def start():
        try:
            made.append(new_run_dir("same-name"))
        except TrainingError as exc:  # pragma: no cover - would be the bug
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({r.path for r in made}) == 8 and len({r.id for r in made}) == 8


def _register(run, name: str) -> None:
    registry.record_run(
        {
            "id": run.id,
            "name": name,
            "path": str(run.path),
            "method": "sft",
            "base_model": "m",
            "config_json": {},
            "status": "finished",
            "started_at": "2026-01-01T00:00:00",
        }
    )


def test_resume_keeps_tags(tmp_path):
    run = new_run_dir("x", tmp_path / "r")
    _register(run, "r")
    track_runs.add_tag(run.id, "keep")
    _register(run, "r")  # a resumed run records its start again
    assert registry.list_runs()[0]["tags"] == ["keep"]


def test_runs_rm_from_another_folder_removes_only_its_own_run(cli, tmp_path, monkeypatch):
    from specialize.adapters.registry import list_all, register

    first = new_run_dir("x", tmp_path / "one" / "run")
    second = new_run_dir("x", tmp_path / "two" / "run")
    _register(first, "run")
    _register(second, "run")
    (first.path / "adapter").mkdir()
    (first.path / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4}))
    register("one", first.path, base_model="m", base_hash="h", run=RunRecord(id=first.id))
    code, out, _ = cli("runs", "list", "--json")
    assert sorted(r["id"] for r in json.loads(out)) == sorted([first.id, second.id])

    elsewhere = tmp_path / "elsewhere" / "run"  # same last name as both runs, and relative "run"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere.parent)
    code, out, err = cli("runs", "rm", first.id, "--yes")
    assert code == 0, err
    assert not first.path.exists() and second.path.is_dir() and elsewhere.is_dir()
    assert "adapter 'one'" in out and list_all() == []
    code, out, _ = cli("runs", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [second.id]


def test_runs_rm_leaves_a_folder_it_cannot_prove_is_its_own(cli, tmp_path, monkeypatch):
    other = new_run_dir("x", tmp_path / "run")
    legacy = {"id": "legacy", "path": "run"}  # an old registry row: relative path, folder-name id
    registry.record_run(
        {
            **legacy,
            "name": "old",
            "method": "sft",
            "base_model": "m",
            "config_json": {},
            "status": "finished",
            "started_at": "2026-01-01T00:00:00",
        }
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("runs", "rm", "legacy", "--yes")
    assert code == 0, err
    assert other.path.is_dir() and "left alone" in out
    assert os.path.isfile(other.path / "run.json")


def test_training_max_length_reaches_the_data_stage(tiny_model_dir, tmp_path):
    from specialize.train.datasets import resolve_dataset
    from tests.conftest import SUPPORT_DATA

    run = new_run_dir("x", tmp_path / "run")
    data = resolve_dataset(str(SUPPORT_DATA), run, str(tiny_model_dir), max_length=16)
    assert data.manifest.config["max_length"] == 16
    assert data.manifest.tokens["train"]["truncated_at_max_length"] > 0
    assert data.manifest.outputs["rejects"]["rows"] == 0  # kept: training cuts them
    assert data.replay is False
