"""Learning from preferences with DPO: the policy is the base plus a LoRA adapter; the reference
is the same base with the adapter switched off (TRL does this when no ref_model is given), so no
second copy of the model sits in memory."""

from __future__ import annotations

from specialize.errors import ConfigError
from specialize.models.loading import load_model
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt, recipe_chat_template
from specialize.train.config import RecipeConfig
from specialize.train.datasets import recipe_rows
from specialize.train.packed_rows import pack_padded_rows, packing_trainer
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, plan_steps, to_trl_args, train_with

PREFERENCE_KEYS = ("prompt", "chosen", "rejected")


def train_dpo(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = load_model(recipe.model)
    tokenizer = recipe_chat_template(tokenizer, recipe)
    model = adapt(model, recipe.adaptation)
    rows = recipe_rows(recipe, run)
    train, val = preference_pairs(rows.train, "train"), preference_pairs(rows.val, "val")
    plan = plan_steps(recipe, len(train), len(val), rows.epochs)
    args = to_trl_args(
        recipe,
        run,
        precision,
        plan,
        DPOConfig,
        beta=recipe.preference.beta,
        max_length=recipe.training.max_length,
        padding_free=False,  # TRL 1.16 switches its own off; packing is done here (packed_rows)
    )
    outcome, _ = train_with(
        packing_trainer(DPOTrainer, model, recipe.training.padding_free, pack_padded_rows),
        recipe,
        run,
        tokenizer,
        plan,
        train,
        val,
        progress=progress,
        resume_from=resume_from,
        model=model,
        ref_model=None,
        args=args,
    )
    return outcome


def preference_pairs(rows: list[dict], split: str) -> list[dict]:
    wrong = [r for r in rows if not all(k in r for k in PREFERENCE_KEYS)]
    if wrong:
        raise ConfigError(
            [
                f"method dpo needs preference rows (prompt, chosen, rejected); {len(wrong)} {split} row(s) are not"
            ]
        )
    return [{k: r[k] for k in PREFERENCE_KEYS} for r in rows]
