"""A reward model: the base with a one-number sequence-classification head (plus LoRA), trained
with TRL's RewardTrainer on preference pairs to score chosen above rejected. Held-out preference
accuracy, with its Wilson interval, goes into the run record."""

from __future__ import annotations

from specialize.artifacts import atomic_write_json
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt
from specialize.train.config import RecipeConfig
from specialize.train.datasets import recipe_rows
from specialize.train.dpo import preference_pairs
from specialize.train.judge import (  # noqa: F401  (reward_scores: the old import path)
    Judge,
    load_reward_model,
    preference_accuracy,
    reward_scores,
)
from specialize.train.packed_rows import pack_padded_scores, packing_trainer
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, plan_steps, to_trl_args, train_with

ACCURACY_FILE = "preference_accuracy.json"


def train_reward(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    from trl import RewardConfig, RewardTrainer

    model, tokenizer = load_reward_model(recipe.model)
    model = adapt(model, recipe.adaptation, task_type="SEQ_CLS")
    rows = recipe_rows(recipe, run)
    train, val = preference_pairs(rows.train, "train"), preference_pairs(rows.val, "val")
    plan = plan_steps(recipe, len(train), len(val), rows.epochs)
    args = to_trl_args(
        recipe,
        run,
        precision,
        plan,
        RewardConfig,
        max_length=recipe.training.max_length,
        padding_free=None,  # TRL's reward trainer has none; packing is done here (packed_rows)
    )
    trainer_class = packing_trainer(
        RewardTrainer, model, recipe.training.padding_free, pack_padded_scores
    )
    outcome, trainer = train_with(
        trainer_class,
        recipe,
        run,
        tokenizer,
        plan,
        train,
        val,
        progress=progress,
        resume_from=resume_from,
        full=not recipe.adaptation.trains_adapter,
        model=model,
        args=args,
    )
    if val:
        judge = Judge(trainer.model, tokenizer, recipe.training.max_length)
        accuracy = preference_accuracy(judge, val)
        atomic_write_json(run.path / ACCURACY_FILE, accuracy)
        outcome.chosen = {**outcome.chosen, "held_out_preference_accuracy": accuracy["accuracy"]}
    return outcome
