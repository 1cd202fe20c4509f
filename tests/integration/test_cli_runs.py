"""Runs documented: list, compare, report, reproduce (refusing changed data), tags, rm, TensorBoard."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import SUPPORT_DATA


@pytest.fixture
def two_runs(cli, tiny_recipe, tmp_path):
    """Two finished tiny runs on a copy of the support data, differing in learning rate and epochs."""
    data = tmp_path / "support.jsonl"
    shutil.copy(SUPPORT_DATA, data)
    paths = []
    for name, lr, epochs, report_to in (("slow", 1e-3, 1, ["tensorboard"]), ("fast", 5e-3, 2, [])):
        recipe = tiny_recipe(
            data={"train": [str(data)]},
            training={"learning_rate": lr, "epochs": epochs},
            output={"dir": str(tmp_path / name), "name": name, "report_to": report_to},
            retention={"suite": "none"},
        )
        file = tmp_path / f"{name}.yaml"
        file.write_text(yaml.safe_dump(recipe))
        code, _, err = cli("train", file, "--no-progress")
        assert code == 0, err
        paths.append(tmp_path / name)
    return data, paths


def test_list_compare_report_and_tags(cli, two_runs, tmp_path):
    _, (slow, fast) = two_runs
    code, out, _ = cli("runs", "list")
    assert code == 0 and "slow" in out and "fast" in out and "2 run(s)" in out
    code, out, _ = cli("runs", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert (
        rows["slow"]["lr"] == 1e-3
        and rows["fast"]["epochs"] == 2
        and rows["fast"]["status"] == "finished"
    )

    code, out, _ = cli("runs", "compare", "slow", "fast", "--out", tmp_path / "cmp.html")
    assert code == 0
    assert "training.learning_rate" in out and "training.epochs" in out and "best_val_loss" in out
    page = (tmp_path / "cmp.html").read_text()
    assert "data:image/png;base64," in page and "training.learning_rate" in page

    for run in (slow, fast):
        report = (run / "report.html").read_text()  # written at the end of the run
        for heading in (
            "Summary",
            "Data",
            "Configuration",
            "Environment",
            "Curves",
            "Base and tuned answers",
        ):
            assert heading in report
        assert report.count("data:image/png;base64,") >= 2 and "training.learning_rate" in report
    (fast / "report.html").unlink()
    code, out, _ = cli("runs", "report", str(fast))
    assert code == 0 and (fast / "report.html").is_file()
    code, out, _ = cli("runs", "report", "fast", "--json")
    assert code == 0 and json.loads(out) == {"run": str(fast), "report": str(fast / "report.html")}

    assert cli("runs", "tag", "fast", "keep")[0] == 0
    code, out, _ = cli("runs", "list", "--tag", "keep", "--json")
    assert [r["name"] for r in json.loads(out)] == ["fast"]
    code, out, _ = cli("runs", "list", "--method", "cpt", "--json")
    assert json.loads(out) == []

    code, _, _ = cli("runs", "rm", "slow", "--yes")
    assert code == 0 and not slow.exists()
    code, _, err = cli("runs", "show", "slow")
    assert code == 1 and "no run 'slow'" in err


def test_reproduce_refuses_when_the_data_changed_and_reruns_when_not(cli, two_runs):
    data, (slow, _) = two_runs
    code, out, err = cli("runs", "reproduce", "slow", "--no-progress", "--json")
    assert code == 0, err
    printed = json.loads(out)
    new_run = Path(printed["run"])
    again = json.loads((new_run / "run.json").read_text())
    assert printed["id"] == again["id"] and printed["status"] == again["status"]
    assert again["status"] == "finished" and new_run != slow
    original = yaml.safe_load((slow / "config.yaml").read_text())
    repeated = yaml.safe_load((new_run / "config.yaml").read_text())
    assert repeated["training"] == original["training"] and repeated["data"] == original["data"]
    code, out, _ = cli("runs", "list", "--json")
    assert "slow-repro" in [r["name"] for r in json.loads(out)]

    data.write_text(data.read_text().replace("Nordvik", "Sudvik", 1))
    code, _, err = cli("runs", "reproduce", "slow")
    assert code == 1
    assert str(data) in err and "changed since the run" in err


def test_metrics_reach_tensorboard_through_the_trainer(two_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, (slow, fast) = two_runs
    events = list((slow / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    assert not (fast / "tensorboard").exists()
