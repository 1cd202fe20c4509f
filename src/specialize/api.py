"""The Python API: the CLI's stages as functions, for notebooks and scripts.

    from specialize import prepare, train, evaluate, ladder, simulate

    manifest = prepare("data.yaml", "datasets/support")           # DatasetManifest
    run = train("sft.yaml", overrides=["training.epochs=1"])       # RunDir (run.path, run.adapter)
    report = evaluate(adapter=run.path, data="eval.jsonl", suite="core")  # eval.json as a dict
    result = ladder("ladder.yaml", "ladder-out")                   # ladder.json as a dict
    sim = simulate("scenarios.yaml", "sim-out")                    # simulation.json as a dict

Each takes a config file (with `overrides` as `--set a.b=c` does) or an already built config
object, writes exactly what the matching command writes, and raises the typed errors of
`specialize.errors` instead of printing them. Heavy libraries load on first call, not on import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from specialize.data.config import DataConfig
    from specialize.data.prepare import DatasetManifest
    from specialize.ladder.config import LadderConfig
    from specialize.simulate.config import SimulationConfig
    from specialize.track.rundir import RunDir
    from specialize.train.config import RecipeConfig

__all__ = ["evaluate", "ladder", "prepare", "simulate", "train"]


def prepare(
    config: str | Path | DataConfig,
    out: str | Path,
    *,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> DatasetManifest:
    """`specialize data prepare CONFIG --out OUT`: validate, clean, split; return the manifest."""
    from specialize.data.config import DataConfig, load_data_config
    from specialize.data.prepare import prepare as run_prepare

    if not isinstance(config, DataConfig):
        config = load_data_config(config, overrides)
    return run_prepare(config, out, progress=progress)


def train(
    recipe: str | Path | RecipeConfig,
    *,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> RunDir:
    """`specialize train RECIPE`: train, evaluate, register the adapter; return the run directory."""
    from specialize.adapters.registry import register_finished
    from specialize.train.config import RecipeConfig, load_recipe
    from specialize.train.run import train as run_train

    if not isinstance(recipe, RecipeConfig):
        recipe = load_recipe(recipe, overrides)
    run = run_train(recipe, progress=progress)
    register_finished(run.path)  # as `specialize train` does: training sits below the registry
    return run


def evaluate(
    model: str | None = None,
    *,
    adapter: str | Path | None = None,
    data: str | Path | None = None,
    metrics: list[str] | None = None,
    suite: str | None = None,
    system: str | None = None,
    out: str | Path = "eval.json",
    progress: bool = True,
) -> dict[str, Any]:
    """`specialize eval`: score a model (and adapter) on an eval file and/or a retention suite."""
    from specialize.errors import ConfigError
    from specialize.evaluate.evaluation import run_eval
    from specialize.models.catalog import DEFAULT_MODEL

    if data is None and suite is None:
        raise ConfigError(["give data=FILE, suite='core'|'standard'|'all', or both"])
    return run_eval(
        model or DEFAULT_MODEL,
        adapter=adapter,
        data=data,
        metrics=metrics,
        suite=suite,
        system=system,
        out=out,
        progress=progress,
    )


def ladder(
    config: str | Path | LadderConfig,
    out: str | Path = "ladder",
    *,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`specialize ladder CONFIG --out OUT`: base / prompt / RAG / tuned on the same items."""
    from specialize.ladder.config import LadderConfig, load_ladder
    from specialize.ladder.run import run_ladder

    if not isinstance(config, LadderConfig):
        config = load_ladder(config, overrides)
    return run_ladder(config, out, progress=progress)


def simulate(
    config: str | Path | SimulationConfig,
    out: str | Path = "simulation",
    *,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`specialize simulate SCENARIOS --out OUT`: every scenario with every contestant, checked."""
    from specialize.simulate.config import SimulationConfig, load_scenarios
    from specialize.simulate.run import run_simulation

    scenario_file = None
    if not isinstance(config, SimulationConfig):
        scenario_file = config
        config = load_scenarios(config, overrides)
    return run_simulation(config, out, scenario_file=scenario_file, progress=progress)
