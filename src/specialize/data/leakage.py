"""Leakage: train rows whose question also appears (exactly or nearly) in val, test or an eval file."""

from __future__ import annotations

from dataclasses import dataclass

from specialize.data.curate import NearDuplicateIndex, dedup_key
from specialize.data.records import prompt_text


@dataclass(frozen=True)
class Leak:
    how: str  # "exact" or "near"
    where: str  # the place of the evaluation row it matches


class LeakIndex:
    """Index of evaluation rows' prompts; `match` tells whether a training row asks the same thing."""

    def __init__(self, near_threshold: float = 0.8):
        self._exact: dict[str, str] = {}
        self._near = NearDuplicateIndex(threshold=near_threshold)

    def add(self, row: dict, where: str) -> None:
        text = prompt_text(row)
        if not text.strip():
            return
        key = dedup_key(text)
        self._exact.setdefault(key, where)
        self._near.add(where, text)

    def match(self, row: dict) -> Leak | None:
        text = prompt_text(row)
        if not text.strip():
            return None
        exact = self._exact.get(dedup_key(text))
        if exact:
            return Leak("exact", exact)
        near = self._near.query(text)
        return Leak("near", near) if near else None

    def __len__(self) -> int:
        return len(self._exact)
