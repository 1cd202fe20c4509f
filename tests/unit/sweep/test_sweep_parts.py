"""The sweep's parts without training: search params, test-split refusal, the front, the
recommendation, and the pruning callback against a real Optuna pruner."""

from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from specialize.errors import ConfigError
from specialize.sweep.config import SearchParam, load_sweep, override
from specialize.sweep.pruning import Signal, TrialPruning
from specialize.sweep.results import pareto_front, recommend

NORDVIK = Path(__file__).resolve().parents[3] / "examples" / "nordvik"


def test_ranges_and_choices():
    assert SearchParam.model_validate({"low": 4, "high": 32}).kind == "int"
    assert SearchParam.model_validate({"low": 0.0, "high": 0.4}).kind == "float"
    assert SearchParam.model_validate({"choices": ["cosine", "linear"]}).kind == "choice"
    for bad, says in (
        ({"low": 0.0, "high": 1.0, "log": True}, "log-scale range needs low > 0"),
        ({"low": 1, "high": 1}, "impossible range"),
        ({"low": 1, "choices": [1]}, "either choices or a range"),
        ({"high": 3}, "needs both low and high"),
    ):
        with pytest.raises(ValueError, match=says):
            SearchParam.model_validate(bad)
    assert override("training.learning_rate", 0.001) == "training.learning_rate=0.001"
    assert override("adaptation.lora.target_modules", ["q_proj"]) == (
        "adaptation.lora.target_modules=[q_proj]"
    )


def test_a_test_split_is_refused_as_the_task(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "recipe": str(NORDVIK / "sft.yaml"),
                "trials": 2,
                "space": {"training.learning_rate": {"low": 1e-4, "high": 1e-3}},
                "objectives": {"task": {"data": str(NORDVIK / "data" / "test.jsonl")}},
            },
            sort_keys=False,
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "test.jsonl" in t)
    assert f"{path}:{line}: " in str(caught.value) and "is a test split" in str(caught.value)
    assert load_sweep(NORDVIK / "sweep.yaml").two_objectives


def trial(number, score, lost, budget_unit="points lost"):
    return {
        "number": number,
        "params": {"training.learning_rate": number},
        "run_id": f"run-{number}",
        "run_dir": f"/runs/{number}",
        "adapter": {"name": f"a{number}", "path": f"/runs/{number}/adapter"},
        "task": {
            "name": "policy",
            "metric": "contains",
            "score": {"mean": score, "ci95": [score - 0.1, score + 0.1], "n": 30},
            "gain_points": 100 * (score - 0.2),
        },
        "general": {"value": lost, "ci95": [lost - 1, lost + 1], "unit": budget_unit},
    }


def test_front_and_recommendation():
    trials = [trial(0, 0.5, 1.0), trial(1, 0.7, 8.0), trial(2, 0.4, 2.0), trial(3, 0.6, 0.5)]
    assert [t["number"] for t in pareto_front(trials)] == [1, 3]  # 0 and 2 are beaten by 3
    rec = recommend(trials, budget=5)
    assert rec["trial"] == 3 and rec["adapter"]["name"] == "a3" and rec["run_dir"] == "/runs/3"
    assert "3 of 4 completed trial(s) within the budget of 5" in rec["why"]
    assert recommend(trials, budget=None)["trial"] == 1
    none = recommend(trials, budget=0.1)
    assert none["trial"] is None and "least lost was 0.50 points lost" in none["why"]
    assert recommend([], budget=5)["trial"] is None


def test_pruning_callback_raises_when_the_median_pruner_says_so():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for loss in (1.0, 1.2):
        finished = study.ask()
        finished.report(loss, 2)
        study.tell(finished, loss)
    callback = TrialPruning([Signal("val_loss", study, study.ask())])
    state = SimpleNamespace(global_step=2)
    with pytest.raises(optuna.TrialPruned, match="validation loss 5 \\(MedianPruner\\)"):
        callback.on_evaluate(None, state, None, metrics={"eval_loss": 5.0})
    callback.finish(optuna.trial.TrialState.PRUNED)
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED
    kept = TrialPruning([Signal("val_loss", study, study.ask())])
    kept.on_evaluate(None, state, None, metrics={"eval_loss": 0.9})  # better than the median
    kept.finish(optuna.trial.TrialState.COMPLETE)
    assert study.trials[-1].value == 0.9
