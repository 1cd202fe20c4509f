"""Continued pretraining (domain adaptation): raw text, every token trained, packed into full sequences.

The only differences from SFT: every token is a label, and rows are packed (best-fit, long
documents split) into max_length sequences whose documents do not attend to each other.
"""

from __future__ import annotations

from specialize.models.loading import load_model
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt
from specialize.train.config import RecipeConfig
from specialize.train.datasets import pack_rows, recipe_rows, tokenize_for_cpt
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, build_sft_trainer, fit, plan_steps
from specialize.train.vision import text_only_error


def train_cpt(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    model, tokenizer = load_model(recipe.model)
    model = adapt(model, recipe.adaptation)
    rows = recipe_rows(recipe, run)
    text_only_error(rows.train + rows.val)
    length = recipe.training.max_length
    train = pack_rows(tokenize_for_cpt(tokenizer, rows.train), length)
    val = pack_rows(tokenize_for_cpt(tokenizer, rows.val), length)
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
