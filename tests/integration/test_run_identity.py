"""Two real runs whose output.dir end in the same name: two ids, both listed, and `runs rm`
from another folder removes only its own run (and its adapter's registry entry)."""

import json

import yaml


def test_same_folder_name_two_runs_and_rm_from_elsewhere(cli, tiny_recipe, tmp_path, monkeypatch):
    runs = []
    for parent in ("a", "b"):
        recipe = tiny_recipe(
            training={"max_steps": 2, "batch_size": 2, "max_length": 64},
            eval={"every_steps": 2, "patience": None},
            retention={"suite": "none"},
            output={"dir": f"{parent}/run", "name": "same"},  # relative, same last name
        )
        file = tmp_path / f"{parent}.yaml"
        file.write_text(yaml.safe_dump(recipe))
        monkeypatch.chdir(tmp_path)
        code, out, err = cli("train", file, "--no-progress")
        assert code == 0, err
        runs.append(json.loads((tmp_path / parent / "run" / "run.json").read_text()))
    first, second = runs
    assert first["id"] != second["id"] and first["schema_version"] == 1
    code, out, _ = cli("runs", "list", "--json")
    listed = {r["id"]: r for r in json.loads(out)}
    assert set(listed) == {first["id"], second["id"]}
    assert listed[first["id"]]["path"] == str(tmp_path / "a" / "run")  # absolute
    code, out, _ = cli("adapters", "list", "--json")
    assert code == 0 and len(json.loads(out)) == 2

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "a" / "run").mkdir(parents=True)  # what the relative output.dir would name here
    monkeypatch.chdir(elsewhere)
    code, out, err = cli("runs", "rm", first["id"], "--yes")
    assert code == 0, err
    assert not (tmp_path / "a" / "run").exists()
    assert (tmp_path / "b" / "run" / "adapter").is_dir() and (elsewhere / "a" / "run").is_dir()
    code, out, _ = cli("runs", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [second["id"]]
    code, out, _ = cli("adapters", "list", "--json")
    assert [a["run_id"] for a in json.loads(out)] == [second["id"]]
