"""`specialize demo --quick` end to end on the real default model, through the CLI."""

import json

import pytest


@pytest.mark.slow
def test_the_quick_demo_runs_end_to_end_on_the_default_model(cli, default_model, tmp_path):
    out = tmp_path / "demo"
    code, stdout, stderr = cli("demo", "--quick", "--out", out, "--no-progress")
    assert code == 0, stderr
    summary = json.loads((out / "demo.json").read_text())
    assert [s["reused"] for s in summary["steps"]] == [False] * 6
    assert "Ladder" in stdout and "retention (core)" in stdout and "report.html" in stdout
    assert "Simulation" in stdout and "tuned vs prompt" in stdout
    ladder = json.loads((out / "ladder" / "ladder.json").read_text())
    assert set(ladder["tasks"]) == {"policy", "structured"}
    assert all(t["n"] == 6 for t in ladder["tasks"].values())
    retention = json.loads((out / "run" / "retention.json").read_text())
    assert retention["suite"] == "core" and "core" in retention["comparison"]
    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report and "QUICK MODE" in report
    # the simulation step: pass rates with n and Wilson CI, the paired McNemar comparison
    assert "<h2>Simulation</h2>" in report and "p (McNemar exact)" in report
    assert "n=4" in report and "significant" in report
    simulation = json.loads((out / "simulation" / "simulation.json").read_text())
    assert [i["ok"] for i in simulation["contestants"].values()] == [4, 4]
    step = next(s for s in summary["steps"] if s["name"].startswith("simulation"))

    code, stdout, _ = cli("demo", "--quick", "--out", out, "--no-progress", "--json")
    assert code == 0
    assert json.loads(stdout) == json.loads((out / "demo.json").read_text())
    assert all(s["reused"] for s in json.loads((out / "demo.json").read_text())["steps"])
    print(f"simulation step: {step['seconds']} s")  # pytest -s shows it
