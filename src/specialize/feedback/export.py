"""Labels -> preference rows in the data stage's `preference` format, with agreement statistics.

a / b: the preferred answer is `chosen`, the other `rejected`. A corrected answer becomes `chosen`
against the answer the person rejected (for both_bad: against each of the two). Ties, and
both_bad without a correction, teach no direction and are counted, not exported."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from pathlib import Path

from specialize.artifacts import atomic_write_json, atomic_write_text
from specialize.feedback.store import live_labels


def export(out: str | Path, session: str | None = None) -> dict:
    """Write preference rows to out and agreement to out + '.agreement.json'; return the summary."""
    labels = live_labels(session)
    rows, skipped = [], Counter()
    for label in labels:
        made = _rows(label)
        if not made:
            skipped[label["choice"]] += 1
        rows += made
    out = Path(out)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary = {
        "labels": len(labels),
        "rows": len(rows),
        "skipped": dict(skipped),
        "annotators": sorted({label["annotator"] for label in labels}),
        "agreement": agreement(labels),
    }
    atomic_write_json(out.with_name(out.name + ".agreement.json"), summary)
    return summary


def _rows(label: dict) -> list[dict]:
    answers = {"a": label["first"], "b": label["second"]}
    sources = {"a": label["first_source"], "b": label["second_source"]}
    choice, corrected = label["choice"], label["corrected"]
    meta = {"pair_id": label["pair_id"], "annotator": label["annotator"], "choice": choice}
    if label.get("comment"):
        meta["comment"] = label["comment"]
    pairs = []
    if choice in ("a", "b"):
        loser = "b" if choice == "a" else "a"
        winner_text = corrected or answers[choice]
        pairs.append(
            (
                winner_text,
                "corrected" if corrected else sources[choice],
                answers[loser],
                sources[loser],
            )
        )
    elif choice == "both_bad" and corrected:
        pairs += [(corrected, "corrected", answers[s], sources[s]) for s in ("a", "b")]
    return [
        {
            "prompt": label["prompt"],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "chosen_source": chosen_source,
            "rejected_source": rejected_source,
            **meta,
        }
        for chosen, chosen_source, rejected, rejected_source in pairs
        if chosen != rejected
    ]


def agreement(labels: list[dict]) -> dict:
    """Pairwise agreement over pairs labelled by two or more people, with Cohen's kappa."""
    by_pair: dict[str, dict[str, str]] = defaultdict(dict)
    for label in labels:
        by_pair[label["pair_id"]][label["annotator"]] = label["choice"]
    comparisons = [
        (x, y)
        for choices in by_pair.values()
        if len(choices) >= 2
        for x, y in itertools.combinations(sorted(choices.values()), 2)
    ]
    shared = sum(len(c) >= 2 for c in by_pair.values())
    if not comparisons:
        return {"pairs_with_two_or_more": 0, "note": "no pair was labelled by two people"}
    observed = sum(x == y for x, y in comparisons) / len(comparisons)
    counts = Counter(v for pair in comparisons for v in pair)
    total = sum(counts.values())
    expected = sum((n / total) ** 2 for n in counts.values())
    kappa = (observed - expected) / (1 - expected) if expected < 1 else 1.0
    return {
        "pairs_with_two_or_more": shared,
        "comparisons": len(comparisons),
        "percent_agreement": round(100 * observed, 1),
        "cohen_kappa": round(kappa, 3),
    }
