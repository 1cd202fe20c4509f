"""Keys and values of prompt prefixes the engine has already computed, so a new request that
starts the same way (the chat template's system prompt, a shared few-shot block) prefills only
the rest of its prompt.

A prompt's KV at positions below b depends only on its first b tokens and on the adapter, so the
store keeps, per prefilled prompt, its KV up to the last multiple of `block` tokens short of the
prompt's end, and indexes it under every multiple of `block` up to there: a later prompt finds
the longest stored prefix it shares, in blocks. Stored tensors are shared by those index entries
(no copies per block); the least recently used prompt goes first when the store passes its byte
budget. `clear()` when adapters are loaded or unloaded (a name may come back with new weights).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass


@dataclass
class Prefix:
    length: int
    layers: list  # per layer (keys, values), each (kv_heads, length, head_dim)
    cuts: list  # its index keys
    size: int  # bytes


class PrefixCache:
    def __init__(self, max_bytes: int = 64 * 2**20, block: int = 8):
        self.max_bytes = max_bytes
        self.block = block
        self._entries: collections.OrderedDict[tuple, Prefix] = collections.OrderedDict()
        self._index: dict[tuple, tuple] = {}  # (adapter, first b tokens) -> entry key
        self.bytes = 0
        self.hits = 0  # prompt tokens not recomputed thanks to the store
        self.misses = 0  # prompts prefilled from their first token

    def lookup(self, adapter: str, ids: list[int]) -> tuple[int, Prefix | None]:
        """The longest stored prefix of `ids` (at least one token is left to compute)."""
        for length in range(self.reusable(len(ids)), 0, -self.block):
            key = self._index.get((adapter, tuple(ids[:length])))
            if key is not None and key in self._entries:
                self._entries.move_to_end(key)
                self.hits += length
                return length, self._entries[key]
        self.misses += 1
        return 0, None

    def store(self, adapter: str, ids: list[int], layers) -> None:
        """Keep the KV of `ids` (per layer (keys, values) of shape (kv_heads, len(ids), dim))."""
        length = self.reusable(len(ids))
        if length == 0:
            return
        key = (adapter, tuple(ids[:length]))
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        kept = [(k[:, :length].clone(), v[:, :length].clone()) for k, v in layers]
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kept)
        if size > self.max_bytes:
            return
        cuts = [(adapter, tuple(ids[:cut])) for cut in range(self.block, length + 1, self.block)]
        self._entries[key] = Prefix(length, kept, cuts, size)
        self.bytes += size
        for cut in cuts:
            self._index[cut] = key
        while self.bytes > self.max_bytes:
            old_key, old = self._entries.popitem(last=False)
            self.bytes -= old.size
            for cut in old.cuts:
                if self._index.get(cut) == old_key:  # else a newer prompt holds that prefix
                    del self._index[cut]

    def clear(self) -> None:
        self._entries.clear()
        self._index.clear()
        self.bytes = 0

    def reusable(self, n: int) -> int:
        """The longest multiple of `block` that leaves at least one of n tokens to compute."""
        return (n - 1) // self.block * self.block if n > 1 else 0
