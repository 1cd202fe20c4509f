"""Confidence intervals and paired tests: the numbers that say whether a difference is real."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    method: str

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "ci95": [self.low, self.high],
            "n": self.n,
            "ci_method": self.method,
        }


def wilson(successes: float, n: int) -> Estimate:
    """Return a proportion with its Wilson score interval (sound near 0 and 1 and for small n)."""
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "wilson")
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, "wilson")


def bootstrap_mean(values: list[float], seed: int = 0) -> Estimate:
    """Return a mean with a percentile-bootstrap interval (seeded, so reruns agree)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "bootstrap")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(BOOTSTRAP_SAMPLES, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(data.mean()), float(low), float(high), int(data.size), "bootstrap")


def estimate(values: list[float], binary: bool) -> Estimate:
    """Return the mean of item scores with the interval that suits them."""
    return wilson(sum(values), len(values)) if binary else bootstrap_mean(values)


@dataclass(frozen=True)
class PairedDifference:
    """after - before on the same items, with its interval and a two-sided p-value."""

    delta: float
    low: float
    high: float
    p_value: float
    n: int
    test: str

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def as_dict(self) -> dict:
        return {
            "delta": self.delta,
            "ci95": [self.low, self.high],
            "p_value": self.p_value,
            "n": self.n,
            "test": self.test,
            "significant": self.significant,
        }


def paired_difference(before: list[float], after: list[float], seed: int = 0) -> PairedDifference:
    """Compare two systems on the same items: bootstrap CI of the mean difference; McNemar's exact
    test for 0/1 scores, a sign-flip permutation test otherwise."""
    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired comparison needs scores on the same items")
    diff = b - a
    ci = bootstrap_mean(list(diff), seed)
    if set(np.unique(np.concatenate([a, b]))) <= {0.0, 1.0}:
        gained, lost = int(((a == 0) & (b == 1)).sum()), int(((a == 1) & (b == 0)).sum())
        return PairedDifference(
            ci.mean, ci.low, ci.high, mcnemar_exact(gained, lost), diff.size, "McNemar exact"
        )
    return PairedDifference(
        ci.mean, ci.low, ci.high, _sign_flip_p(diff, seed), diff.size, "paired permutation"
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _sign_flip_p(diff: np.ndarray, seed: int) -> float:
    if diff.size == 0 or not np.any(diff):
        return 1.0
    rng = np.random.default_rng(seed)
    observed = abs(diff.mean())
    signs = rng.choice([-1.0, 1.0], size=(BOOTSTRAP_SAMPLES, diff.size))
    flipped = np.abs((signs * diff).mean(axis=1))
    return float((np.sum(flipped >= observed - 1e-12) + 1) / (BOOTSTRAP_SAMPLES + 1))
