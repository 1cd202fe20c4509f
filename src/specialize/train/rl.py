"""Policy optimisation against a reward model (RLHF) with TRL's GRPO: the policy is the base plus
LoRA; each prompt gets a group of sampled answers scored by the reward model trained with
`method: reward`; a KL penalty (`preference.kl_beta`) keeps it near the reference, the base with
the adapter off."""

from __future__ import annotations

import logging

from specialize.data.records import prompt_messages
from specialize.errors import ConfigError
from specialize.models.loading import load_model
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt, recipe_chat_template
from specialize.train.config import RecipeConfig
from specialize.train.datasets import recipe_rows
from specialize.train.judge import load_judge
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, plan_steps, to_trl_args, train_with

log = logging.getLogger(__name__)


def load_scorer(reward_run: str, model_ref: str):
    """Return (model, tokenizer) of a reward model run (kept for callers of the old name; new
    code uses train/judge.py's `load_judge`, which also knows the judge's max_length)."""
    judge = load_judge(reward_run, model_ref)
    return judge.model, judge.tokenizer


def train_rl(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    from trl import GRPOConfig, GRPOTrainer

    from specialize.train.packed_attention import use_training_attention

    settings = recipe.preference
    judge = load_judge(settings.reward_model, recipe.model)

    def reward(prompts, completions, **_) -> list[float]:
        return judge.score([list(p) + list(c) for p, c in zip(prompts, completions, strict=True)])

    model, tokenizer = load_model(recipe.model)
    tokenizer = recipe_chat_template(tokenizer, recipe)
    model = adapt(model, recipe.adaptation)
    use_training_attention(model)  # its padded batches attend without repeated kv heads
    rows = recipe_rows(recipe, run)
    budget = recipe.training.max_length - settings.max_new_tokens
    train, val = (
        _fit(_prompts(rows.train), tokenizer, budget),
        _fit(_prompts(rows.val), tokenizer, budget),
    )
    plan = plan_steps(
        recipe, len(train) * settings.group_size, len(val) * settings.group_size, rows.epochs
    )
    args = to_trl_args(
        recipe,
        run,
        precision,
        plan,
        GRPOConfig,
        beta=settings.kl_beta,
        num_generations=settings.group_size,
        max_completion_length=settings.max_new_tokens,
        per_device_eval_batch_size=recipe.training.batch_size,
        padding_free=None,
        max_length=None,  # GRPO has no total length: prompts are kept within it by _fit
    )
    outcome, _ = train_with(
        GRPOTrainer,
        recipe,
        run,
        tokenizer,
        plan,
        train,
        val,
        progress=progress,
        resume_from=resume_from,
        model=model,
        reward_funcs=reward,
        args=args,
    )
    return outcome


def _prompts(rows: list[dict]) -> list[dict]:
    """Prompts from preference rows (their prompt) or chat rows (all but the last answer)."""
    prompts = [prompt_messages(row) for row in rows]
    if any(p is None for p in prompts):
        raise ConfigError(["method rl needs prompts: preference rows or chat rows"])
    return [{"prompt": p} for p in prompts]


def _fit(prompts: list[dict], tokenizer, budget: int) -> list[dict]:
    """Keep the prompts that leave room for the answer within training.max_length."""

    def length(prompt: list[dict]) -> int:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    kept = [p for p in prompts if length(p["prompt"]) <= budget]
    if len(kept) < len(prompts):
        log.warning(
            "%d of %d prompts are longer than training.max_length minus preference.max_new_tokens "
            "(%d tokens) and were left out; raise training.max_length to keep them",
            len(prompts) - len(kept),
            len(prompts),
            budget,
        )
    return kept
