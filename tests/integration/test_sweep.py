"""`specialize sweep` on the tiny model: trials are registered runs tagged with the sweep, the front
and the recommendation follow from the trials' numbers, a killed sweep resumes without repeating a
finished trial, failing and pruned trials are recorded with their reasons, config errors name
file:line before any trial starts, and sweep.html renders in headless chromium.

One sweep (three short trials, two objectives) is shared by the module; its trials train 2 steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from specialize.cli.main import main

REPO = Path(__file__).resolve().parents[2]
NORDVIK = REPO / "examples" / "nordvik"
SUPPORT = REPO / "examples" / "quickstart" / "support.jsonl"
SWEEP = "tiny-sweep"


@pytest.fixture(scope="module")
def module_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(autouse=True)
def home(module_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test of this module sees the shared sweep's home (registry, runs)."""
    return _use_home(module_home, monkeypatch)


def _use_home(root: Path, patch) -> Path:
    patch.setenv("SPECIALIZE_HOME", str(root / "home"))
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("TOKENIZERS_PARALLELISM", "false")
    return root / "home"


def write_recipe(folder: Path, model: Path) -> Path:
    recipe = {
        "model": str(model),
        "method": "sft",
        "data": {
            "train": [str(NORDVIK / "data" / "train.jsonl")],
            "val": [str(NORDVIK / "data" / "val.jsonl")],
            "replay": {"source": str(SUPPORT), "ratio": 0.2},
        },
        "training": {"max_steps": 2, "batch_size": 4, "max_length": 192, "seed": 7},
        "eval": {"every_steps": 2, "patience": None},
        "retention": {"probe_items": 10},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def write_sweep(folder: Path, **fields) -> Path:
    sweep = {
        "name": SWEEP,
        "recipe": "recipe.yaml",
        "trials": 3,
        "seed": 3,
        "space": {
            "training.learning_rate": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
            "adaptation.lora.r": {"choices": [2, 4, 8]},
            "data.replay.ratio": {"low": 0.0, "high": 0.4},
        },
        "objectives": {
            "task": {
                "data": str(NORDVIK / "data" / "val.jsonl"),
                "category": "policy",
                "metric": "f1",
                "max_new_tokens": 16,
                "limit": 6,
            },
            "general": {"measure": "retention", "items": 10},
        },
        "retention_budget": 5,
        # Probe pruning is the failing sweep's subject; here the probe would only cost time.
        "pruning": {"pruner": "median", "startup_trials": 5, "retention": False},
        **fields,
    }
    path = folder / f"{sweep['name']}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swept(module_home: Path, tiny_model_dir: Path):
    """One trial, a kill during the next, then the sweep run again to its three trials."""
    with pytest.MonkeyPatch.context() as patch:
        _use_home(module_home, patch)
        folder = module_home / "config"
        folder.mkdir()
        write_recipe(folder, tiny_model_dir)
        config = write_sweep(folder)
        out = module_home / "out"
        args = ["sweep", str(config), "--out", str(out), "--no-progress"]
        assert main([*args, "--set", "trials=1"]) == 0
        first = json.loads((out / "sweep.json").read_text())
        run0 = Path(first["trials"][0]["run_dir"])
        record0 = (run0 / "run.json").read_text()

        # A kill during the next trial leaves it running in the study, parameters drawn.
        study = optuna.load_study(study_name=SWEEP, storage=f"sqlite:///{out / 'study.db'}")
        killed = study.ask()
        killed_params = {
            "training.learning_rate": killed.suggest_float(
                "training.learning_rate", 1.0e-4, 3.0e-2, log=True
            ),
            "adaptation.lora.r": killed.suggest_categorical("adaptation.lora.r", [2, 4, 8]),
            "data.replay.ratio": killed.suggest_float("data.replay.ratio", 0.0, 0.4),
        }
        assert main(args) == 0
        results = json.loads((out / "sweep.json").read_text())
        yield SimpleNamespace(
            out=out,
            config=config,
            first=first,
            run0=run0,
            record0=record0,
            killed=killed.number,
            killed_params=killed_params,
            results=results,
        )


def completed(results: dict) -> list[dict]:
    return [t for t in results["trials"] if t["state"] == "complete"]


def test_trials_are_registered_runs_tagged_with_the_sweep(swept):
    from specialize.adapters import registry as adapters
    from specialize.track import registry
    from specialize.track.runs import list_rows

    trials = completed(swept.results)
    assert len(trials) == 3, swept.results["counts"]
    tagged = [r for r in registry.list_runs() if SWEEP in (r.get("tags") or [])]
    assert sorted(r["id"] for r in tagged) == sorted(t["run_id"] for t in trials)
    for trial in trials:
        run = Path(trial["run_dir"])
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "finished" and (run / "report.html").is_file()
        assert (run / "sweep-trial.json").is_file()
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["training"]["learning_rate"] == pytest.approx(
            trial["params"]["training.learning_rate"]
        )
        assert config["adaptation"]["lora"]["r"] == trial["params"]["adaptation.lora.r"]
        assert config["training"]["max_steps"] == 2
        assert SWEEP in adapters.get(trial["adapter"]["name"])["tags"]
        assert Path(trial["adapter"]["path"], "adapter_config.json").is_file()
        task, general = trial["task"], trial["general"]
        assert task["score"]["n"] == 6 and len(task["score"]["ci95"]) == 2
        assert task["gain_ci95_points"][0] <= task["gain_points"] <= task["gain_ci95_points"][1]
        assert general["n"] == 10 and general["unit"] == "points lost"
    listed = list_rows(tag=SWEEP)  # what `specialize runs list --tag` shows
    assert sorted(r["id"] for r in listed) == sorted(t["run_id"] for t in trials)


def test_front_and_recommendation_follow_from_the_trials(swept):
    results = swept.results
    trials = completed(results)

    def beats(a, b):
        sa, sb = a["task"]["score"]["mean"], b["task"]["score"]["mean"]
        la, lb = a["general"]["value"], b["general"]["value"]
        return sa >= sb and la <= lb and (sa > sb or la < lb)

    front = {t["number"] for t in trials if not any(beats(o, t) for o in trials)}
    assert set(results["front"]) == front and front
    # Optuna's own front over the values it was told is the same.
    study = optuna.load_study(study_name=SWEEP, storage=f"sqlite:///{swept.out / 'study.db'}")
    assert {t.number for t in study.best_trials} == front
    for trial in trials:  # the gain is the score against the same base score, in points
        base = trial["task"]["base"]["mean"]
        assert trial["task"]["gain_points"] == pytest.approx(
            100 * (trial["task"]["score"]["mean"] - base), abs=0.01
        )

    within = [t for t in trials if t["general"]["value"] <= results["retention_budget"]]
    rec = results["recommendation"]
    if within:
        top = max(t["task"]["score"]["mean"] for t in within)
        chosen = next(t for t in trials if t["number"] == rec["trial"])
        assert chosen["task"]["score"]["mean"] == top and chosen in within
        assert rec["run_id"] == chosen["run_id"] and rec["adapter"] == chosen["adapter"]
        assert "within the budget of 5" in rec["why"]
    else:
        assert rec["trial"] is None and "budget" in rec["why"]
    assert results["sampler"] == "NSGAIISampler"
    importances = results["importances"]
    assert importances["completed_trials"] == 3
    for name in ("task_score", "general_lost"):  # Optuna's numbers, or why there are none
        values = importances[name]
        assert "note" in values or set(values) == set(trials[0]["params"]), values


def test_a_killed_sweep_resumes_without_repeating_finished_trials(swept, cli):
    first, results = swept.first, swept.results
    assert [t["state"] for t in first["trials"]] == ["complete"]
    trial0 = results["trials"][0]
    assert trial0["run_id"] == first["trials"][0]["run_id"]
    assert (swept.run0 / "run.json").read_text() == swept.record0  # not trained again
    killed = results["trials"][swept.killed]
    assert killed["state"] == "fail" and killed["reason"].startswith("interrupted")
    retry = next(t for t in results["trials"] if t["retry_of"] == swept.killed)
    assert retry["state"] == "complete"
    assert retry["params"] == pytest.approx(swept.killed_params)
    runs = sorted(p.name for p in (swept.out / "runs").iterdir())
    assert len(runs) == 3 == len(set(t["run_id"] for t in completed(results)))
    assert results["counts"] == {"complete": 3, "fail": 1}
    # Run once more: every trial has ended, nothing trains; --json prints sweep.json, nothing else.
    code, out, _ = cli("sweep", swept.config, "--out", swept.out, "--no-progress", "--json")
    assert code == 0
    again = json.loads((swept.out / "sweep.json").read_text())
    assert [t["run_id"] for t in again["trials"]] == [t["run_id"] for t in results["trials"]]
    assert json.loads(out)["trials"] == again["trials"]


def test_sweep_page_renders_in_chromium(swept):
    from playwright.sync_api import sync_playwright

    from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_FLAGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto((swept.out / "sweep.html").as_uri())
        assert page.title() == f"Sweep {SWEEP}"
        front = page.locator("img[alt='Pareto front']")
        assert front.count() == 1
        assert front.evaluate("img => img.complete && img.naturalWidth > 0")
        rows = page.locator("section:has(h2:text('Trials')) tbody tr")
        assert rows.count() == len(swept.results["trials"])
        assert page.get_by_text("(front)").count() == len(swept.results["front"])
        browser.close()


def test_failing_and_pruned_trials_are_recorded_and_the_sweep_goes_on(
    module_home, tiny_model_dir, cli
):
    folder = module_home / "failing"
    folder.mkdir()
    write_recipe(folder, tiny_model_dir)
    config = write_sweep(
        folder,
        name="diverging",
        trials=2,
        set=["training.max_grad_norm=1.0e+9", "training.precision=fp32"],
        space={"training.learning_rate": {"low": 1.0e-4, "high": 1.0e30, "log": True}},
        start_with=[{"training.learning_rate": 1.0e30}, {"training.learning_rate": 1.0e-3}],
        objectives={
            "task": {"data": str(NORDVIK / "data" / "val.jsonl"), "limit": 4},
            "general": {"measure": "drift", "items": 10},
        },
        retention_budget=1.0e-9,  # any drift at the first checkpoint's probe prunes
        pruning={"pruner": "none", "retention": True},
    )
    code, out, err = cli("sweep", config, "--out", module_home / "failing-out", "--no-progress")
    assert code == 0, err
    results = json.loads((module_home / "failing-out" / "sweep.json").read_text())
    failed, pruned = results["trials"]
    assert failed["state"] == "fail" and "non-finite" in failed["reason"], failed
    assert pruned["state"] == "pruned" and "retention probe (drift_kl)" in pruned["reason"]
    record = json.loads(Path(pruned["run_dir"], "run.json").read_text())
    assert record["status"] == "pruned" and record["pruned"] == pruned["reason"]
    assert results["recommendation"]["trial"] is None
    assert "recommendation: none" in out


def test_config_problems_are_reported_at_once_with_file_and_line(tmp_path, tiny_model_dir, cli):
    write_recipe(tmp_path, tiny_model_dir)
    config = write_sweep(
        tmp_path,
        space={
            "training.learning_rat": {"low": 1e-4, "high": 1e-2, "log": True},
            "adaptation.lora.r": {"low": 32, "high": 4},
        },
        objectives={"task": {"ladder": str(NORDVIK / "ladder.yaml"), "name": "polcy"}},
    )
    lines = config.read_text().splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if text in line)

    out = tmp_path / "out"
    code, _, err = cli("sweep", config, "--out", out)
    assert code == 2 and "4 problem(s)" in err, err
    assert (
        f"{config}:{line_of('training.learning_rat')}: space 'training.learning_rat': unknown recipe field; did you mean 'training.learning_rate'?"
        in err
    )
    assert f"{config}:{line_of('adaptation.lora.r')}:" in err and "impossible range" in err
    assert f"{config}:{line_of('polcy')}: unknown objective task 'polcy'" in err
    assert (
        f"{config}:{line_of('retention_budget')}: retention_budget without a retention suite" in err
    )
    assert not out.exists(), "nothing may start before the config is valid"
