from pathlib import Path

import pytest
from pydantic import Field

from specialize.config import Config, apply_overrides, build_config, config_diff, load_config
from specialize.errors import ConfigError, UserFileError


class Optim(Config):
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(0, ge=0, description="Warm-up steps.")


class Recipe(Config):
    model: str = Field(..., description="Model reference.")
    optim: Optim = Field(default_factory=Optim)
    datasets: list[str] = Field(default_factory=list)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_valid_file_loads_with_defaults(tmp_path):
    cfg = load_config(Recipe, write(tmp_path, "model: tiny\noptim:\n  warmup_steps: 5\n"))
    assert cfg.model == "tiny" and cfg.optim.warmup_steps == 5 and cfg.optim.learning_rate == 1e-4


def test_misspelled_key_names_line_and_suggests_closest(tmp_path):
    path = write(tmp_path, "model: tiny\noptim:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(Recipe, path)
    (problem,) = info.value.problems
    assert f"{path}:3" in problem
    assert "optim.learning_rat" in problem and "did you mean 'optim.learning_rate'" in problem


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "optim:\n  learning_rate: -1\n  warmup_step: 2\nextra: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(Recipe, path)
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 4, text
    assert "model: required field is missing" in text
    assert "optim.learning_rate" in text and "greater than 0" in text
    assert "did you mean 'optim.warmup_steps'" in text
    assert "unknown key 'extra'" in text and "valid keys" in text


def test_overrides_set_nested_fields_and_are_named_in_errors(tmp_path):
    path = write(tmp_path, "model: tiny\n")
    cfg = load_config(Recipe, path, ["optim.learning_rate=3e-4", "datasets=[a, b]"])
    assert cfg.optim.learning_rate == 3e-4 and cfg.datasets == ["a", "b"]
    with pytest.raises(ConfigError) as info:
        load_config(Recipe, path, ["optim.lr=1"])
    assert info.value.problems[0].startswith("--set optim.lr")


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["optim.lr"])


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "model: tiny\noptim: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(Recipe, path)
    assert f"{path}:" in info.value.problems[0] and "not valid YAML" in info.value.problems[0]


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserFileError, match="file not found"):
        load_config(Recipe, tmp_path / "nope.yaml")


def test_config_diff_lists_only_changed_fields():
    cfg = build_config(Recipe, {"model": "tiny", "optim": {"warmup_steps": 3}})
    assert config_diff(cfg) == {"model": (None, "tiny"), "optim.warmup_steps": (0, 3)}
