"""Mix several sources at given ratios, deterministically (used for replay of general data)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from specialize.errors import DataError


@dataclass
class MixCount:
    """How one source contributed: rows it had, rows drawn, and how many of those are repeats."""

    available: int
    drawn: int

    @property
    def repeats(self) -> int:
        return max(0, self.drawn - self.available)

    @property
    def unused(self) -> int:
        return max(0, self.available - self.drawn)


def draw(rows: list, count: int, rng: random.Random) -> list:
    """Return `count` rows: a sample without repeats when there are enough, else whole passes plus a sample."""
    if count <= 0 or not rows:
        return []
    whole, rest = divmod(count, len(rows))
    drawn = []
    for _ in range(whole):
        drawn.extend(rng.sample(rows, len(rows)))
    return drawn + rng.sample(rows, rest)


def mix_sources(
    sources: dict[str, list], ratios: dict[str, float], *, seed: int, total: int | None = None
) -> tuple[list, dict[str, MixCount]]:
    """Return rows drawn from each source in proportion to its ratio, shuffled, and per-source counts.

    Without `total`, it is the largest mix that needs no repeats from any source.
    """
    if set(ratios) != set(sources):
        raise DataError(f"ratios given for {sorted(ratios)} but sources are {sorted(sources)}")
    if any(r <= 0 for r in ratios.values()):
        raise DataError(
            "every mixing ratio must be above 0", fix="drop a source instead of giving it ratio 0"
        )
    weight = sum(ratios.values())
    shares = {name: ratio / weight for name, ratio in ratios.items()}
    if total is None:
        total = int(min(len(sources[n]) / shares[n] for n in sources))
    rng = random.Random(seed)
    mixed, counts = [], {}
    for name in sorted(sources):
        count = round(total * shares[name])
        mixed.extend(draw(sources[name], count, rng))
        counts[name] = MixCount(len(sources[name]), count)
    rng.shuffle(mixed)
    return mixed, counts


def replay_mix(task_rows: list, replay_rows: list, ratio: float, *, seed: int) -> list:
    """Return task rows plus general rows so that `ratio` of the result is replay, shuffled.

    Every task row is kept once; replay rows are sampled (repeated only if too few).
    """
    if not 0 <= ratio < 1:
        raise DataError(f"replay ratio {ratio} must be in [0, 1)", fix="for example ratio: 0.2")
    if ratio == 0 or not task_rows:
        return list(task_rows)
    if not replay_rows:
        raise DataError("replay source has no rows", fix="check replay.source")
    rng = random.Random(seed)
    needed = round(len(task_rows) * ratio / (1 - ratio))
    mixed = list(task_rows) + draw(replay_rows, needed, rng)
    rng.shuffle(mixed)
    return mixed
