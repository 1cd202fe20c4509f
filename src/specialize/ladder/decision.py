"""The ladder's recommendation: the cheapest rung whose score is not significantly worse than the best.

"Not significantly worse" is a paired test on the same items (McNemar's exact test for 0/1
scores, a sign-flip permutation test otherwise) at the config's alpha. Ties on the best score go to
the cheaper rung, so extra effort must earn its place. A task on which no rung scores above zero
is "unsolved": there is nothing to recommend, and the decision says so instead of naming a rung.
"""

from __future__ import annotations

from dataclasses import dataclass

from specialize.evaluate.stats import PairedDifference, paired_difference


@dataclass(frozen=True)
class Decision:
    best: str | None  # None when the task is unsolved
    recommended: str | None  # None when the task is unsolved
    against_best: dict[str, PairedDifference]  # rung -> (rung - best) on the same items
    reason: str
    unsolved: bool = False

    def as_dict(self) -> dict:
        return {
            "best": self.best,
            "recommended": self.recommended,
            "unsolved": self.unsolved,
            "reason": self.reason,
            "against_best": {r: d.as_dict() for r, d in self.against_best.items()},
        }


def recommend(scores: dict[str, list[float]], order: list[str], alpha: float = 0.05) -> Decision:
    """Return the best rung and the recommended one; `order` lists rungs from cheapest."""
    rungs = [r for r in order if r in scores]
    if not rungs:
        raise ValueError("no rung has scores")
    means = {r: sum(scores[r]) / max(1, len(scores[r])) for r in rungs}
    if max(means.values()) <= 0:
        n = max(len(scores[r]) for r in rungs)
        return Decision(
            None,
            None,
            {},
            f"unsolved: no rung scores above zero on {n} items ({', '.join(rungs)} all 0.000); "
            "nothing to recommend. Check the metric and the references against a few answers, "
            "max_new_tokens, and whether the tuned rungs' training rows look like these items",
            unsolved=True,
        )
    best = max(rungs, key=lambda r: (means[r], -rungs.index(r)))
    against = {r: paired_difference(scores[best], scores[r]) for r in rungs if r != best}
    for rung in rungs:
        if rung == best:
            return Decision(
                best,
                rung,
                against,
                f"{rung} has the best score ({means[rung]:.3f}) "
                "and every cheaper rung is significantly worse",
            )
        diff = against[rung]
        if diff.delta >= 0 or diff.p_value >= alpha:
            return Decision(
                best,
                rung,
                against,
                f"{rung} ({means[rung]:.3f}) is the cheapest rung not significantly worse than the "
                f"best, {best} ({means[best]:.3f}): difference {diff.delta:+.3f} "
                f"[{diff.low:+.3f}, {diff.high:+.3f}], {diff.test} p={diff.p_value:.3g} >= {alpha}",
            )
    raise AssertionError("unreachable: the best rung is always in the list")
