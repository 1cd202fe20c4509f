"""Task evaluation: eval items from a file, scored by generation or log-likelihood, with CIs.

Eval files (jsonl/json/csv/parquet), one item per row, any of:
  {"messages": [...]}                       the last assistant turn is the reference
  {"question"|"prompt", "answer"|"answers", optional "aliases"}
  {"question", "choices": [...], "answer": index | letter | choice text}   multiple choice
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specialize.data.formats import read_rows
from specialize.errors import DataError
from specialize.evaluate.metrics import BINARY_METRICS, GENERATIVE_METRICS, LIKELIHOOD_METRICS
from specialize.evaluate.runner import continuation_logprobs, generate_batch, text_nll
from specialize.evaluate.stats import bootstrap_mean, estimate
from specialize.models.generation import GenerationSettings

DEFAULT_GENERATIVE = ["contains", "normalised", "f1"]
DEFAULT_CHOICE = ["mc_acc", "mc_acc_norm"]


@dataclass
class EvalItem:
    id: str
    prompt: list[dict] | str | None = None  # messages, or raw text for completion-style prompts
    answers: list[str] = field(default_factory=list)
    context: str | None = None  # multiple choice: the text before each choice
    choices: list[str] | None = None  # multiple choice: continuations, scored by likelihood
    gold: int | None = None
    category: str | None = None
    meta: dict[str, Any] = field(
        default_factory=dict
    )  # the row's other scalar fields, for breakdowns
    images: list[str] = field(
        default_factory=list
    )  # image rows: the pictures; prompt keeps the text


# Row keys that make up an item; every other scalar field is kept in EvalItem.meta.
_ITEM_KEYS = {
    "id",
    "category",
    "messages",
    "question",
    "prompt",
    "answer",
    "answers",
    "aliases",
    "choices",
}


def load_eval_items(path: str | Path, *, system: str | None = None) -> list[EvalItem]:
    """Return the items of an eval file; every unusable row is reported at once."""
    items, problems = [], []
    for raw in read_rows(path):
        if raw.problem:
            problems.append(f"{raw.where}: {raw.problem[1]}")
            continue
        try:
            item = _item(raw.value, f"{Path(path).stem}-{raw.line}", system)
            item.images = _split_images(item, raw.value, Path(path).parent)
            item.meta = {
                k: v
                for k, v in raw.value.items()
                if k not in _ITEM_KEYS and isinstance(v, str | int | float | bool)
            }
            items.append(item)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{raw.where}: {exc}")
    if problems:
        raise DataError(
            f"{len(problems)} unusable eval row(s): " + "; ".join(problems[:5]),
            where=str(path),
            fix="each row needs messages, question+answer, or question+choices+answer",
        )
    if not items:
        raise DataError("no eval items", where=str(path))
    return items


def _item(row: dict[str, Any], default_id: str, system: str | None) -> EvalItem:
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    item_id = str(row.get("id", default_id))
    category = row.get("category")
    if "messages" in row:
        messages = row["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("messages must end with the assistant's reference answer")
        prompt = list(messages[:-1])
        if system and not any(m["role"] == "system" for m in prompt):
            prompt.insert(0, {"role": "system", "content": system})
        return EvalItem(
            item_id, prompt, [messages[-1]["content"], *row.get("aliases", [])], category=category
        )
    question = row.get("question", row.get("prompt"))
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing 'question' (or 'prompt')")
    if "choices" in row:
        choices = list(row["choices"])
        return EvalItem(
            item_id,
            context=f"Question: {question}\nAnswer:",
            choices=[f" {c}" for c in choices],
            gold=_gold(row["answer"], choices),
            category=category,
        )
    answers = row.get("answers", row.get("answer"))
    answers = [answers] if isinstance(answers, str) else list(answers or [])
    answers += list(row.get("aliases", []))
    if not answers:
        raise ValueError("missing 'answer' (or 'answers')")
    prompt = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    return EvalItem(item_id, prompt, [str(a) for a in answers], category=category)


def _split_images(item: EvalItem, row: dict, folder: Path) -> list[str]:
    """Return an image row's picture references (resolved) and leave only text in its prompt.

    Text-only systems answer the text; a vision model puts the pictures before the last user
    turn's text (models/vision.py). An image reference is checked when it is opened.
    """
    from specialize.data.media import is_data_url

    def resolve(ref: str) -> str:
        return ref if is_data_url(ref) else str(folder / ref.removeprefix("file://"))

    listed = [resolve(r) for r in row.get("images") or [] if isinstance(r, str)]
    found = []
    if not isinstance(item.prompt, list):
        return listed
    for message in item.prompt:
        content = message.get("content")
        if isinstance(content, str) and "<image>" in content and listed:
            message["content"] = content.replace("<image>", "").strip()
        if not isinstance(content, list):
            continue
        for part in content:
            ref = part.get("path") or part.get("image") or part.get("image_url")
            ref = ref.get("url") if isinstance(ref, dict) else ref
            if part.get("type") in ("image", "image_url") and isinstance(ref, str):
                found.append(resolve(ref))
        message["content"] = " ".join(
            p["text"] for p in content if p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return found or listed


def _gold(answer: Any, choices: list[str]) -> int:
    if isinstance(answer, int):
        return answer
    if isinstance(answer, str) and len(answer) == 1 and answer.isalpha():
        return ord(answer.upper()) - ord("A")
    return choices.index(answer)


@dataclass
class TaskResult:
    items: list[dict]
    summary: dict[str, dict]


def evaluate_items(
    model,
    tokenizer,
    items: list[EvalItem],
    metrics: list[str] | None = None,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    stop_at_newline: bool = False,
    progress: str | None = "evaluating",
) -> TaskResult:
    """Return every item's output and scores, and each metric's mean with a 95% CI and n."""
    generative = [i for i in items if i.choices is None]
    choice = [i for i in items if i.choices is not None]
    metrics = metrics or (
        (DEFAULT_GENERATIVE if generative else []) + (DEFAULT_CHOICE if choice else [])
    )
    unknown = sorted(set(metrics) - set(GENERATIVE_METRICS) - set(LIKELIHOOD_METRICS))
    if unknown:
        raise DataError(
            f"unknown metric(s) {unknown}",
            fix=f"use {sorted(GENERATIVE_METRICS) + list(LIKELIHOOD_METRICS)}",
        )
    results = {item.id: {"id": item.id, "category": item.category, "scores": {}} for item in items}
    if generative:
        _score_generative(
            model,
            tokenizer,
            generative,
            metrics,
            results,
            max_new_tokens,
            batch_size,
            stop_at_newline,
            progress,
        )
    if choice and {"mc_acc", "mc_acc_norm"} & set(metrics):
        _score_choices(model, tokenizer, choice, results, batch_size, progress)
    rows = [results[i.id] for i in items]
    return TaskResult(rows, summarise(rows))


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Return {metric: mean, ci95, n} over the items that have that score."""
    names = sorted({name for row in rows for name in row["scores"]})
    summary = {}
    for name in names:
        values = [row["scores"][name] for row in rows if name in row["scores"]]
        if name == "nll_per_token":
            ci = bootstrap_mean(values)
            summary["perplexity"] = {
                "mean": math.exp(ci.mean),
                "ci95": [math.exp(ci.low), math.exp(ci.high)],
                "n": ci.n,
                "ci_method": "bootstrap over items",
            }
        else:
            summary[name] = estimate(values, name in BINARY_METRICS).as_dict()
    return summary


def _score_generative(
    model, tokenizer, items, metrics, results, max_new_tokens, batch_size, stop_at_newline, progress
):
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    outputs = generate_batch(
        model,
        tokenizer,
        [i.prompt for i in items],
        settings,
        batch_size=batch_size,
        progress=progress,
    )
    for item, output in zip(items, outputs, strict=True):
        if stop_at_newline:
            output = output.split("\n", 1)[0].strip()
        row = results[item.id]
        row.update(prompt=item.prompt, output=output, references=item.answers)
        for name in metrics:
            if name in GENERATIVE_METRICS:
                row["scores"][name] = GENERATIVE_METRICS[name](output, item.answers)
    if "perplexity" in metrics:
        from specialize.models.generation import render_prompt_ids

        texts = []
        for item in items:
            prefix = (
                tokenizer.decode(render_prompt_ids(tokenizer, item.prompt))
                if isinstance(item.prompt, list)
                else item.prompt
            )
            texts.append((prefix, item.answers[0]))
        for item, score in zip(
            items,
            continuation_logprobs(model, tokenizer, texts, batch_size=batch_size),
            strict=True,
        ):
            count = max(1, len(tokenizer(item.answers[0], add_special_tokens=False)["input_ids"]))
            results[item.id]["scores"]["nll_per_token"] = -score / count


def length_normalised(scores: list[float], choices: list[str]) -> list[float]:
    """Log-likelihoods per character of each choice, as lm-evaluation-harness's acc_norm.

    The harness divides by `len(choice)` in characters (not UTF-8 bytes, not tokens) of the choice
    without the target delimiter; our choices carry that delimiter, one leading space.
    """
    return [s / max(1, len(c.removeprefix(" "))) for s, c in zip(scores, choices, strict=True)]


@dataclass
class ChoiceScores:
    """One multiple-choice item as scored: log p(choice | context) per choice, and the picks."""

    logprobs: list[float]
    pred: int  # argmax of the log-likelihoods (mc_acc)
    pred_norm: int  # argmax of the log-likelihoods per character (mc_acc_norm)


def score_choices(
    model, tokenizer, items: list[EvalItem], *, batch_size: int = 16, progress: str | None = None
) -> list[ChoiceScores]:
    """Return each multiple-choice item's choice log-likelihoods and predictions, in order."""
    pairs = [(item.context, choice) for item in items for choice in item.choices]
    logprobs = continuation_logprobs(
        model,
        tokenizer,
        pairs,
        batch_size=batch_size,
        progress=progress and f"{progress} (choices)",
    )
    scored, position = [], 0
    for item in items:
        scores = logprobs[position : position + len(item.choices)]
        position += len(item.choices)
        norm = length_normalised(scores, item.choices)
        scored.append(ChoiceScores(scores, _argmax(scores), _argmax(norm)))
    return scored


def _score_choices(model, tokenizer, items, results, batch_size, progress):
    scored = score_choices(model, tokenizer, items, batch_size=batch_size, progress=progress)
    for item, s in zip(items, scored, strict=True):
        row = results[item.id]
        row.update(
            prompt=item.context,
            output=item.choices[s.pred].strip(),
            references=[item.choices[item.gold].strip()],
            choice_logprobs=[round(x, 4) for x in s.logprobs],
        )
        row["scores"].update(
            mc_acc=float(s.pred == item.gold), mc_acc_norm=float(s.pred_norm == item.gold)
        )


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def perplexity_of_texts(model, tokenizer, texts: list[str], *, progress: str | None = None) -> dict:
    """Return corpus perplexity of texts with a bootstrap CI over texts."""
    nll = text_nll(model, tokenizer, texts, progress=progress)
    per_text = [n / max(c, 1) for n, c in nll]
    ci = bootstrap_mean(per_text)
    total = sum(n for n, _ in nll) / max(1, sum(c for _, c in nll))
    return {
        "mean": math.exp(total),
        "ci95": [math.exp(ci.low), math.exp(ci.high)],
        "n": len(texts),
        "ci_method": "bootstrap over texts",
        "per_text_nll": per_text,
    }
