from collections import Counter

import pytest

from specialize.data.mixing import mix_sources, replay_mix
from specialize.data.splits import assign_split
from specialize.errors import DataError


def test_split_is_stable_when_rows_are_added():
    keys = [f"row-{i}" for i in range(2000)]
    first = {k: assign_split(k, seed=3, val=0.1, test=0.1) for k in keys}
    more = {
        k: assign_split(k, seed=3, val=0.1, test=0.1)
        for k in keys + [f"new-{i}" for i in range(500)]
    }
    assert all(more[k] == first[k] for k in keys)
    counts = Counter(first.values())
    assert 140 < counts["test"] < 260 and 140 < counts["val"] < 260
    assert any(assign_split(k, seed=4, val=0.1, test=0.1) != first[k] for k in keys)


def test_mix_sources_follows_ratios_without_repeats_by_default():
    sources = {"domain": list(range(100)), "general": [f"g{i}" for i in range(1000)]}
    mixed, counts = mix_sources(sources, {"domain": 0.8, "general": 0.2}, seed=0)
    assert counts["domain"].drawn == 100 and counts["general"].drawn == 25 and len(mixed) == 125
    again, _ = mix_sources(sources, {"domain": 0.8, "general": 0.2}, seed=0)
    assert mixed == again


def test_replay_mix_keeps_every_task_row():
    task = list(range(80))
    mixed = replay_mix(task, [f"g{i}" for i in range(5)], 0.2, seed=1)
    assert len(mixed) == 100 and sorted(x for x in mixed if isinstance(x, int)) == task
    assert (
        sum(isinstance(x, str) for x in mixed) == 20
    )  # 5 general rows, repeated to reach the ratio
    with pytest.raises(DataError):
        replay_mix(task, [], 0.2, seed=1)
    with pytest.raises(DataError):
        replay_mix(task, ["g"], 1.0, seed=1)
