"""Instruction tuning: chat data, loss on the assistant's tokens only."""

from __future__ import annotations

from specialize.models.loading import load_model
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt, recipe_chat_template
from specialize.train.config import RecipeConfig
from specialize.train.datasets import recipe_rows, tokenize_for_sft
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, build_sft_trainer, fit, plan_steps
from specialize.train.vision import text_only_error, train_vision


def train_sft(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    if recipe.vision is not None:
        return train_vision(recipe, run, precision, resume_from=resume_from, progress=progress)
    model, tokenizer = load_model(recipe.model)
    tokenizer = recipe_chat_template(tokenizer, recipe)
    model = adapt(model, recipe.adaptation)
    rows = recipe_rows(recipe, run)
    text_only_error(rows.train + rows.val)
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
        bundle,
        run,
        plan,
        tokenizer,
        resume_from=resume_from,
        full=not recipe.adaptation.trains_adapter,
    )
