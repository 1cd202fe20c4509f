"""Slow: forgetting is measured on every run, and the budget stops a run that would forget.

Real default model, narrow data (the quickstart support chats). A destructive run (full fine-tuning
at a high learning rate) must be flagged; a gentle LoRA run with self-replay must not.
"""

import json

import pytest
import yaml

from tests.conftest import SUPPORT_DATA


def recipe(tmp_path, name, **sections):
    body = {
        "model": "smollm2-135m-instruct",
        "method": "sft",
        "data": {"train": [str(SUPPORT_DATA)]},
        # Full fine-tuning checkpoints are ~1.5 GB each (weights + optimizer state): keep the
        # latest and the best only.
        "eval": {"every_steps": 4, "patience": None, "keep_checkpoints": 1},
        "output": {"dir": str(tmp_path / name)},
    }
    for key, value in sections.items():
        body[key] = {**body.get(key, {}), **value}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


DESTRUCTIVE = {
    "adaptation": {"kind": "full"},
    "training": {
        "learning_rate": 1e-3,
        "max_steps": 12,
        "batch_size": 4,
        "warmup_ratio": 0.0,
        "max_length": 256,
    },
}


@pytest.mark.slow
def test_destructive_run_is_flagged_and_gentle_run_is_not(cli, default_model, tmp_path):
    code, _, err = cli("train", recipe(tmp_path, "destructive", **DESTRUCTIVE), "--no-progress")
    assert code == 0, err
    destructive = json.loads((tmp_path / "destructive" / "run.json").read_text())["outcome"][
        "retention"
    ]
    assert destructive["verdict"].startswith("forgetting"), destructive
    assert destructive["tasks"]["core"]["delta_points"] < -5

    gentle = recipe(
        tmp_path,
        "gentle",
        adaptation={"kind": "lora", "lora": {"r": 8}},
        training={"learning_rate": 1e-4, "max_steps": 6, "batch_size": 4, "max_length": 256},
        data={"replay": {"source": "builtin:self-replay", "ratio": 0.3}},
    )
    code, _, err = cli("train", gentle, "--no-progress")
    assert code == 0, err
    kept = json.loads((tmp_path / "gentle" / "run.json").read_text())["outcome"]["retention"]
    assert kept["verdict"] == "no significant loss of general ability", kept
    assert kept["drift_kl"] < destructive["drift_kl"]


@pytest.mark.slow
def test_retention_budget_stops_a_run_that_would_forget(cli, default_model, tmp_path):
    budgeted = recipe(
        tmp_path,
        "budgeted",
        **DESTRUCTIVE,
        retention={"budget_points": 2, "probe_items": 40, "suite": "none"},
    )
    code, out, err = cli("train", budgeted, "--no-progress")
    assert code == 0, err
    outcome = json.loads((tmp_path / "budgeted" / "run.json").read_text())["outcome"]
    assert outcome["stop_reason"].startswith("retention budget exceeded at step"), outcome[
        "stop_reason"
    ]
    assert outcome["steps"] < 12
    probes = [
        json.loads(line)
        for line in (tmp_path / "budgeted" / "metrics.jsonl").read_text().splitlines()
        if "probe_core" in line
    ]
    assert probes and probes[-1]["probe_within_budget"] is False
