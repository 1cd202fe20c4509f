"""Leakage: train rows whose question (or image) also appears, exactly or nearly, in val, test or an eval file."""

from __future__ import annotations

from dataclasses import dataclass

from specialize.data.curate import NearDuplicateIndex, dedup_key
from specialize.data.media import SAME_IMAGE_BITS, hamming, image_info
from specialize.data.records import prompt_text, row_images


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


class ImageLeakIndex:
    """Difference hashes of evaluation rows' images; `match` finds a training image that is the same photo.

    Same photo means within SAME_IMAGE_BITS of 64 bits: a re-encoded, resized or slightly
    brightened copy keeps its hash, a different photo of the same card does not.
    """

    def __init__(self, max_bits: int = SAME_IMAGE_BITS):
        self.max_bits = max_bits
        self._hashes: list[tuple[int, str]] = []

    def add(self, row: dict, where: str) -> None:
        for ref in row_images(row):
            self._hashes.append((image_info(ref).dhash, where))

    def match(self, row: dict) -> str | None:
        for ref in row_images(row):
            dhash = image_info(ref).dhash
            for other, where in self._hashes:
                if hamming(dhash, other) <= self.max_bits:
                    return where
        return None

    def __len__(self) -> int:
        return len(self._hashes)


def same_images(a: dict, b: dict, max_bits: int = SAME_IMAGE_BITS) -> bool:
    """Return whether two rows show the same pictures (both without images counts as same)."""
    left, right = row_images(a), row_images(b)
    if len(left) != len(right):
        return False
    return all(
        hamming(image_info(x).dhash, image_info(y).dhash) <= max_bits
        for x, y in zip(left, right, strict=True)
    )
