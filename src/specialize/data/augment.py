"""Fact augmentation: more phrasings of every training question, so a fact is learned, not a string.

A model that saw a fact behind one phrasing answers that phrasing and little else. After the
split, from train rows only, each chat row gets `phrasings` new rows whose question (the last
paragraph of the last user turn, so an Alpaca instruction above it stays as it is) is wrapped
in a seeded choice of templates, the answer unchanged. Optionally the base model paraphrases
questions (and, with `answers`, plain-text answers); a paraphrase is kept only when every key
fact of the original (numbers, times, amounts, named entities) survives in it.

Every generated row carries `generated: {by, from}`; the data stage counts them in the manifest,
drops those that repeat a training row or match a val/test question, and never puts one
anywhere but train.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

# name -> template over the question `q` (`lq`: the question with a lowered first word).
TEMPLATES = {
    "could_you": "Could you tell me: {q}",
    "hi": "Hi! {q}",
    "quick": "Quick question: {q}",
    "wondering": "I was wondering, {lq}",
    "thanks": "{q} Thanks in advance.",
    "brief": "{q} A short answer is fine.",
    "asks": "Someone asked me this and I did not know: {q}",
    "hello": "Hello, {lq} Thank you!",
}
_QUESTION_WORDS = {
    "what", "how", "when", "where", "which", "who", "whom", "why", "can", "could", "do",
    "does", "did", "is", "are", "was", "will", "would", "should", "may", "must", "have", "has",
}  # fmt: skip
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_WORD = re.compile(r"[^\W\d_][\w'-]*")
# Capitalised words that start sentences or are common enough not to be names.
_NOT_NAMES = {
    "i", "a", "an", "the", "my", "your", "our", "it", "its", "is", "are", "this", "that",
    "what", "how", "when", "where", "which", "who", "why", "can", "could", "do", "does",
    "yes", "no", "please", "hi", "hello", "thanks", "you", "we", "if", "and", "or", "for",
}  # fmt: skip


@dataclass
class Generated:
    row: dict
    by: str  # "template:<name>" or "paraphrase:question" / "paraphrase:answer"


def with_template(question: str, name: str) -> str:
    first, _, rest = question.partition(" ")
    lowered = (
        f"{first.lower()} {rest}" if first.lower().rstrip("?,") in _QUESTION_WORDS else question
    )
    return TEMPLATES[name].format(q=question, lq=lowered)


def template_rows(row: dict, phrasings: int, seed: int, key: str) -> list[Generated]:
    """Return `phrasings` rows with the question rephrased by distinct seeded templates."""
    question = _question(row)
    if question is None or phrasings == 0:
        return []
    names = random.Random(f"{seed}:{key}").sample(sorted(TEMPLATES), min(phrasings, len(TEMPLATES)))
    return [
        Generated(_replace_question(row, with_template(question, name)), f"template:{name}")
        for name in names
    ]


def paraphrase_rows(
    row: dict, paraphrase: Callable[[str, str], str], *, answers: bool
) -> tuple[list[Generated], list[str]]:
    """Return the model's paraphrases that keep every key fact, and the reasons others were dropped.

    `paraphrase(kind, text)` returns the model's rewrite of a question or an answer.
    """
    question = _question(row)
    if question is None:
        return [], []
    kept, dropped = [], []
    rewritten = paraphrase("question", question)
    problem = _lost(question, rewritten)
    if problem:
        dropped.append(f"question {problem}")
    else:
        kept.append(Generated(_replace_question(row, rewritten), "paraphrase:question"))
    answer = row["messages"][-1]["content"]
    if answers and isinstance(answer, str) and not answer.lstrip().startswith(("{", "[")):
        rewritten = paraphrase("answer", answer)
        problem = _lost(answer, rewritten)
        if problem:
            dropped.append(f"answer {problem}")
        else:
            messages = [dict(m) for m in row["messages"]]
            messages[-1]["content"] = rewritten
            kept.append(Generated({**row, "messages": messages}, "paraphrase:answer"))
    return kept, dropped


def key_facts(text: str) -> set[str]:
    """Numbers (amounts, times, rates) and capitalised names in text: what a paraphrase must keep."""
    facts = set(_NUMBER.findall(text))
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        words = _WORD.findall(sentence)
        for index, word in enumerate(words):
            if word[0].isupper() and word.lower() not in _NOT_NAMES and (index or word.isupper()):
                facts.add(word)
    return facts


def _lost(original: str, rewritten: str) -> str | None:
    """Why a paraphrase is not kept (None: it is)."""
    cleaned = " ".join(rewritten.split())
    if not cleaned:
        return "empty"
    if cleaned.lower() == " ".join(original.split()).lower():
        return "unchanged"
    if len(cleaned) > 3 * len(original) + 40:
        return "too long"
    missing = sorted(f for f in key_facts(original) if f not in cleaned)
    return f"lost key facts: {', '.join(missing)}" if missing else None


def is_chat(row: dict) -> bool:
    return _question(row) is not None


def _question(row: dict) -> str | None:
    messages = row.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        return None
    if messages[-1].get("role") != "assistant" or messages[-2].get("role") != "user":
        return None
    content = messages[-2].get("content")
    if not isinstance(content, str) or not content.strip():
        return None
    return content.rsplit("\n\n", 1)[-1]


def _replace_question(row: dict, question: str) -> dict:
    messages = [dict(m) for m in row["messages"]]
    head, sep, _ = messages[-2]["content"].rpartition("\n\n")
    messages[-2]["content"] = f"{head}{sep}{question}"
    return {**row, "messages": messages}


PARAPHRASE_PROMPTS = {
    "question": "Rewrite this question in other words. Keep every name, number and amount exactly. "
    "Reply with the rewritten question only.\n\n{text}",
    "answer": "Rewrite this sentence in other words. Keep every name, number and amount exactly. "
    "Reply with the rewritten sentence only.\n\n{text}",
}


def model_paraphraser(model_ref: str, *, temperature: float, seed: int, max_new_tokens: int = 96):
    """Return paraphrase(kind, text) backed by a local model (loaded once)."""
    from specialize.models.generation import GenerationSettings, generate_reply
    from specialize.models.loading import load_model

    model, tokenizer = load_model(model_ref)
    model.eval()
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)

    def paraphrase(kind: str, text: str) -> str:
        messages = [{"role": "user", "content": PARAPHRASE_PROMPTS[kind].format(text=text)}]
        return generate_reply(model, tokenizer, messages, settings).strip()

    return paraphrase
