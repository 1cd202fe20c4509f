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
from dataclasses import dataclass
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


_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")


def _phone_valid(candidate: str) -> bool:
    if _DATE.fullmatch(candidate.strip()):
        return False  # 2023-11-15 has a phone number's digits
    digits = re.sub(r"\D", "", candidate)
    # Dates, amounts and years are digit runs too; a phone number has 8-15 digits and a
    # separator or a leading + or 0 (national trunk prefix).
    return 8 <= len(digits) <= 15 and (
        candidate.startswith(("+", "0", "(")) or bool(re.search(r"[ -]", candidate))
    )


# (kind, pattern, validator, mask) of the regex detectors.
PII_PATTERNS: list[tuple[str, re.Pattern, Callable[[str], bool], str]] = [
    ("email", _EMAIL, lambda s: True, "[EMAIL]"),
    ("iban", _IBAN, _iban_valid, "[IBAN]"),
    ("card", _CARD, _luhn_valid, "[CARD]"),
    ("phone", _PHONE, _phone_valid, "[PHONE]"),
]
# National identity numbers, checked with python-stdnum (dates and check digits, not just shape).
# Nordic numbers need their separator (YYMMDD-NNNN), US numbers their dashes, so that order
# numbers and amounts are not taken for people; Swedish 12-digit numbers are also accepted.
_NORDIC_ID = re.compile(
    r"(?<![\w-])(?:\d{8}|\d{6})[-+A]\d{3}[\dA-Z](?![\w-])|(?<!\d)(?:19|20)\d{10}(?!\d)"
)
_NORWEGIAN_ID = re.compile(r"(?<![\w-])\d{6} ?\d{5}(?![\w-])")
_US_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
NATIONAL_IDS = ("se.personnummer", "fi.hetu", "dk.cpr", "no.fodselsnummer", "us.ssn")
DEFAULT_PHONE_REGIONS = ("SE", "NO", "DK", "FI", "DE", "GB", "US")
# Titles and common given names (Nordic and English) followed by a capitalised word: a simple,
# high-precision, low-recall detector for names of people (no model, no download). Optional.
_TITLES = r"(?:Mr|Mrs|Ms|Miss|Dr|Prof|Herr|Fru|Fröken|Frau)\.?"
_UPPER_WORD = r"[A-ZÅÄÖÆØÉÜ][a-zåäöæøéüß]+(?:-[A-ZÅÄÖÆØÉÜ][a-zåäöæøéüß]+)?"


@dataclass(frozen=True)
class PiiOptions:
    """What to look for beyond e-mail, IBAN, card and phone shapes."""

    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS  # phonenumbers regions, checked in order
    names: bool = False  # the optional names-of-people detector


@dataclass(frozen=True)
class PiiHit:
    kind: str  # email, iban, national_id, card, phone, name
    text: str
    detail: str  # e.g. se.personnummer, phone region SE, or the kind again


_MASKS = {
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "national_id": "[NATIONAL_ID]",
    "card": "[CARD]",
    "phone": "[PHONE]",
    "name": "[NAME]",
}


def pii_hits(text: str, options: PiiOptions | None = None) -> tuple[list[PiiHit], str]:
    """Return every piece of personal data found and the text with each masked.

    Detectors run in order (e-mail, IBAN, national id, card, phone by region, phone shape,
    names), each on the text the earlier ones masked, so one number counts once.
    """
    options = options or PiiOptions()
    hits: list[PiiHit] = []
    for kind, find in _detectors(options):
        spans = find(text)
        hits += [PiiHit(kind, text[a:b], detail) for a, b, detail in spans]
        for a, b, _ in sorted(spans, reverse=True):
            text = text[:a] + _MASKS[kind] + text[b:]
    return hits, text


def find_pii(text: str, options: PiiOptions | None = None) -> list[tuple[str, str]]:
    """Return (kind, matched text) for each piece of personal data found."""
    return [(hit.kind, hit.text) for hit in pii_hits(text, options)[0]]


def mask_pii(text: str, options: PiiOptions | None = None) -> str:
    """Return text with every piece of personal data replaced by a [KIND] placeholder."""
    return pii_hits(text, options)[1]


def _detectors(options: PiiOptions) -> list[tuple[str, Callable[[str], list]]]:
    regex = {kind: (pattern, valid) for kind, pattern, valid, _ in PII_PATTERNS}
    detectors = [
        ("email", _regex_spans(*regex["email"])),
        ("iban", _regex_spans(*regex["iban"])),
        ("national_id", _national_ids),
        ("card", _regex_spans(*regex["card"])),
    ]
    if options.phone_regions:
        detectors.append(("phone", lambda text: _phones(text, options.phone_regions)))
    detectors.append(("phone", _regex_spans(*regex["phone"])))
    if options.names:
        detectors.append(("name", _names))
    return detectors


def _regex_spans(pattern: re.Pattern, valid: Callable[[str], bool]):
    def find(text: str) -> list[tuple[int, int, str]]:
        return [(m.start(), m.end(), "") for m in pattern.finditer(text) if valid(m.group())]

    return find


def _national_ids(text: str) -> list[tuple[int, int, str]]:
    import importlib

    spans = []
    checks = (
        (_NORDIC_ID, NATIONAL_IDS[:3]),
        (_NORWEGIAN_ID, NATIONAL_IDS[3:4]),
        (_US_SSN, NATIONAL_IDS[4:]),
    )
    for pattern, modules in checks:
        for match in pattern.finditer(text):
            for name in modules:
                module = importlib.import_module(f"stdnum.{name}")
                if module.is_valid(match.group()):
                    spans.append((match.start(), match.end(), name))
                    break
    return spans


def _phones(text: str, regions: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """Numbers valid for one of the regions (national formats), found with phonenumbers."""
    import phonenumbers

    spans: list[tuple[int, int, str]] = []
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.VALID
        ):
            if any(a < match.end and match.start < b for a, b, _ in spans):
                continue
            if _DATE.fullmatch(match.raw_string.strip()):
                continue
            where = phonenumbers.region_code_for_number(match.number) or region
            spans.append((match.start, match.end, f"phone:{where}"))
    return spans


def _names(text: str) -> list[tuple[int, int, str]]:
    given = "|".join(sorted(_given_names(), key=len, reverse=True))
    pattern = re.compile(
        rf"\b(?:{_TITLES}\s+{_UPPER_WORD}(?:\s+{_UPPER_WORD})?|(?:{given})\s+{_UPPER_WORD})\b"
    )
    return [(m.start(), m.end(), "name") for m in pattern.finditer(text)]


def _given_names() -> list[str]:
    from importlib.resources import files

    listing = files("specialize.data").joinpath("given_names.txt").read_text(encoding="utf-8")
    return [
        line.strip() for line in listing.splitlines() if line.strip() and not line.startswith("#")
    ]


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
