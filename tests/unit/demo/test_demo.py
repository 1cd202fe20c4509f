"""The demo pipeline on the tiny model: every step runs, a re-run re-uses them, edits re-run only
what they touch. The real default model runs it in tests/integration/test_demo.py."""

import json
import shutil

import pytest

from specialize.demo.pipeline import EXAMPLE, demo_scenarios, run_demo
from specialize.demo.steps import Steps, fingerprint
from specialize.errors import NotFoundError


@pytest.fixture
def example(tmp_path):
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder)
    return folder


SIMULATION_STEP = "simulation: prompt and tuned in scripted scenarios, half adversarial"


def _steps(summary):
    return {s["name"]: s["reused"] for s in summary["steps"]}


def test_the_demo_runs_every_step_then_reuses_them(example, tiny_model_dir, tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out, example=example, quick=True, model=str(tiny_model_dir), progress=False)
    assert not any(_steps(first).values())
    assert len(first["steps"]) == 6
    report = (out / "report.html").read_text()
    for heading in (
        "Steps and time",
        "The ladder",
        "Retention",
        "Simulation",
        "p (McNemar exact)",
        "Training",
        "Where every number came from",
    ):
        assert heading in report
    ladder = json.loads((out / "ladder" / "ladder.json").read_text())
    assert ladder["order"] == ["base", "prompt", "rag", "tuned", "tuned+rag"]
    assert json.loads((out / "run" / "run.json").read_text())["status"] == "finished"
    assert (out / "run" / "retention.json").is_file()
    simulation = json.loads((out / "simulation" / "simulation.json").read_text())
    assert list(simulation["contestants"]) == ["prompt", "tuned"]
    assert simulation["n_scenarios"] == 4  # --quick: two everyday, two adversarial
    scenarios = simulation["scenarios"].values()
    assert sum(s["adversarial"] for s in scenarios) == 2
    assert all(set(s["contestants"]) == {"prompt", "tuned"} for s in scenarios)
    assert all(i["pass_rate"]["n"] == 4 for i in simulation["contestants"].values())
    assert simulation["paired"][0]["n"] == 4 and "p_value" in simulation["paired"][0]
    assert (out / "simulation" / "simulation.html").is_file()
    assert len((out / "simulation" / "transcripts.jsonl").read_text().splitlines()) == 8

    again = run_demo(out, example=example, quick=True, model=str(tiny_model_dir), progress=False)
    assert all(_steps(again).values())

    with (example / "docs" / "fees.md").open("a") as docs:
        docs.write("\nA paper statement costs 15 SEK.\n")
    edited = run_demo(out, example=example, quick=True, model=str(tiny_model_dir), progress=False)
    reused = _steps(edited)
    assert (
        reused["prepare data"]
        and reused["train: LoRA SFT + replay + retention probe, then the core suite"]
    )
    assert not reused["ladder: before tuning (base, prompt, rag)"]
    assert not reused["ladder: after tuning (all rungs)"]
    # the documents decide in_domain checks: every conversation is held again, appended
    assert not reused[SIMULATION_STEP]
    assert len((out / "simulation" / "transcripts.jsonl").read_text().splitlines()) == 16


def test_the_simulation_subset_is_chosen_by_the_adversarial_field():
    from specialize.simulate.config import load_scenarios

    scenarios = load_scenarios(EXAMPLE / "scenarios.yaml").scenarios
    for size in (1, 4, 8, 9):
        chosen = demo_scenarios(scenarios, size)
        assert len(chosen) == size and not any(s.simulated for s in chosen)
        assert sum(s.adversarial for s in chosen) == size // 2 or size == 1
    everyday_only = [s for s in scenarios if not s.adversarial]
    assert len(demo_scenarios(everyday_only, 4)) == 4  # a short group is filled from the other
    assert demo_scenarios(scenarios, 0) == []


def test_a_missing_scenario_file_names_the_way_out(example, tiny_model_dir, tmp_path):
    (example / "scenarios.yaml").unlink()
    with pytest.raises(NotFoundError, match="--simulation-scenarios 0"):
        run_demo(tmp_path / "out", example=example, quick=True, model=str(tiny_model_dir))


def test_a_step_reruns_when_its_key_changes_or_its_output_is_gone(tmp_path):
    calls = []
    steps = Steps(tmp_path)
    assert steps.run("s", "k1", lambda: calls.append(1) or "v") == "v"
    assert Steps(tmp_path).run("s", "k1", lambda: calls.append(2)) == "v"
    Steps(tmp_path).run("s", "k2", lambda: calls.append(3))
    Steps(tmp_path).run("s", "k2", lambda: calls.append(4), done=lambda: False)
    assert calls == [1, 3, 4]


def test_fingerprints_follow_file_content(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("a")
    first = fingerprint("x", path)
    path.write_text("b")
    assert fingerprint("x", path) != first
    assert fingerprint("x", tmp_path) != fingerprint("y", tmp_path)


def test_an_incomplete_example_folder_is_named(tmp_path):
    with pytest.raises(NotFoundError, match="ladder.yaml"):
        run_demo(tmp_path / "out", example=tmp_path)
