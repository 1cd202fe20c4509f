"""A KV cache that is written in place instead of concatenated at every generated token.

transformers' DynamicCache grows each layer's keys and values with `torch.cat`, so every decode
step copies the whole cache once more: for the Nordvik ladder's retrieval prompts (28 rows of ~400
tokens, 96 new tokens) that was a quarter of the generation time on a CPU, and the copies grow
with the square of the reply length. Here each layer holds a buffer sized for the prompt and the
reply, new keys and values are copied into the next free positions, and attention reads a view
of the filled part. The values attention sees are the same; only the copies go.

A cache can also be allocated for a known batch up front and written through row windows
(`rows_of`): prompts of very different lengths are then run in groups of similar length, each
group writing its keys and values straight into its rows of the shared buffer, so no group pays
for another group's padding.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a buffer with room for `capacity` positions.

    `keys` and `values` stay views of the filled positions, so everything that reads them
    (masks, sequence length, attention) sees exactly what DynamicLayer would hold. Past the
    capacity the buffer doubles (a longer generation still works, with one copy per doubling).
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._window = False  # a window writes into another layer's buffer: it must never regrow

    def allocate(self, batch: int, heads: int, head_dim: int, length: int, dtype, device) -> None:
        """Zeroed room for `batch` rows of max(capacity, length) positions, none filled yet.

        Zeros, not empty memory: positions a row never writes (its left padding) are masked,
        but a NaN left there by chance would still reach attention's weighted sum.
        """
        shape = (batch, heads, max(self.capacity, length), head_dim)
        self._keys = torch.zeros(shape, dtype=dtype, device=device)
        self._values = torch.zeros(shape, dtype=dtype, device=device)
        self.dtype, self.device, self.is_initialized = dtype, device, True
        self.length = 0
        self._expose()

    def window(self, start: int, stop: int, length: int) -> PreallocatedLayer:
        """A layer over rows start:stop of this buffer whose next write lands at `length`."""
        view = PreallocatedLayer(self.capacity)
        view.dtype, view.device, view.is_initialized = self.dtype, self.device, True
        view._keys, view._values = self._keys[start:stop], self._values[start:stop]
        view.length, view._window = length, True
        view._expose()
        return view

    def fill_to(self, length: int) -> None:
        """Declare the first `length` positions of every row written (through windows)."""
        self.length = length
        self._expose()

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            if self._window:
                raise RuntimeError("a cache window cannot grow past its parent's buffer")
            self._grow(key_states, value_states, end)
        self._keys[:, :, self.length : end].copy_(key_states)
        self._values[:, :, self.length : end].copy_(value_states)
        self.length = end
        self._expose()
        return self.keys, self.values

    def _grow(self, key_states, value_states, end: int) -> None:
        room = max(end, self.capacity, 2 * (0 if self._keys is None else self._keys.shape[-2]))
        keys = key_states.new_empty((*key_states.shape[:2], room, key_states.shape[-1]))
        values = value_states.new_empty((*value_states.shape[:2], room, value_states.shape[-1]))
        if self.length:
            keys[:, :, : self.length].copy_(self.keys)
            values[:, :, : self.length].copy_(self.values)
        self._keys, self._values = keys, values

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._keys = self._keys[indices, ...]
            self._values = self._values[indices, ...]
            self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)  # validates, and crops the views
        if self.is_initialized and self.keys is not None:
            self.length = self.keys.shape[-2]

    def reset(self) -> None:
        self._keys = self._values = None
        self.length = 0
        super().reset()


def preallocated_cache(model, capacity: int) -> DynamicCache:
    """Return a DynamicCache for `model` whose full-attention layers write in place.

    Sliding-window and other special layers keep transformers' own classes.
    """
    cache = DynamicCache(config=model.config)
    cache.layers = [
        PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer
        for layer in cache.layers
    ]
    return cache


def allocated_cache(model, batch: int, capacity: int, prompt: int) -> DynamicCache | None:
    """A preallocated cache with zeroed room for `batch` rows of at least the `prompt` length
    (`capacity` when more), or None where a layer is special.

    Row windows (`rows_of`) need every layer to be a plain full-attention buffer; sliding-window
    layers keep only their window and cannot be written through a view.
    """
    cache = preallocated_cache(model, capacity)
    if not all(isinstance(layer, PreallocatedLayer) for layer in cache.layers):
        return None
    config = model.config.get_text_config(decoder=True)
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    for layer in cache.layers:
        layer.allocate(batch, heads, head_dim, prompt, model.dtype, model.device)
    return cache


def copy_prefix(cache: DynamicCache, prefix: DynamicCache) -> None:
    """Write a one-row cache's positions at the start of every row of `cache`."""
    for layer, source in zip(cache.layers, prefix.layers, strict=True):
        filled = source.keys.shape[-2]
        layer._keys[:, :, :filled].copy_(source.keys.expand(layer._keys.shape[0], -1, -1, -1))
        layer._values[:, :, :filled].copy_(source.values.expand(layer._values.shape[0], -1, -1, -1))


def rows_of(cache: DynamicCache, start: int, stop: int, length: int) -> DynamicCache:
    """A cache over rows start:stop of `cache` (same buffers) whose next write lands at `length`."""
    view = DynamicCache()
    view.layers = [layer.window(start, stop, length) for layer in cache.layers]
    return view


def fill_to(cache: DynamicCache, length: int) -> None:
    """Mark the first `length` positions of every layer written (after writing through windows)."""
    for layer in cache.layers:
        layer.fill_to(length)
