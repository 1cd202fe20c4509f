"""The sweep config: a base recipe, a search space over its fields, objectives, a retention budget.

Loading checks everything that can be checked before a trial starts, and reports every problem at
once with file:line: each searched field is applied to the recipe as a `--set` override at both
ends of its range (and every choice) and validated by the recipe's own config; objective tasks
must exist; a budget needs a measure of general ability.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from specialize.config import (
    Config,
    apply_overrides,
    field_help,
    load_config,
    read_text,
    resolve_against,
    where_in,
)
from specialize.errors import ConfigError
from specialize.evaluate.metrics import GENERATIVE_METRICS
from specialize.train.config import RecipeConfig, load_recipe


class SearchParam(Config):
    """One searched recipe field: a range (low, high, optionally log or stepped) or choices."""

    low: float | None = Field(None, description="Smallest value of a range.")
    high: float | None = Field(None, description="Largest value of a range.")
    log: bool = Field(False, description="Sample the range on a log scale (learning rates).")
    step: float | None = Field(None, gt=0, description="Grid step inside the range.")
    type: Literal["float", "int"] | None = Field(
        None, description="float or int; default: int when low and high are both integers."
    )
    choices: list[Any] | None = Field(
        None, min_length=1, description="Values to choose from (instead of a range)."
    )

    @model_validator(mode="before")
    @classmethod
    def _ints_stay_ints(cls, data: Any) -> Any:
        # `low: 4, high: 32` searches integers (a LoRA rank); `low: 0.0, high: 0.4` floats.
        if isinstance(data, dict) and data.get("type") is None:
            low, high = data.get("low"), data.get("high")
            if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
                data = {**data, "type": "int"}
        return data

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchParam:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None:
                raise ValueError("give either choices or a range (low, high), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if not self.low < self.high:
            raise ValueError(
                f"impossible range: low ({self.low:g}) must be below high ({self.high:g})"
            )
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("a log-scale range cannot have a step")
        if self.kind == "int" and not (
            float(self.low).is_integer() and float(self.high).is_integer()
        ):
            raise ValueError("an int range needs integer low and high")
        return self

    @property
    def kind(self) -> str:
        """Return 'choice', 'int' or 'float'."""
        if self.choices is not None:
            return "choice"
        return self.type or "float"

    def representatives(self) -> list[Any]:
        """Return the values that are checked against the recipe before the sweep starts."""
        if self.choices is not None:
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class TaskObjective(Config):
    """The task score: a ladder task, or an eval file, scored on validation items."""

    ladder: str | None = Field(
        None,
        description="Ladder config whose task (metric, category, system prompt) is scored on the "
        "run's validation split.",
    )
    name: str | None = Field(None, description="With ladder: the task's name in the ladder.")
    data: str | None = Field(
        None,
        description="An eval file of validation items (never the test split); instead of ladder.",
    )
    metric: str = Field("contains", description=f"With data: {', '.join(GENERATIVE_METRICS)}.")
    category: str | None = Field(None, description="With data: keep rows of this category.")
    system: str | None = Field(None, description="With data: a system prompt for every item.")
    max_new_tokens: int = Field(64, ge=1, description="With data: generation budget per answer.")
    limit: int | None = Field(None, ge=1, description="Score only the first N items.")

    @model_validator(mode="after")
    def _one_source(self) -> TaskObjective:
        if (self.ladder is None) == (self.data is None):
            raise ValueError("give either ladder (with name) or data, exactly one")
        if self.ladder is not None and not self.name:
            raise ValueError("a ladder task needs name (the task's name in the ladder)")
        if self.metric not in GENERATIVE_METRICS:
            raise ValueError(
                f"unknown metric {self.metric!r}; use one of {sorted(GENERATIVE_METRICS)}"
            )
        return self


class GeneralObjective(Config):
    """General ability: points lost on the core retention suite, or drift (KL from the base)."""

    measure: Literal["retention", "drift"] = Field(
        "retention",
        description="retention: points lost on the core suite (paired, with CI); drift: mean KL "
        "of next-token distributions from the base on general prompts.",
    )
    items: int | None = Field(
        None,
        ge=10,
        le=310,
        description="Measure on an even spread of N core questions (or N drift prompts) instead of "
        "the run's whole retention suite: faster, wider intervals.",
    )


class Objectives(Config):
    task: TaskObjective = Field(..., description="What the specialist should get better at.")
    general: GeneralObjective | None = Field(
        None, description="What it should not lose; with it the sweep has two objectives (NSGA-II)."
    )


class PruningSection(Config):
    pruner: Literal["median", "percentile", "successive_halving", "none"] = Field(
        "median", description="Optuna pruner fed with each trial's validation loss."
    )
    percentile: float = Field(25.0, gt=0, lt=100, description="percentile: the kept share.")
    startup_trials: int = Field(
        2, ge=0, description="Trials that finish before any is pruned on validation loss."
    )
    warmup_steps: int = Field(
        0, ge=0, description="Training steps of a trial before it can be pruned on validation loss."
    )
    retention: bool = Field(
        True,
        description="Prune a trial whose retention probe (at each checkpoint) is past the budget; "
        "turns the probe on with the sweep's budget when the recipe has none.",
    )


class SweepConfig(Config):
    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Sweep name: the study's name and the tag of every trial's run.",
    )
    recipe: str = Field(..., description="The base recipe (YAML) every trial starts from.")
    set: list[str] = Field(
        default_factory=list,
        description="Overrides applied to the recipe in every trial (a.b=c), e.g. fewer steps.",
    )
    space: dict[str, SearchParam] = Field(
        ..., min_length=1, description="Recipe fields to search, by their --set path."
    )
    trials: int = Field(..., ge=1, description="Trials that end (completed, pruned or failed).")
    objectives: Objectives
    retention_budget: float | None = Field(
        None,
        gt=0,
        description="Most points of general ability (or KL, for drift) the recommendation may lose.",
    )
    seed: int = Field(0, description="Seed of the sampler.")
    population_size: int | None = Field(
        None, ge=2, description="NSGA-II population; default: a third of the trials (2 to 50)."
    )
    pruning: PruningSection = Field(default_factory=PruningSection)
    start_with: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Points tried first, before the sampler's own (e.g. the recipe's current values).",
    )

    @property
    def two_objectives(self) -> bool:
        return self.objectives.general is not None


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Return the sweep in `path`, checked against its recipe; raise ConfigError listing every
    problem with file:line before any trial starts."""
    path = Path(path)
    raw = yaml.safe_load(read_text(path)) or {}
    problems: list[str] = []
    try:
        config = load_config(SweepConfig, path, overrides)
    except ConfigError as exc:
        problems.extend(exc.problems)
        config = None
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides or [])
        problems += _check_against_recipe(path, raw)
        problems += _check_task(path, raw)
        problems += _check_budget(path, raw)
    if problems:
        raise ConfigError(_in_file_order(problems), source=str(path))
    return resolve_paths(config, path.parent)


def resolve_paths(config: SweepConfig, base: Path) -> SweepConfig:
    config.recipe = resolve_against(base, config.recipe)
    task = config.objectives.task
    task.ladder = resolve_against(base, task.ladder)
    task.data = resolve_against(base, task.data)
    return config


def override(path: str, value: Any) -> str:
    """Return `path=value` in --set syntax (the value as YAML, so it parses back to itself)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return f"{path}={text.removesuffix('...').strip()}"


# --- checks that need the recipe and the objective's files ---------------------------------


def _check_against_recipe(path: Path, raw: dict) -> list[str]:
    recipe_ref = raw.get("recipe")
    if not isinstance(recipe_ref, str):
        return []
    recipe_path = Path(resolve_against(path.parent, recipe_ref))
    fixed = [str(s) for s in raw.get("set") or []]
    try:
        load_recipe(recipe_path, fixed)
        recipe_raw = yaml.safe_load(read_text(recipe_path)) or {}
    except ConfigError as exc:
        return [
            f"{where_in(path, ('recipe',))}: the recipe has problems: {p}" for p in exc.problems
        ]
    except Exception as exc:  # a missing or unreadable file
        return [f"{where_in(path, ('recipe',))}: recipe {recipe_ref!r}: {exc}"]
    problems = []
    space = raw.get("space")
    for field, spec in space.items() if isinstance(space, dict) else []:
        try:
            param = SearchParam.model_validate(spec)
        except ValidationError:
            continue  # reported by the sweep's own validation, with its line
        problems += _check_field(path, recipe_raw, fixed, str(field), param)
    for index, point in enumerate(raw.get("start_with") or []):
        if not isinstance(point, dict):
            continue
        for field in point:
            if field not in (space or {}):
                problems.append(
                    f"{where_in(path, ('start_with', str(index), str(field)))}: start_with names "
                    f"{field!r}, which is not in the space"
                )
    return problems


def _check_field(
    path: Path, recipe_raw: dict, fixed: list[str], field: str, param: SearchParam
) -> list[str]:
    where = where_in(path, ("space", field))
    for value in param.representatives():
        data = apply_overrides(recipe_raw, [*fixed, override(field, value)])
        try:
            RecipeConfig.model_validate(data)
        except ValidationError as exc:
            return [_describe_field_error(where, field, value, exc)]
    return []


def _describe_field_error(where: str, field: str, value: Any, exc: ValidationError) -> str:
    parts = tuple(field.split("."))
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden" and parts[: len(loc)] == loc:
            known = [name for name, _, _ in field_help(RecipeConfig)]
            close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else " (see `specialize config fields recipe`)"
            )
            return f"{where}: space {field!r}: unknown recipe field{hint}"
        if loc == parts:
            return f"{where}: space {field!r}: the recipe refuses {value!r}: {err['msg']}"
    first = exc.errors(include_url=False)[0]
    return (
        f"{where}: space {field!r}: with {field}={value!r} the recipe is invalid: "
        f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    )


def _check_task(path: Path, raw: dict) -> list[str]:
    task = ((raw.get("objectives") or {}) if isinstance(raw.get("objectives"), dict) else {}).get(
        "task"
    )
    if not isinstance(task, dict):
        return []
    if isinstance(task.get("ladder"), str):
        return _check_ladder_task(path, task)
    if isinstance(task.get("data"), str):
        return _check_eval_file(path, raw, task["data"])
    return []


def _check_ladder_task(path: Path, task: dict) -> list[str]:
    from specialize.ladder.config import load_ladder

    ladder_path = Path(resolve_against(path.parent, task["ladder"]))
    try:
        ladder = load_ladder(ladder_path)
    except ConfigError as exc:
        return [f"{where_in(path, ('objectives', 'task', 'ladder'))}: {p}" for p in exc.problems]
    except Exception as exc:
        return [
            f"{where_in(path, ('objectives', 'task', 'ladder'))}: ladder {task['ladder']!r}: {exc}"
        ]
    names = [t.name for t in ladder.tasks]
    if task.get("name") is not None and task["name"] not in names:
        close = difflib.get_close_matches(str(task["name"]), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return [
            f"{where_in(path, ('objectives', 'task', 'name'))}: unknown objective task "
            f"{task['name']!r} in {ladder_path.name}{hint} (its tasks: {', '.join(names)})"
        ]
    return []


def _check_eval_file(path: Path, raw: dict, data: str) -> list[str]:
    where = where_in(path, ("objectives", "task", "data"))
    file = Path(resolve_against(path.parent, data))
    if not file.is_file():
        return [f"{where}: eval file {data!r} not found -- give a file of validation items"]
    if file.stem == "test" or file.resolve() in _test_splits(path, raw):
        return [
            f"{where}: {data!r} is a test split; a sweep chooses on validation items only "
            "-- give the val split (the test split stays untouched for the final comparison)"
        ]
    return []


def _test_splits(path: Path, raw: dict) -> set[Path]:
    """Return the files the recipe's data configs pin to the test split."""
    recipe_ref = raw.get("recipe")
    found: set[Path] = set()
    try:
        recipe = load_recipe(Path(resolve_against(path.parent, recipe_ref)))
    except Exception:
        return found
    for ref in recipe.data.train:
        ref_path = Path(ref)
        if ref_path.is_dir():
            found.add((ref_path / "test.jsonl").resolve())
        elif ref_path.suffix in (".yaml", ".yml") and ref_path.is_file():
            data = yaml.safe_load(ref_path.read_text()) or {}
            for source in data.get("sources") or []:
                if isinstance(source, dict) and source.get("split") == "test":
                    found.add((ref_path.parent / str(source.get("path"))).resolve())
    return found


def _check_budget(path: Path, raw: dict) -> list[str]:
    objectives = raw.get("objectives") if isinstance(raw.get("objectives"), dict) else {}
    if raw.get("retention_budget") is not None and not objectives.get("general"):
        return [
            f"{where_in(path, ('retention_budget',))}: retention_budget without a retention suite: "
            "add objectives.general (measure: retention on the core suite, or drift), or drop the budget"
        ]
    return []


def _in_file_order(problems: list[str]) -> list[str]:
    """Return the problems without repeats, sorted by their line in the file."""

    def line(problem: str) -> int:
        match = re.match(r"^[^:]*:(\d+):", problem)
        return int(match.group(1)) if match else 0

    return sorted(dict.fromkeys(problems), key=line)
