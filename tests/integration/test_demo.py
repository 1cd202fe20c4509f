"""`specialize demo --quick` end to end on the real default model, through the CLI."""

import json

import pytest


@pytest.mark.slow
def test_the_quick_demo_runs_end_to_end_on_the_default_model(cli, default_model, tmp_path):
    out = tmp_path / "demo"
    code, stdout, stderr = cli("demo", "--quick", "--out", out, "--no-progress")
    assert code == 0, stderr
    summary = json.loads((out / "demo.json").read_text())
    assert [s["reused"] for s in summary["steps"]] == [False] * 5
    assert "Ladder" in stdout and "retention (core)" in stdout and "report.html" in stdout
    ladder = json.loads((out / "ladder" / "ladder.json").read_text())
    assert set(ladder["tasks"]) == {"policy", "structured"}
    assert all(t["n"] == 6 for t in ladder["tasks"].values())
    retention = json.loads((out / "run" / "retention.json").read_text())
    assert retention["suite"] == "core" and "core" in retention["comparison"]
    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report and "QUICK MODE" in report

    code, stdout, _ = cli("demo", "--quick", "--out", out, "--no-progress", "--json")
    assert code == 0
    assert json.loads(stdout) == json.loads((out / "demo.json").read_text())
    assert all(s["reused"] for s in json.loads((out / "demo.json").read_text())["steps"])
