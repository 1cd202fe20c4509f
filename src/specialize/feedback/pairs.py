"""Pairs to compare: for each prompt, answers from two adapters (or two samples of one model),
in an order drawn per pair and recorded, so position never tells which model wrote what."""

from __future__ import annotations

import random
from pathlib import Path

from specialize.data.formats import read_rows
from specialize.data.records import prompt_messages
from specialize.errors import DataError
from specialize.feedback.store import Pair, pair_id
from specialize.models.generation import GenerationSettings


def read_prompts(path: str | Path) -> list[list[dict]]:
    """Prompts as message lists: rows with `prompt` (text or messages) or `messages` (the last
    assistant turn, if any, is dropped), or plain text lines."""
    prompts, problems = [], []
    for raw in read_rows(path):
        value = raw.value
        if raw.problem:
            problems.append(f"{raw.where}: {raw.problem[1]}")
        elif isinstance(value, dict) and (messages := prompt_messages(value)):
            prompts.append(messages)
        elif isinstance(value, dict) and isinstance(value.get("text"), str):
            prompts.append([{"role": "user", "content": value["text"]}])
        else:
            problems.append(f"{raw.where}: expected prompt, messages or a line of text")
    if problems:
        raise DataError(
            f"{len(problems)} unusable prompt row(s): " + "; ".join(problems[:5]), where=str(path)
        )
    if not prompts:
        raise DataError("no prompts", where=str(path))
    return prompts


def make_pairs(
    host, prompts: list[list[dict]], sources: list[str], *, seed: int = 0, max_new_tokens: int = 128
) -> list[Pair]:
    """Answer every prompt twice: once per source (two adapters), or two samples of one source."""
    pairs = []
    order = random.Random(seed)
    for index, prompt in enumerate(prompts):
        if len(sources) == 2:
            greedy = GenerationSettings(max_new_tokens=max_new_tokens)
            answers = [(s, host.chat(s, prompt, greedy).text) for s in sources]
        else:
            answers = [
                (
                    f"{sources[0]}#sample{k}",
                    host.chat(
                        sources[0],
                        prompt,
                        GenerationSettings(
                            max_new_tokens=max_new_tokens,
                            temperature=0.9,
                            seed=seed * 1000 + index * 2 + k,
                        ),
                    ).text,
                )
                for k in (1, 2)
            ]
        if order.random() < 0.5:
            answers.reverse()
        (first_source, first), (second_source, second) = answers
        pairs.append(
            Pair(
                pair_id(prompt, first_source, second_source, first, second),
                prompt,
                first,
                second,
                first_source,
                second_source,
            )
        )
    return pairs
