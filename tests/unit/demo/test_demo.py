"""The demo pipeline on the tiny model: every step runs, a re-run re-uses them, edits re-run only
what they touch. The real default model runs it in tests/integration/test_demo.py."""

import json
import shutil

import pytest

from specialize.demo.pipeline import EXAMPLE, run_demo
from specialize.demo.steps import Steps, fingerprint
from specialize.errors import NotFoundError


@pytest.fixture
def example(tmp_path):
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder)
    return folder


def _steps(summary):
    return {s["name"]: s["reused"] for s in summary["steps"]}


def test_the_demo_runs_every_step_then_reuses_them(example, tiny_model_dir, tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out, example=example, quick=True, model=str(tiny_model_dir), progress=False)
    assert not any(_steps(first).values())
    assert len(first["steps"]) == 5
    report = (out / "report.html").read_text()
    for heading in (
        "Steps and time",
        "The ladder",
        "Retention",
        "Training",
        "Where every number came from",
    ):
        assert heading in report
    ladder = json.loads((out / "ladder" / "ladder.json").read_text())
    assert ladder["order"] == ["base", "prompt", "rag", "tuned", "tuned+rag"]
    assert json.loads((out / "run" / "run.json").read_text())["status"] == "finished"
    assert (out / "run" / "retention.json").is_file()

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
