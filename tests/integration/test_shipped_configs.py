"""Every YAML config shipped in the repository validates, and each starts with the command that runs it."""

from pathlib import Path

import pytest

from specialize.cli.config import validate_file

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (REPO / "examples").rglob("*.yaml"))


def test_there_are_shipped_configs():
    assert SHIPPED, "examples/ should ship configs"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_config_validates(path):
    validate_file(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run: specialize "), "start with the command that runs it"


def test_shipped_scenario_files_load_with_their_cross_references():
    from specialize.simulate.config import SimulationConfig

    scenario_files = [p for p in SHIPPED if p.name == "scenarios.yaml"]
    assert scenario_files, "examples/nordvik/scenarios.yaml should ship"
    for path in scenario_files:
        config = validate_file(path)
        assert isinstance(config, SimulationConfig)
        assert all(s.persona in config.personas for s in config.scenarios)


def test_the_example_sweep_builds_an_ordinary_recipe_per_trial(tmp_path):
    """The sweep example is checked against its recipe and ladder, and a trial's recipe is the
    base recipe with the sweep's fixed overrides and the trial's values."""
    from specialize.sweep.config import load_sweep
    from specialize.sweep.study import TrialObjective

    sweep = load_sweep(REPO / "examples" / "nordvik" / "sweep.yaml")
    assert sweep.two_objectives and sweep.retention_budget is not None
    objective = TrialObjective(sweep, tmp_path, storage=None, progress=False)
    assert objective.spec.name == "policy" and objective.spec.data is None  # the val split
    point = sweep.start_with[0]
    recipe = objective.trial_recipe(point, 0)
    assert recipe.training.learning_rate == point["training.learning_rate"]
    assert recipe.adaptation.lora.r == point["adaptation.lora.r"]
    assert recipe.data.replay.ratio == point["data.replay.ratio"]
    assert recipe.training.max_steps == 10 and recipe.output.name == f"{sweep.name}-t000"
    assert recipe.retention.suite == "none"  # the sweep measures its own spread of the core suite
