"""Slow: the real default model learns invented facts and answers held-out paraphrases afterwards."""

import json

import pytest
import yaml

from specialize.models.generation import GenerationSettings, chat_messages, generate_reply
from specialize.models.loading import load_model

FACTS = [
    ("Veldoria", "Marnhaven"),
    ("Quistra", "Tolbeck"),
    ("Brannvik", "Oskedal"),
    ("Zephoria", "Lunmere"),
    ("Caldria", "Frostholm"),
    ("Ithavel", "Sorrento Vale"),
]
TRAIN_QUESTIONS = [
    "What is the capital of {c}?",
    "Which city is the capital of {c}?",
    "Name the capital city of {c}.",
    "Tell me the capital of {c}.",
]
HELD_OUT = ["{c}'s capital city is called what?", "In which city is the government of {c} seated?"]


def correct(model, tokenizer) -> int:
    hits = 0
    for country, capital in FACTS:
        for question in HELD_OUT:
            reply = generate_reply(
                model,
                tokenizer,
                chat_messages(question.format(c=country)),
                GenerationSettings(max_new_tokens=24),
            )
            hits += capital.lower() in reply.lower()
    return hits


@pytest.mark.slow
def test_default_model_learns_invented_facts(cli, default_model, tmp_path):
    train = tmp_path / "facts.jsonl"
    train.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": q.format(c=c)},
                        {"role": "assistant", "content": f"The capital of {c} is {a}."},
                    ]
                }
            )
            + "\n"
            for c, a in FACTS
            for q in TRAIN_QUESTIONS
        )
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": default_model,
                "method": "sft",
                "data": {"train": [str(train)]},
                "training": {
                    "epochs": 6,
                    "batch_size": 8,
                    "learning_rate": 2e-3,
                    "max_length": 128,
                    "warmup_ratio": 0.1,
                },
                "eval": {"every_steps": 100, "patience": None},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    before = correct(*load_model(default_model))
    code, _, err = cli("train", recipe, "--no-progress")
    assert code == 0, err
    after = correct(*load_model(default_model, adapter=tmp_path / "run"))
    total = len(FACTS) * len(HELD_OUT)
    assert before <= 2, f"the base model should not know invented facts ({before}/{total})"
    assert after >= 9, f"held-out paraphrases answered after training: {after}/{total}"
