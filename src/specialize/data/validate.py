"""Validate input files row by row, streaming: every defect with file:line, field and category.

`check_file` yields one `CheckedRow` per input row, so callers hold only what they choose to;
`CheckSummary` keeps counts and a bounded sample, so memory does not grow with the file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from specialize.data.audio import AudioLimits
from specialize.data.formats import RawRow, read_rows
from specialize.data.layouts import LayoutOptions, normalise
from specialize.data.records import KINDS, Defect, RowChecker, detect_kind, same_family
from specialize.data.templates import count_tokens
from specialize.errors import DataError

EXPECTED_KEYS = (
    "messages (chat), conversations (ShareGPT), instruction+output, prompt+completion, "
    "prompt+chosen+rejected, input+preferred_output+non_preferred_output, audio+text (speech), "
    "or text (other names: map them with the source's columns)"
)


@dataclass
class CheckedRow:
    """One input row after validation: its kind, the converted TRL row (None if dropped), defects."""

    raw: RawRow
    kind: str | None
    row: dict | None
    defects: list[Defect]
    tokens: int | None = None
    layout: str | None = None  # the layout it came in, when not one of our kinds (layouts.py)

    @property
    def errors(self) -> list[Defect]:
        return [d for d in self.defects if d.severity == "error"]


@dataclass
class LengthLimit:
    """Token-length check: rows longer than `max_length` tokens of this tokenizer are flagged."""

    tokenizer: object
    max_length: int


def check_file(
    path: str | Path,
    kind: str = "auto",
    limit: LengthLimit | None = None,
    layout: LayoutOptions | None = None,
    audio_limits: AudioLimits | None = None,
) -> Iterator[CheckedRow]:
    """Yield every row of `path` validated; a row of another kind than the file's is a defect.

    Rows in another tool's layout (ShareGPT, OpenAI DPO, ...) are normalised first (layouts.py).
    """
    if kind != "auto" and kind not in KINDS:
        raise DataError(
            f"unknown record kind {kind!r}", fix=f"use auto or one of {', '.join(KINDS)}"
        )
    path = Path(path)
    media_root = path if path.is_dir() else path.parent
    file_kind: str | None = None if kind == "auto" else kind
    first_line = 0
    for raw in read_rows(path):
        if raw.problem:
            category, message = raw.problem
            yield CheckedRow(raw, None, None, [Defect(category, raw.where, "", message)])
            continue
        normalised = normalise(raw.value, raw.where, layout)
        if normalised.failed:
            yield CheckedRow(raw, None, None, normalised.defects, layout=normalised.layout)
            continue
        value = normalised.value
        row_kind = detect_kind(value)
        if kind == "auto":
            if row_kind is None:
                keys = sorted(value) if isinstance(value, dict) else type(value).__name__
                message = f"cannot tell the record kind from keys {keys}; expected {EXPECTED_KEYS}"
                yield CheckedRow(raw, None, None, [Defect("unknown_kind", raw.where, "", message)])
                continue
            if file_kind is None:
                file_kind, first_line = row_kind, raw.line
            elif not same_family(row_kind, file_kind):
                message = f"looks like {row_kind}, but the file's rows are {file_kind} (from line {first_line})"
                yield CheckedRow(
                    raw, row_kind, None, [Defect("mixed_kinds", raw.where, "", message)]
                )
                continue
        use_kind = row_kind if kind == "auto" else kind
        if kind == "chat" and row_kind == "multimodal":
            use_kind = "multimodal"
        checked = _check_row(raw, value, use_kind, media_root, limit, audio_limits)
        checked.layout = normalised.layout
        checked.defects[:0] = normalised.defects
        yield checked


def _check_row(
    raw: RawRow,
    value,
    kind: str,
    media_root: Path,
    limit: LengthLimit | None,
    audio_limits: AudioLimits | None = None,
) -> CheckedRow:
    checker = RowChecker(kind, raw.where, media_root, audio_limits)
    row = checker.convert(value)
    checked = CheckedRow(raw, kind, row, checker.defects)
    if row is not None and limit is not None:
        checked.tokens = count_tokens(limit.tokenizer, row)
        if checked.tokens > limit.max_length:
            message = f"{checked.tokens} tokens, more than max_length {limit.max_length}"
            checked.defects.append(Defect("too_long", raw.where, "", message, "warning"))
    return checked


@dataclass
class CheckSummary:
    """Counts over checked rows, plus the first few defects of each category."""

    sample_per_category: int = 20
    rows: int = 0
    valid: int = 0
    kinds: Counter = field(default_factory=Counter)
    layouts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    samples: dict[str, list[Defect]] = field(default_factory=dict)

    def add(self, checked: CheckedRow) -> None:
        self.rows += 1
        self.valid += checked.row is not None
        if checked.kind:
            self.kinds[checked.kind] += 1
        if checked.layout:
            self.layouts[checked.layout] += 1
        for defect in checked.defects:
            counter = self.errors if defect.severity == "error" else self.warnings
            counter[defect.category] += 1
            kept = self.samples.setdefault(defect.category, [])
            if len(kept) < self.sample_per_category:
                kept.append(defect)

    @property
    def dropped(self) -> int:
        return self.rows - self.valid

    @property
    def defect_count(self) -> int:
        return sum(self.errors.values()) + sum(self.warnings.values())


def check_files(
    paths: list[str | Path],
    kind: str = "auto",
    limit: LengthLimit | None = None,
    on_defect: Callable[[Defect], None] | None = None,
    layout: LayoutOptions | None = None,
) -> CheckSummary:
    """Return counts over every row of every file; `on_defect` sees each defect as it is found."""
    summary = CheckSummary()
    for path in paths:
        for checked in check_file(path, kind, limit, layout):
            summary.add(checked)
            if on_defect:
                for defect in checked.defects:
                    on_defect(defect)
    return summary
