"""Answer metrics: exact, normalised with aliases, contains, token F1, ROUGE-L, JSON fields; one each.

Every metric takes a prediction and the accepted answers and returns a score in [0, 1].
Normalisation follows SQuAD's: lower case, no punctuation, no articles, folded whitespace.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation) | {
    "\u2019",
    "\u2018",
    "\u201c",
    "\u201d",
    "\u2013",
    "\u2014",
}


def normalise_answer(text: str) -> str:
    """Return text lower-cased, without punctuation or articles, whitespace folded."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: list[str]) -> float:
    return float(any(prediction.strip() == a.strip() for a in answers))


def normalised_match(prediction: str, answers: list[str]) -> float:
    """1 when the normalised prediction equals any normalised accepted answer (aliases included)."""
    predicted = normalise_answer(prediction)
    return float(any(predicted == normalise_answer(a) for a in answers))


def contains(prediction: str, answers: list[str]) -> float:
    """1 when any accepted answer appears in the prediction as whole words (after normalising)."""
    padded = f" {normalise_answer(prediction)} "
    return float(any(normalise_answer(a) and f" {normalise_answer(a)} " in padded for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    """Best token-overlap F1 against the accepted answers (SQuAD's F1)."""
    return max(
        (_f1(normalise_answer(prediction).split(), normalise_answer(a).split()) for a in answers),
        default=0.0,
    )


def rouge_l(prediction: str, answers: list[str]) -> float:
    """Best ROUGE-L F-measure (longest common subsequence of tokens) against the accepted answers."""
    predicted = normalise_answer(prediction).split()
    best = 0.0
    for answer in answers:
        reference = normalise_answer(answer).split()
        lcs = _lcs_length(predicted, reference)
        if lcs:
            precision, recall = lcs / len(predicted), lcs / len(reference)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


# A reference field longer than this is free text (a reply, a summary): it cannot match exactly,
# so json_fields only asks that it be present and non-empty.
FREE_TEXT_CHARS = 40


def json_fields(prediction: str, answers: list[str]) -> float:
    """1 when the prediction holds a JSON object with the reference's keys and equal short fields.

    The reference answers are JSON objects. Fields whose reference value is a string of more than
    FREE_TEXT_CHARS characters must be non-empty strings; every other field must be equal.
    """
    predicted = _json_object(prediction)
    if predicted is None:
        return 0.0
    for answer in answers:
        reference = _json_object(answer)
        if (
            reference is not None
            and set(predicted) == set(reference)
            and all(_field_matches(predicted[k], v) for k, v in reference.items())
        ):
            return 1.0
    return 0.0


def _field_matches(predicted, reference) -> bool:
    if isinstance(reference, str) and len(reference) > FREE_TEXT_CHARS:
        return isinstance(predicted, str) and bool(predicted.strip())
    return predicted == reference


def _json_object(text: str) -> dict | None:
    """The JSON object in text (from its first '{' to its last '}'), or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _f1(predicted: list[str], reference: list[str]) -> float:
    if not predicted or not reference:
        return float(predicted == reference)
    common = sum((Counter(predicted) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


# Generative metrics by name, in one table; the CLI's --metrics choices come from here.
GENERATIVE_METRICS: dict[str, Callable[[str, list[str]], float]] = {
    "exact": exact_match,
    "normalised": normalised_match,
    "contains": contains,
    "f1": token_f1,
    "rouge_l": rouge_l,
    "json_fields": json_fields,
}
# Metrics computed from log-likelihoods rather than generated text.
LIKELIHOOD_METRICS = ("perplexity", "mc_acc", "mc_acc_norm")
BINARY_METRICS = {"exact", "normalised", "contains", "json_fields", "mc_acc", "mc_acc_norm"}
