"""Contamination: evaluation items whose question also appears in the training data."""

from __future__ import annotations

import json
from pathlib import Path

from specialize.artifacts import RunRecord
from specialize.data.leakage import LeakIndex
from specialize.evaluate.tasks import EvalItem


def training_files_of(run_or_adapter: Path) -> list[Path]:
    """Return the train.jsonl files a run read, from its run.json (empty if not a run directory)."""
    for folder in (run_or_adapter, run_or_adapter.parent):
        record = folder / "run.json"
        if record.is_file():
            refs = RunRecord.read(record).data
            return [
                Path(r["path"]).parent / "train.jsonl"
                for r in refs
                if (Path(r["path"]).parent / "train.jsonl").is_file()
            ]
    return []


def find_overlaps(
    items: list[EvalItem], train_files: list[Path], *, near_threshold: float = 0.8
) -> dict:
    """Return which eval items ask a question found in the training files (exact or near)."""
    index = LeakIndex(near_threshold)
    for path in train_files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                index.add(json.loads(line), f"{path}:{number}")
    overlaps = []
    for item in items:
        text = item.prompt if isinstance(item.prompt, str) else item.context
        row = {"prompt": text} if text is not None else {"messages": item.prompt}
        leak = index.match(row)
        if leak:
            overlaps.append({"id": item.id, "how": leak.how, "train_row": leak.where})
    return {
        "checked_against": [str(p) for p in train_files],
        "overlapping_items": len(overlaps),
        "items": overlaps,
    }
