"""Retention inside training on the tiny model: measured after every run; a budget stops the run."""

import json

import yaml

from specialize.track import registry


def test_every_run_records_retention(cli, tiny_recipe, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(training={"max_steps": 4})))
    code, out, err = cli("train", path, "--no-progress")
    assert code == 0, err
    run = tmp_path / "run"
    retention = json.loads((run / "retention.json").read_text())
    core = retention["comparison"]["core"]
    assert {"base", "tuned", "delta_points", "delta_ci95_points", "p_value", "verdict"} <= set(core)
    assert retention["drift"]["kl"]["mean"] >= 0 and retention["verdict"]
    outcome = json.loads((run / "run.json").read_text())["outcome"]
    assert outcome["retention"]["verdict"] == retention["verdict"]
    assert registry.list_runs()[0]["summary"]["retention"]["suite"] == "core"
    assert "retention (core):" in out


def test_drift_budget_stops_the_run_and_says_why(cli, tiny_recipe, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            tiny_recipe(
                training={"max_steps": 12, "learning_rate": 5e-2},
                eval={"every_steps": 2, "patience": None},
                retention={"max_drift": 1e-9, "probe_items": 10, "suite": "none"},
            )
        )
    )
    code, out, err = cli("train", path, "--no-progress")
    assert code == 0, err
    outcome = json.loads((tmp_path / "run" / "run.json").read_text())["outcome"]
    assert outcome["stop_reason"].startswith("retention budget exceeded at step 2"), outcome[
        "stop_reason"
    ]
    assert outcome["steps"] == 2
    assert (
        outcome["chosen"]["checkpoint"] is None
        and "no checkpoint stayed within" in outcome["chosen"]["why"]
    )
    probe = json.loads(
        (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "retention-probe.json").read_text()
    )
    assert probe["within_budget"] is False and probe["drift_kl"] > 1e-9
