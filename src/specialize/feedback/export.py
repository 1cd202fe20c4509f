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
    """Agreement over pairs labelled by two or more people: percent agreement over all pairs of
    labellers, Krippendorff's alpha (nominal; any number of labellers, gaps allowed) with a
    bootstrap interval over pairs, and Cohen's kappa when exactly two people labelled."""
    by_pair: dict[str, dict[str, str]] = defaultdict(dict)
    for label in labels:
        by_pair[label["pair_id"]][label["annotator"]] = label["choice"]
    units = [list(choices.values()) for choices in by_pair.values() if len(choices) >= 2]
    comparisons = [(x, y) for values in units for x, y in itertools.combinations(sorted(values), 2)]
    if not comparisons:
        return {"pairs_with_two_or_more": 0, "note": "no pair was labelled by two people"}
    observed = sum(x == y for x, y in comparisons) / len(comparisons)
    people = sorted({label["annotator"] for label in labels})
    summary = {
        "pairs_with_two_or_more": len(units),
        "comparisons": len(comparisons),
        "percent_agreement": round(100 * observed, 1),
        "krippendorff_alpha": _alpha_with_interval(units),
        "cohen_kappa": _cohen_kappa(by_pair, people) if len(people) == 2 else None,
    }
    return summary


def krippendorff_alpha(units: list[list[str]]) -> float | None:
    """Nominal alpha from the coincidence matrix; None when every label is the same category
    (no disagreement is possible, so alpha is undefined)."""
    coincidence: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, j in itertools.permutations(range(m), 2):
            coincidence[(values[i], values[j])] += 1 / (m - 1)
    totals: Counter = Counter()
    for (c, _), weight in coincidence.items():
        totals[c] += weight
    n = sum(totals.values())
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if n <= 1 or expected == 0:
        return None
    disagreement = sum(w for (c, k), w in coincidence.items() if c != k)
    return 1 - (n - 1) * disagreement / expected


def _alpha_with_interval(units: list[list[str]], samples: int = 1000, seed: int = 0) -> dict:
    import numpy as np

    value = krippendorff_alpha(units)
    rng = np.random.default_rng(seed)
    draws = [
        krippendorff_alpha([units[i] for i in rng.integers(0, len(units), len(units))])
        for _ in range(samples)
    ]
    draws = [d for d in draws if d is not None]
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (float("nan"), float("nan"))
    return {
        "value": None if value is None else round(value, 3),
        "ci95": [round(float(low), 3), round(float(high), 3)],
        "ci_method": "bootstrap over pairs",
        "n_pairs": len(units),
        "n_labels": sum(len(u) for u in units),
    }


def _cohen_kappa(by_pair: dict[str, dict[str, str]], people: list[str]) -> float | None:
    """Cohen's kappa of two labellers over the pairs both labelled (each with their own marginals)."""
    first, second = people
    both = [(c[first], c[second]) for c in by_pair.values() if first in c and second in c]
    if not both:
        return None
    observed = sum(x == y for x, y in both) / len(both)
    left, right = Counter(x for x, _ in both), Counter(y for _, y in both)
    expected = sum(left[c] * right[c] for c in left) / len(both) ** 2
    return round((observed - expected) / (1 - expected), 3) if expected < 1 else 1.0
