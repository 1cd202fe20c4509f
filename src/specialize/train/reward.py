"""A reward model: the base with a one-number sequence-classification head (plus LoRA), trained
with TRL's RewardTrainer on preference pairs to score chosen above rejected. Held-out preference
accuracy, with its Wilson interval, goes into the run record."""

from __future__ import annotations

import json

from specialize.artifacts import atomic_write_json
from specialize.errors import ConfigError
from specialize.evaluate.stats import wilson
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt
from specialize.train.config import RecipeConfig
from specialize.train.datasets import recipe_rows
from specialize.train.dpo import preference_pairs
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, plan_steps, to_trl_args, train_with

ACCURACY_FILE = "preference_accuracy.json"


def load_reward_model(model_ref: str):
    """Return (model, tokenizer): the base with a fresh one-output score head."""
    from transformers import AutoModelForSequenceClassification

    from specialize.models.loading import load_tokenizer, resolve_model

    resolved = resolve_model(model_ref)
    tokenizer = load_tokenizer(resolved)
    model = AutoModelForSequenceClassification.from_pretrained(resolved.path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def train_reward(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    from trl import RewardConfig, RewardTrainer

    if recipe.data.replay is not None:
        raise ConfigError(["a reward model trains on preference rows only: remove data.replay"])
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
        padding_free=None,
    )
    outcome, trainer = train_with(
        RewardTrainer,
        recipe,
        run,
        tokenizer,
        plan,
        train,
        val,
        progress=progress,
        resume_from=resume_from,
        full=recipe.adaptation.kind not in ("lora", "qlora"),
        model=model,
        args=args,
    )
    if val:
        accuracy = preference_accuracy(trainer.model, tokenizer, val)
        atomic_write_json(run.path / ACCURACY_FILE, accuracy)
        outcome.chosen = {**outcome.chosen, "held_out_preference_accuracy": accuracy["accuracy"]}
    return outcome


def reward_scores(
    model, tokenizer, conversations: list[list[dict]], batch_size: int = 8
) -> list[float]:
    """The reward model's score of each whole conversation (prompt and answer)."""
    import torch

    scores = []
    model.eval()
    for start in range(0, len(conversations), batch_size):
        texts = [
            tokenizer.apply_chat_template(c, tokenize=False)
            for c in conversations[start : start + batch_size]
        ]
        batch = tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=1024
        )
        with torch.inference_mode():
            logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits
        scores += [float(x) for x in logits[:, 0]]
    return scores


def preference_accuracy(model, tokenizer, pairs: list[dict]) -> dict:
    """Share of held-out pairs where chosen scores above rejected, with a Wilson 95% CI."""
    chosen = reward_scores(model, tokenizer, [_conversation(p, "chosen") for p in pairs])
    rejected = reward_scores(model, tokenizer, [_conversation(p, "rejected") for p in pairs])
    right = [float(c > r) for c, r in zip(chosen, rejected, strict=True)]
    estimate = wilson(sum(right), len(right))
    return {
        "accuracy": estimate.mean,
        "ci95": [estimate.low, estimate.high],
        "n": len(right),
        "margins": [round(c - r, 4) for c, r in zip(chosen, rejected, strict=True)],
    }


def _conversation(pair: dict, side: str) -> list[dict]:
    prompt = (
        pair["prompt"]
        if isinstance(pair["prompt"], list)
        else [{"role": "user", "content": pair["prompt"]}]
    )
    answer = (
        pair[side]
        if isinstance(pair[side], list)
        else [{"role": "assistant", "content": pair[side]}]
    )
    return json.loads(json.dumps(prompt + answer))


WIN_RATE_FILE = "win_rate.json"


def win_rate(recipe: RecipeConfig, run: RunDir, prompts: list[list[dict]]) -> dict:
    """How often the reward model prefers the tuned model's answer to its starting point's (the base
    with the adapter off), on held-out prompts, greedy; ties count half. Wilson 95% CI."""
    from specialize.evaluate.runner import generate_batch
    from specialize.models.generation import GenerationSettings
    from specialize.models.loading import load_model
    from specialize.train.rl import load_scorer

    model, tokenizer = load_model(recipe.model, adapter=run.adapter)
    settings = GenerationSettings(max_new_tokens=recipe.preference.max_new_tokens)
    tuned = generate_batch(model, tokenizer, prompts, settings)
    with model.disable_adapter():
        start = generate_batch(model, tokenizer, prompts, settings)
    scorer, scorer_tokenizer = load_scorer(recipe.preference.reward_model, recipe.model)
    answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    tuned_scores = reward_scores(
        scorer, scorer_tokenizer, [p + answer(t) for p, t in zip(prompts, tuned, strict=True)]
    )
    start_scores = reward_scores(
        scorer, scorer_tokenizer, [p + answer(s) for p, s in zip(prompts, start, strict=True)]
    )
    wins = [
        1.0 if t > s else 0.5 if t == s else 0.0
        for t, s in zip(tuned_scores, start_scores, strict=True)
    ]
    estimate = wilson(sum(wins), len(wins))
    result = {
        "win_rate": estimate.mean,
        "ci95": [estimate.low, estimate.high],
        "n": len(wins),
        "judge": recipe.preference.reward_model,
        "items": [
            {
                "prompt": p,
                "tuned": t,
                "start": s,
                "tuned_reward": round(a, 4),
                "start_reward": round(b, 4),
            }
            for p, t, s, a, b in zip(prompts, tuned, start, tuned_scores, start_scores, strict=True)
        ],
    }
    atomic_write_json(run.path / WIN_RATE_FILE, result)
    return {k: v for k, v in result.items() if k != "items"}
