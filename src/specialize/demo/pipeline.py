"""`specialize demo`: the whole product on the embedded default model and the Nordvik example.

  1. prepare the data (validation, cleaning, dedup, leakage, splits, report)
  2. the ladder before tuning: base, engineered prompt, retrieval
  3. LoRA SFT with replay, validation early stopping and a retention budget probed at checkpoints;
     the retention suite (core) measured on the result, base beside it
  4. the final ladder: the same items with the tuned adapter, alone and with retrieval
  5. a bounded simulation: a few scripted scenarios of examples/nordvik/scenarios.yaml, half of
     them adversarial, held by the engineered prompt and the tuned adapter (paired, McNemar)
  6. one HTML report and a terminal summary

Every step is keyed by the hash of what it reads (steps.json), so a re-run re-uses finished steps
and an interrupted training run is resumed from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from specialize.artifacts import LadderRecord, RunRecord
from specialize.config import dump_config
from specialize.demo.steps import Steps, fingerprint
from specialize.errors import NotFoundError

log = logging.getLogger(__name__)

# The example ships in the repository, beside the package's source tree.
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "nordvik"
# --quick: the same pipeline in a few minutes, for tests and a first look; its numbers mean little.
QUICK = {
    "items_per_task": 6,
    "training": {"max_steps": 4, "epochs": 1},
    "eval": {"every_steps": 2},
    "replay_rows": 16,
    "probe_items": 10,
    "simulation_scenarios": 4,
}
# The simulation step: how many scenarios (half adversarial) and how long an assistant turn is.
# Both keep it to about two minutes of CPU on the default model.
SIMULATION_SCENARIOS = 8
SIMULATION_REPLY_TOKENS = 48


def run_demo(
    out: str | Path,
    *,
    example: Path | None = None,
    quick: bool = False,
    model: str | None = None,
    progress: bool = True,
    simulation_scenarios: int | None = None,
) -> dict:
    """Run (or re-use) every step; write report.html; return the summary the terminal shows.

    `model` replaces the example's model everywhere (tests use a tiny one). `simulation_scenarios`
    bounds the simulation step (default 8, 4 with `quick`; 0 leaves it out)."""
    from specialize.models.catalog import DEFAULT_MODEL
    from specialize.models.loading import content_hash, resolve_model

    out = Path(out).resolve()
    if simulation_scenarios is None:
        simulation_scenarios = QUICK["simulation_scenarios"] if quick else SIMULATION_SCENARIOS
    example = _example_dir(example, simulation=simulation_scenarios > 0)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out)
    model = model or DEFAULT_MODEL
    model_hash = steps.run(
        "materialise the default model",
        fingerprint("model", model),
        lambda: content_hash(resolve_model(model).path),
        done=lambda: resolve_model(model).path.is_dir(),
    )
    data = out / "data"
    _prepare_data(steps, example, data, model, progress)
    baseline = _ladder(steps, example, out, data, model, model_hash, quick, progress, tuned=None)
    run_dir = _train(steps, example, out, data, model, model_hash, quick, progress)
    final = _ladder(steps, example, out, data, model, model_hash, quick, progress, tuned=run_dir)
    simulation = None
    if simulation_scenarios > 0:
        simulation = _simulate(
            steps, example, out, data, model, model_hash, run_dir, simulation_scenarios, progress
        )
    summary = {
        "quick": quick,
        "out": str(out),
        "model": {"ref": model, "content_hash": model_hash},
        "data": str(data),
        "baseline_ladder": str(out / "ladder-before" / "ladder.json"),
        "ladder": str(out / "ladder" / "ladder.json"),
        "run": str(run_dir),
        "simulation": simulation,
        "steps": [
            {"name": r.name, "seconds": r.seconds, "reused": r.reused} for r in steps.results
        ],
    }
    from specialize.demo.report import write_report

    summary["report"] = str(write_report(summary, baseline, final))
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _example_dir(example: Path | None, *, simulation: bool = True) -> Path:
    folder = Path(example) if example else EXAMPLE
    needed = ["data.yaml", "ladder.yaml", "sft.yaml", "docs"]
    missing = [name for name in needed if not (folder / name).exists()]
    if simulation and not (folder / "scenarios.yaml").is_file():
        missing.append("scenarios.yaml (or pass --simulation-scenarios 0)")
    if missing:
        raise NotFoundError(
            f"the demo example is incomplete (missing {', '.join(missing)})",
            where=str(folder),
            fix="run from a clone of the repository, or pass --example DIR with data.yaml, ladder.yaml, sft.yaml, scenarios.yaml and docs/",
        )
    return folder


def _prepare_data(steps: Steps, example: Path, data: Path, model: str, progress: bool) -> None:
    from specialize.data.config import load_data_config
    from specialize.data.prepare import prepare

    config = load_data_config(example / "data.yaml")
    config.model = model
    key = fingerprint("prepare", dump_config(config), *[Path(s.path) for s in config.sources])

    def compute() -> dict:
        shutil.rmtree(data, ignore_errors=True)
        manifest = prepare(config, data, progress=progress)
        return manifest.counts

    steps.run("prepare data", key, compute, done=lambda: (data / "manifest.json").is_file())


def _ladder(
    steps, example, out, data, model, model_hash, quick, progress, *, tuned: Path | None
) -> dict:
    from specialize.ladder.config import load_ladder
    from specialize.ladder.run import run_ladder

    config = load_ladder(example / "ladder.yaml")
    config.model = model
    for task in config.tasks:
        task.data = str(data / "test.jsonl")  # the held-out split, as prepared
    config.prompt.examples = str(data / "train.jsonl")
    if quick:
        config.limit = QUICK["items_per_task"]
    if tuned is None:
        config.rungs = ["base", "prompt", "rag"]
        folder, name = out / "ladder-before", "ladder: before tuning (base, prompt, rag)"
    else:
        config.rungs = ["base", "prompt", "rag", "tuned", "tuned+rag"]
        config.tuned.adapters = [f"nordvik={tuned}"]
        folder, name = out / "ladder", "ladder: after tuning (all rungs)"
    inputs = [Path(config.tasks[0].data), Path(config.prompt.examples), Path(config.rag.documents)]
    if tuned is not None:
        inputs.append(tuned / "adapter")
    key = fingerprint("ladder", dump_config(config), model_hash, *inputs)
    steps.run(
        name,
        key,
        lambda: run_ladder(config, folder, cache=out / "cache" / "ladder", progress=progress)[
            "created"
        ],
        done=lambda: (folder / "ladder.json").is_file(),
    )
    return LadderRecord.read(folder / "ladder.json").to_dict()


def _train(steps, example, out, data, model, model_hash, quick, progress) -> Path:
    from specialize.adapters.registry import register_finished
    from specialize.train.config import load_recipe
    from specialize.train.run import resume, train

    recipe = load_recipe(example / "sft.yaml")
    recipe.model = model
    recipe.data.train = [str(data)]
    run_dir = out / "run"
    recipe.output.dir = str(run_dir)
    recipe.output.name = "nordvik-demo"
    if quick:
        for field, value in QUICK["training"].items():
            setattr(recipe.training, field, value)
        recipe.eval.every_steps = QUICK["eval"]["every_steps"]
        recipe.retention.probe_items = QUICK["probe_items"]
        if recipe.data.replay:
            recipe.data.replay.rows = QUICK["replay_rows"]
    resolved = dump_config(recipe)
    key = fingerprint("train", resolved, model_hash, data / "manifest.json")

    def compute() -> str:
        config_file = run_dir / "config.yaml"
        if config_file.is_file() and yaml.safe_load(config_file.read_text()) == yaml.safe_load(
            resolved
        ):
            resume(run_dir, progress=progress)  # same recipe, interrupted: continue it
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            train(recipe, progress=progress)
        register_finished(run_dir)
        return str(run_dir)

    def finished() -> bool:
        record = RunRecord.read_if_present(run_dir / "run.json")
        return record is not None and record.status == "finished"

    steps.run(
        "train: LoRA SFT + replay + retention probe, then the core suite",
        key,
        compute,
        done=finished,
    )
    return run_dir


def demo_scenarios(scenarios: list, size: int) -> list:
    """The first `size` scripted scenarios in file order, half of them adversarial (by the
    scenario's `adversarial` field); a group that runs short is filled from the other. Simulated
    users are left out: each of their turns would cost a generation of its own."""
    scripted = [s for s in scenarios if not s.simulated]
    hostile = [s for s in scripted if s.adversarial]
    everyday = [s for s in scripted if not s.adversarial]
    take_hostile = min(len(hostile), max(size // 2, size - len(everyday)))
    chosen = {s.name for s in hostile[:take_hostile] + everyday[: size - take_hostile]}
    return [s for s in scripted if s.name in chosen]


def _simulate(steps, example, out, data, model, model_hash, run_dir, size, progress) -> str:
    """The engineered prompt and the tuned adapter in the same scripted conversations."""
    from specialize.simulate.config import Contestant, load_scenarios
    from specialize.simulate.run import run_simulation

    scenario_file = example / "scenarios.yaml"
    config = load_scenarios(
        scenario_file, [f"model={model}", f"reply_tokens={SIMULATION_REPLY_TOKENS}"]
    )
    config.scenarios = demo_scenarios(config.scenarios, size)
    config.prompt.examples = str(data / "train.jsonl")  # the ladder's few-shot pool, as prepared
    config.contestants = [c for c in config.contestants if c.kind == "prompt"][:1] + [
        Contestant(name="tuned", kind="tuned", adapter=str(run_dir))
    ]
    folder = out / "simulation"
    inputs = [scenario_file, Path(config.prompt.examples), run_dir / "adapter"]
    inputs += [Path(p) for p in (config.domain.documents, config.rag.documents) if p]
    key = fingerprint("simulate", dump_config(config), model_hash, *inputs)

    def compute() -> str:
        # Finished conversations in transcripts.jsonl are re-used by the simulation itself, so an
        # interrupted step resumes where it stopped.
        run_simulation(config, folder, scenario_file=scenario_file, progress=progress)
        return str(folder / "simulation.json")

    return steps.run(
        "simulation: prompt and tuned in scripted scenarios, half adversarial",
        key,
        compute,
        done=lambda: (folder / "simulation.json").is_file(),
    )
