"""Curation: normalise text, filter low-quality rows, find personal data, remove duplicates.

Functions here decide; `prepare` records every decision (a drop goes to rejects.jsonl with its
reason, a change is counted in the manifest and listed in changes.jsonl).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Callable
from typing import Any

from datasketch import MinHash, MinHashLSH

from specialize.data.records import answer_texts, full_text

# --- normalisation ------------------------------------------------------------------------

_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalise_text(text: str) -> str:
    """Return NFC text with invisible characters removed, spaces folded and lines trimmed."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def map_texts(row: dict, fn: Callable[[str], str]) -> dict:
    """Return a copy of a TRL row with `fn` applied to every trained-on text."""

    def content(value: Any) -> Any:
        if isinstance(value, str):
            return fn(value)
        return [{**p, "text": fn(p["text"])} if p.get("type") == "text" else p for p in value]

    def messages(items: list) -> list:
        return [{**m, "content": content(m["content"])} for m in items]

    out = dict(row)
    for key in ("text", "prompt", "completion", "chosen", "rejected"):
        if key in out:
            out[key] = fn(out[key]) if isinstance(out[key], str) else messages(out[key])
    if "messages" in out:
        out["messages"] = messages(out["messages"])
    return out


# --- quality ------------------------------------------------------------------------------


def repetition_ratio(text: str, n: int = 3) -> float:
    """Return the share of word n-grams that repeat an earlier one (0 = none, near 1 = a loop)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1))]
    if len(grams) < 4:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def quality_problem(
    row: dict, *, min_answer_chars: int, max_repetition: float
) -> tuple[str, str] | None:
    """Return (reason, detail) when a row is too poor to train on, else None."""
    for answer in answer_texts(row):
        if len(answer.strip()) < min_answer_chars:
            return (
                "short_answer",
                f"answer {answer.strip()!r} is shorter than {min_answer_chars} characters",
            )
    ratio = repetition_ratio(full_text(row))
    if ratio > max_repetition:
        return "repetitive", f"{ratio:.0%} of word 3-grams repeat (limit {max_repetition:.0%})"
    return None


# --- personal data ------------------------------------------------------------------------

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}\b", re.I)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ()./-]{6,18}\d(?!\w)")


def _iban_valid(candidate: str) -> bool:
    text = candidate.replace(" ", "")
    if not 15 <= len(text) <= 34:
        return False
    moved = text[4:] + text[:4]
    digits = "".join(str(int(ch, 36)) for ch in moved)
    return int(digits) % 97 == 1


def _luhn_valid(candidate: str) -> bool:
    digits = [int(d) for d in re.sub(r"\D", "", candidate)]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return 13 <= len(digits) <= 19 and total % 10 == 0


def _phone_valid(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    # Dates, amounts and years are digit runs too; a phone number has 8-15 digits and a
    # separator or a leading + or 0 (national trunk prefix).
    return 8 <= len(digits) <= 15 and (
        candidate.startswith(("+", "0", "(")) or bool(re.search(r"[ -]", candidate))
    )


# (kind, pattern, validator, mask); checked in this order, so a card number is not also a phone.
PII_PATTERNS: list[tuple[str, re.Pattern, Callable[[str], bool], str]] = [
    ("email", _EMAIL, lambda s: True, "[EMAIL]"),
    ("iban", _IBAN, _iban_valid, "[IBAN]"),
    ("card", _CARD, _luhn_valid, "[CARD]"),
    ("phone", _PHONE, _phone_valid, "[PHONE]"),
]


def find_pii(text: str) -> list[tuple[str, str]]:
    """Return (kind, matched text) for each piece of personal data found."""
    found = []
    for kind, pattern, valid, mask in PII_PATTERNS:
        for match in pattern.finditer(text):
            if valid(match.group()):
                found.append((kind, match.group()))
        text = _mask_kind(text, pattern, valid, mask)
    return found


def mask_pii(text: str) -> str:
    """Return text with every piece of personal data replaced by a [KIND] placeholder."""
    for _, pattern, valid, mask in PII_PATTERNS:
        text = _mask_kind(text, pattern, valid, mask)
    return text


def _mask_kind(text: str, pattern: re.Pattern, valid: Callable[[str], bool], mask: str) -> str:
    return pattern.sub(lambda m: mask if valid(m.group()) else m.group(), text)


# --- duplicates ---------------------------------------------------------------------------


def dedup_key(text: str) -> str:
    """Return the exact-duplicate key: sha256 of case-folded, whitespace-folded text."""
    folded = " ".join(normalise_text(text).casefold().split())
    return hashlib.sha256(folded.encode("utf-8")).hexdigest()


def _shingles(text: str, size: int = 5) -> set[bytes]:
    folded = " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())
    if len(folded) <= size:
        return {folded.encode("utf-8")}
    return {folded[i : i + size].encode("utf-8") for i in range(len(folded) - size + 1)}


class NearDuplicateIndex:
    """MinHash LSH over character 5-gram shingles; finds rows whose Jaccard similarity is over a threshold."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, seed: int = 1):
        self.threshold, self.num_perm, self.seed = threshold, num_perm, seed
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict[str, MinHash] = {}
        # Drawing the permutations is most of a MinHash's set-up cost; draw them once.
        template = MinHash(num_perm=num_perm, seed=seed)
        self._permutations, self._scheme = template.permutations, template.scheme

    def signature(self, text: str) -> MinHash:
        # crc32 is deterministic across processes (unlike hash()) and far cheaper than sha1.
        sig = MinHash(
            num_perm=self.num_perm,
            seed=self.seed,
            hashfunc=zlib.crc32,
            permutations=self._permutations,
            scheme=self._scheme,
        )
        sig.update_batch(list(_shingles(text)))
        return sig

    def query(self, text: str, signature: MinHash | None = None) -> str | None:
        """Return the key of an indexed row similar to `text` (estimated Jaccard >= threshold), if any."""
        signature = signature or self.signature(text)
        best, best_score = None, 0.0
        for key in self._lsh.query(signature):
            score = signature.jaccard(self._signatures[key])
            if score >= self.threshold and score > best_score:
                best, best_score = key, score
        return best

    def add(self, key: str, text: str, signature: MinHash | None = None) -> None:
        signature = signature or self.signature(text)
        if key not in self._signatures:
            self._lsh.insert(key, signature)
            self._signatures[key] = signature

    def __len__(self) -> int:
        return len(self._signatures)
