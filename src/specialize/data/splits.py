"""Deterministic splits: each row's split is a hash of its key, so adding rows never moves others."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def assign_split(key: str, *, seed: int, val: float, test: float) -> str:
    """Return 'train', 'val' or 'test' for a row key; the same key always lands in the same split."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    if point < test:
        return "test"
    if point < test + val:
        return "val"
    return "train"
