"""Word error rate: a transcript normaliser, word-level edit distance, corpus WER with its CI.

Corpus WER is total word edits over total reference words (the standard definition, not the
mean of per-item rates); its 95% interval is a bootstrap over items of that ratio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from specialize.evaluate.stats import BOOTSTRAP_SAMPLES, Estimate

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "vs": "versus"}
_DROP = re.compile(r"[^\w\s']")


def number_words(n: int) -> str:
    """Return an integer below a billion in English words ("42" -> "forty two")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return f"{number_words(n // size)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise ValueError(n)


def normalise_transcript(text: str) -> list[str]:
    """Return the words of a transcript, lowercased, punctuation dropped, numbers spelt out.

    Whisper writes "10 of clubs." where a reference says "ten of clubs"; both become the same words.
    """
    text = text.lower().replace("%", " percent ").replace("&", " and ")
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)  # 1,000 -> 1000
    text = re.sub(r"(\d)\.(\d)", r"\1 point \2", text)
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", text)
    text = _DROP.sub(" ", text.replace("-", " "))
    words: list[str] = []
    for word in text.split():
        word = word.strip("'")
        if word.isdigit() and len(word) < 10:
            words.extend(number_words(int(word)).split())
        elif word:
            words.append(_ABBREVIATIONS.get(word, word))
    return words


def word_edits(reference: list[str], hypothesis: list[str]) -> int:
    """Return the Levenshtein distance between two word lists (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
            )
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class ItemWER:
    """One recording's score: edits against the normalised reference."""

    reference: str
    hypothesis: str
    edits: int
    reference_words: int

    @property
    def wer(self) -> float:
        return self.edits / max(self.reference_words, 1)

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "edits": self.edits,
            "reference_words": self.reference_words,
            "wer": self.wer,
        }


def score_item(reference: str, hypothesis: str) -> ItemWER:
    """Return the word edits of one hypothesis against its reference."""
    ref, hyp = normalise_transcript(reference), normalise_transcript(hypothesis)
    return ItemWER(reference, hypothesis, word_edits(ref, hyp), len(ref))


def corpus_wer(items: list[ItemWER], seed: int = 0) -> Estimate:
    """Return corpus WER (sum of edits / sum of reference words) with a bootstrap 95% CI over items."""
    if not items:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "bootstrap")
    edits = np.array([i.edits for i in items], dtype=float)
    words = np.array([i.reference_words for i in items], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(items), size=(BOOTSTRAP_SAMPLES, len(items)))
    ratios = edits[picks].sum(axis=1) / np.maximum(words[picks].sum(axis=1), 1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    mean = float(edits.sum() / max(words.sum(), 1))
    return Estimate(mean, float(low), float(high), len(items), "bootstrap")


def paired_corpus_wer_difference(before: list[dict], after: list[dict], seed: int = 0) -> dict:
    """Return after - before corpus WER on the same items (dicts with edits and reference_words),
    with a paired bootstrap 95% CI: both systems are resampled with the same items each time."""
    if len(before) != len(after):
        raise ValueError("paired comparison needs scores on the same items")
    words = np.array([i["reference_words"] for i in before], dtype=float)
    a = np.array([i["edits"] for i in before], dtype=float)
    b = np.array([i["edits"] for i in after], dtype=float)
    if not len(words):
        return {
            "delta": float("nan"),
            "ci95": [float("nan")] * 2,
            "n": 0,
            "ci_method": "paired bootstrap",
        }
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(words), size=(BOOTSTRAP_SAMPLES, len(words)))
    total = np.maximum(words[picks].sum(axis=1), 1)
    deltas = (b[picks].sum(axis=1) - a[picks].sum(axis=1)) / total
    low, high = np.percentile(deltas, [2.5, 97.5])
    delta = float((b.sum() - a.sum()) / max(words.sum(), 1))
    return {
        "delta": delta,
        "ci95": [float(low), float(high)],
        "n": len(words),
        "ci_method": "paired bootstrap",
    }
