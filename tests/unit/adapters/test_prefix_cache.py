"""The engine's store of computed prompt prefixes: longest shared prefix, per adapter, bounded."""

import torch

from specialize.adapters.prefix_cache import PrefixCache


def kv(ids, heads=2, dim=4):
    """Fake per-layer KV whose values encode the token ids (so a slice can be checked)."""
    keys = torch.tensor(ids, dtype=torch.float32).view(1, -1, 1).expand(heads, -1, dim)
    return [(keys.clone(), -keys.clone()) for _ in range(3)]


def test_the_longest_stored_block_aligned_prefix_is_found_and_one_token_is_left():
    store = PrefixCache(block=4)
    first = list(range(100, 111))  # 11 tokens: stored up to 8 (a multiple of 4 short of the end)
    store.store("a", first, kv(first))
    assert store.lookup("a", first) == (8, store._entries[("a", tuple(first[:8]))])
    length, prefix = store.lookup("a", first[:6] + [7, 7, 7])  # shares 6: the block of 4 is used
    assert length == 4 and prefix.layers[0][0][0, :length, 0].tolist() == first[:4]
    assert store.lookup("a", first[:5]) == (4, prefix)  # never the whole prompt
    assert store.lookup("b", first) == (0, None)  # another adapter's KV is never reused
    assert store.lookup("a", [1, 2, 3, 4, 5]) == (0, None)
    assert store.hits == 16 and store.misses == 2


def test_least_recently_used_prompts_leave_when_the_budget_is_passed():
    one = 3 * 2 * (2 * 8 * 4 * 4)  # layers x (keys, values) x bytes of 8 tokens
    store = PrefixCache(max_bytes=2 * one, block=8)
    prompts = [[n] * 9 for n in range(3)]
    store.store("a", prompts[0], kv(prompts[0]))
    store.store("a", prompts[1], kv(prompts[1]))
    store.lookup("a", prompts[0])  # used: now the most recent
    store.store("a", prompts[2], kv(prompts[2]))
    assert store.bytes == 2 * one
    assert store.lookup("a", prompts[1])[0] == 0  # the least recently used one left
    assert store.lookup("a", prompts[0])[0] == 8 and store.lookup("a", prompts[2])[0] == 8
    assert all(key in store._entries for key in store._index.values())  # no stale index entry
    store.clear()
    assert store.bytes == 0 and store.lookup("a", prompts[0]) == (0, None)
