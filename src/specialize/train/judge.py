"""A reward model as judge: load one (a `method: reward` run), score conversations with it, and
the two judgements built on scores: held-out preference accuracy (chosen above rejected) and the
win rate of a tuned model over its start. RL optimises against the same scores; simulations
reuse them. The one place reward-model scoring lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from specialize.artifacts import atomic_write_json
from specialize.data.records import answer_messages, prompt_messages
from specialize.evaluate.runner import generate_batch
from specialize.evaluate.stats import wilson
from specialize.models.generation import GenerationSettings
from specialize.models.loading import adapter_dir, load_model, load_tokenizer, resolve_model
from specialize.train.config import TrainingSection

WIN_RATE_FILE = "win_rate.json"
DEFAULT_MAX_LENGTH = TrainingSection.model_fields["max_length"].default


@dataclass
class Judge:
    """A reward model ready to score: `max_length` is the length it was trained on."""

    model: object
    tokenizer: object
    max_length: int = DEFAULT_MAX_LENGTH
    source: str | None = None

    def score(self, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
        return reward_scores(
            self.model, self.tokenizer, conversations, batch_size, max_length=self.max_length
        )


def load_reward_model(model_ref: str):
    """Return (model, tokenizer): the base with a fresh one-output score head."""
    from transformers import AutoModelForSequenceClassification

    resolved = resolve_model(model_ref)
    tokenizer = load_tokenizer(resolved)
    model = AutoModelForSequenceClassification.from_pretrained(resolved.path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_judge(reward_run: str | Path, model_ref: str) -> Judge:
    """Return the judge a reward run trained: the base, its score head and LoRA, and the run's
    training.max_length (texts are cut where the judge learned to read them)."""
    from peft import PeftModel

    model, tokenizer = load_reward_model(model_ref)
    model = PeftModel.from_pretrained(model, adapter_dir(reward_run)).eval()
    return Judge(model, tokenizer, _trained_length(Path(reward_run)), str(reward_run))


def _trained_length(run: Path) -> int:
    config = run / "config.yaml"
    raw = yaml.safe_load(config.read_text()) if config.is_file() else None
    return ((raw or {}).get("training") or {}).get("max_length") or DEFAULT_MAX_LENGTH


def reward_scores(
    model,
    tokenizer,
    conversations: list[list[dict]],
    batch_size: int = 8,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> list[float]:
    """The reward model's score of each whole conversation (prompt and answer), cut to
    `max_length` tokens."""
    import torch

    scores = []
    model.eval()
    for start in range(0, len(conversations), batch_size):
        texts = [
            tokenizer.apply_chat_template(c, tokenize=False)
            for c in conversations[start : start + batch_size]
        ]
        batch = tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length
        )
        with torch.inference_mode():
            logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits
        scores += [float(x) for x in logits[:, 0]]
    return scores


def preference_accuracy(judge: Judge, pairs: list[dict]) -> dict:
    """Share of held-out pairs where chosen scores above rejected, with a Wilson 95% CI."""
    chosen = judge.score([_conversation(p, "chosen") for p in pairs])
    rejected = judge.score([_conversation(p, "rejected") for p in pairs])
    right = [float(c > r) for c, r in zip(chosen, rejected, strict=True)]
    estimate = wilson(sum(right), len(right))
    return {
        "accuracy": estimate.mean,
        "ci95": [estimate.low, estimate.high],
        "n": len(right),
        "margins": [round(c - r, 4) for c, r in zip(chosen, rejected, strict=True)],
    }


def _conversation(pair: dict, side: str) -> list[dict]:
    return (prompt_messages(pair) or []) + answer_messages(pair[side])


def win_rate(
    judge: Judge, model_ref: str, run_path: Path, prompts: list[list[dict]], max_new_tokens: int
) -> dict:
    """How often the judge prefers the tuned model's answer to its starting point's (the base
    with the adapter off), on held-out prompts, greedy; ties count half. Wilson 95% CI.
    Writes every item to win_rate.json in the run; returns the summary."""
    model, tokenizer = load_model(model_ref, adapter=Path(run_path) / "adapter")
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    tuned = generate_batch(model, tokenizer, prompts, settings)
    with model.disable_adapter():
        start = generate_batch(model, tokenizer, prompts, settings)
    tuned_scores = judge.score(
        [p + answer_messages(t) for p, t in zip(prompts, tuned, strict=True)]
    )
    start_scores = judge.score(
        [p + answer_messages(s) for p, s in zip(prompts, start, strict=True)]
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
        "judge": judge.source,
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
    atomic_write_json(Path(run_path) / WIN_RATE_FILE, result)
    return {k: v for k, v in result.items() if k != "items"}
