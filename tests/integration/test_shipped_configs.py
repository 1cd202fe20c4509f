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
