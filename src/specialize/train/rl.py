"""Policy optimisation against a reward model (RLHF) with TRL's GRPO: the policy is the base plus
LoRA; each prompt gets a group of sampled answers scored by the reward model trained with
`method: reward`; a KL penalty (`preference.kl_beta`) keeps it near the reference, the base with
the adapter off."""

from __future__ import annotations

from specialize.errors import ConfigError
from specialize.models.loading import load_model
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt, recipe_chat_template
from specialize.train.config import RecipeConfig
from specialize.train.datasets import recipe_rows
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, plan_steps, to_trl_args, train_with


def load_scorer(reward_run: str, model_ref: str):
    """Return (model, tokenizer) of a reward model run: the base, its score head and LoRA."""
    from peft import PeftModel

    from specialize.models.loading import adapter_dir
    from specialize.train.reward import load_reward_model

    model, tokenizer = load_reward_model(model_ref)
    return PeftModel.from_pretrained(model, adapter_dir(reward_run)).eval(), tokenizer


def train_rl(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    from trl import GRPOConfig, GRPOTrainer

    from specialize.train.reward import reward_scores

    settings = recipe.preference
    if not settings.reward_model:
        raise ConfigError(
            ["method rl needs preference.reward_model: the run directory of a `method: reward` run"]
        )
    if recipe.adaptation.kind != "lora" or recipe.data.replay is not None:
        raise ConfigError(
            [
                "method rl trains a LoRA adapter on prompts only: adaptation.kind lora, no data.replay"
            ]
        )
    scorer, scorer_tokenizer = load_scorer(settings.reward_model, recipe.model)

    def reward(prompts, completions, **_) -> list[float]:
        conversations = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
        return reward_scores(scorer, scorer_tokenizer, conversations)

    model, tokenizer = load_model(recipe.model)
    tokenizer = recipe_chat_template(tokenizer, recipe)
    model = adapt(model, recipe.adaptation)
    rows = recipe_rows(recipe, run)
    train, val = _prompts(rows.train), _prompts(rows.val)
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
        max_length=None,
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
    prompts = []
    for row in rows:
        if "prompt" in row:
            prompt = (
                row["prompt"]
                if isinstance(row["prompt"], list)
                else [{"role": "user", "content": row["prompt"]}]
            )
        elif "messages" in row:
            prompt = (
                row["messages"][:-1]
                if row["messages"][-1]["role"] == "assistant"
                else row["messages"]
            )
        else:
            raise ConfigError(["method rl needs prompts: preference rows or chat rows"])
        prompts.append({"prompt": prompt})
    return prompts
