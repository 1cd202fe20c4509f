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


@dataclass(frozen=True)
class Agreement:
    """How often two pass/fail raters agree on the same items: raw agreement with its Wilson
    interval, and Cohen's kappa (agreement beyond chance) with a bootstrap interval. Kappa is None
    when it is undefined: both raters gave one and the same verdict to every item."""

    agreement: Estimate
    kappa: float | None
    kappa_ci95: tuple[float, float] | None
    n: int
    counts: dict  # both_pass, both_fail, only_first_pass, only_second_pass

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "agreement": self.agreement.as_dict(),
            "kappa": self.kappa,
            "kappa_ci95": list(self.kappa_ci95) if self.kappa_ci95 else None,
            "kappa_ci_method": "bootstrap" if self.kappa_ci95 else None,
            "counts": self.counts,
        }


def agreement(first: list[bool], second: list[bool], seed: int = 0) -> Agreement:
    """Return the agreement of two raters' verdicts on the same items (see `Agreement`)."""
    a, b = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("agreement needs both raters' verdicts on the same items")
    n = int(a.size)
    counts = {
        "both_pass": int((a & b).sum()),
        "both_fail": int((~a & ~b).sum()),
        "only_first_pass": int((a & ~b).sum()),
        "only_second_pass": int((~a & b).sum()),
    }
    raw = wilson(counts["both_pass"] + counts["both_fail"], n)
    kappa = _kappa(a, b)
    interval = None
    if kappa is not None:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
        kappas = [k for k in (_kappa(a[d], b[d]) for d in draws) if k is not None]
        if len(kappas) >= BOOTSTRAP_SAMPLES // 2:  # too few defined resamples: no honest interval
            low, high = np.percentile(kappas, [2.5, 97.5])
            interval = (float(low), float(high))
    return Agreement(raw, kappa, interval, n, counts)


def _kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size == 0:
        return None
    observed = float((a == b).mean())
    pa, pb = float(a.mean()), float(b.mean())
    chance = pa * pb + (1 - pa) * (1 - pb)
    if chance >= 1.0 - 1e-12:
        return None
    return (observed - chance) / (1 - chance)
