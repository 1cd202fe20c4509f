"""Instruction tuning: chat data, loss on the assistant's tokens only."""

from __future__ import annotations

from specialize.models.loading import load_model
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt
from specialize.train.config import RecipeConfig
from specialize.train.datasets import gather_rows, tokenize_for_sft
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, build_sft_trainer, fit, plan_steps


def train_sft(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    model, tokenizer = load_model(recipe.model)
    model = adapt(model, recipe.adaptation)
    rows = gather_rows(
        recipe.data.train,
        recipe.data.val,
        _replay(recipe),
        run,
        recipe.model,
        epochs=_passes(recipe),
        seed=recipe.training.seed,
    )
    length = recipe.training.max_length
    train, val = (
        tokenize_for_sft(tokenizer, rows.train, length),
        tokenize_for_sft(tokenizer, rows.val, length),
    )
    plan = plan_steps(recipe, len(train), len(val), rows.epochs)
    bundle = build_sft_trainer(
        model, tokenizer, recipe, run, precision, plan, train, val, progress=progress
    )
    return fit(
        bundle, run, plan, tokenizer, resume_from=resume_from, full=recipe.adaptation.kind != "lora"
    )


def _replay(recipe: RecipeConfig) -> tuple[str, float] | None:
    replay = recipe.data.replay
    return (replay.source, replay.ratio) if replay else None


def _passes(recipe: RecipeConfig) -> int:
    """Return how many passes of data to lay out: enough for epochs (or max_steps, mixed per pass)."""
    import math

    return max(1, math.ceil(recipe.training.epochs))
