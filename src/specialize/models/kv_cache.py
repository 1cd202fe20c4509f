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

The serving engine's batches change shape between steps (requests join and leave); it rebuilds a
cache with room to spare when rows join (`joined_cache`), compacts it in place when rows leave
(`keep_rows`), and between those its decoding steps write in place too.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a buffer with room for `capacity` positions.

    `keys` and `values` stay views of the filled positions, so everything that reads them
    (masks, sequence length, attention) sees exactly what DynamicLayer would hold. Past the
    capacity the buffer doubles, or grows by `growth` positions where that is set (a longer
    generation still works, with one copy per growth).
    """

    def __init__(self, capacity: int, growth: int | None = None):
        super().__init__()
        self.capacity = capacity
        self.growth = growth  # positions added when full; None: the buffer doubles
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

    def make_room(self, end: int) -> None:
        """Grow the buffer (as a write past it would) so that positions up to `end` fit."""
        if end > self._keys.shape[-2]:
            self._grow(self.keys, self.values, end)
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
        size = 0 if self._keys is None else self._keys.shape[-2]
        room = max(end, self.capacity, size + self.growth if self.growth else 2 * size)
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
        if not self.length:
            return
        rows = indices.tolist()
        if rows != sorted(set(rows)):  # a reorder or a repeat: gather into a new buffer
            self._keys = self._keys[indices, ...]
            self._values = self._values[indices, ...]
        else:
            self.keep_rows(rows)
        self._expose()

    def keep_rows(self, rows: list[int]) -> None:
        """Keep these rows (ascending, no repeats), moved up in place: no new buffer.

        Row i takes row rows[i] >= i, so a row is always read before anything overwrites it.
        The dropped rows' memory stays with the buffer until it is next replaced.
        """
        for i, row in enumerate(rows):
            if row != i:
                self._keys[i, :, : self.length].copy_(self._keys[row, :, : self.length])
                self._values[i, :, : self.length].copy_(self._values[row, :, : self.length])
        self._keys, self._values = self._keys[: len(rows)], self._values[: len(rows)]
        self._expose()

    def hold(self, blocks: list[tuple[torch.Tensor, torch.Tensor]], width: int) -> None:
        """Become the rows of these (keys, values) blocks in order, each right-aligned to `width`
        positions (zeros on its left, positions the caller's mask hides), in a new buffer with
        room for max(capacity, width) positions."""
        keys, values = blocks[0]
        rows = sum(k.shape[0] for k, _ in blocks)
        size = max(self.capacity, width)
        self._keys = keys.new_empty((rows, keys.shape[1], size, keys.shape[-1]))
        self._values = values.new_empty((rows, values.shape[1], size, values.shape[-1]))
        start = 0
        for block_keys, block_values in blocks:
            stop, first = start + block_keys.shape[0], width - block_keys.shape[-2]
            for buffer, block in ((self._keys, block_keys), (self._values, block_values)):
                buffer[start:stop, :, :first].zero_()
                buffer[start:stop, :, first:width].copy_(block)
            start = stop
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.length = width
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


def joined_cache(blocks: list[DynamicCache], width: int, room: int) -> DynamicCache:
    """One cache holding the rows of every block in order, each right-aligned to `width`
    positions, with room for `room` more written in place; when full it grows by `room`."""
    layers = zip(*(block.layers for block in blocks), strict=True)
    return _cache_of(
        [[(part.keys, part.values) for part in parts] for parts in layers], width, room
    )


def keep_rows(cache: DynamicCache, rows: list[int], first: int, room: int) -> DynamicCache:
    """The cache with only these rows (ascending) and without its first `first` positions:
    compacted in place when nothing is cut, else copied into a new buffer with `room` to spare."""
    if not first and all(isinstance(layer, PreallocatedLayer) for layer in cache.layers):
        for layer in cache.layers:
            layer.keep_rows(rows)
        return cache
    index = torch.tensor(rows)
    kept = [
        [(layer.keys[index, :, first:], layer.values[index, :, first:])] for layer in cache.layers
    ]
    return _cache_of(kept, kept[0][0][0].shape[-2], room)


def _cache_of(layers: list[list[tuple[torch.Tensor, torch.Tensor]]], width: int, room: int):
    """A cache whose layer i holds the (keys, values) blocks layers[i] (see `hold`)."""
    cache = DynamicCache()
    cache.layers = []
    for blocks in layers:
        layer = PreallocatedLayer(width + room, growth=room)
        layer.hold(blocks, width)
        cache.layers.append(layer)
    return cache


def rows_of(cache: DynamicCache, start: int, stop: int, length: int) -> DynamicCache:
    """A cache over rows start:stop of `cache` (same buffers) whose next write lands at `length`."""
    view = DynamicCache()
    view.layers = [layer.window(start, stop, length) for layer in cache.layers]
    return view


def row_windows(cache: DynamicCache, blocks: list[range], new: int) -> list[DynamicCache] | None:
    """One cache per block of rows of `cache` (same buffers) whose next `new` positions land
    after the filled ones, the buffers grown first where they lack the room; `fill_to` then marks
    them written. None where a layer is not a plain buffer or nothing is filled yet."""
    layers = cache.layers
    if not layers or not all(isinstance(layer, PreallocatedLayer) for layer in layers):
        return None
    length = layers[0].length
    if not length or any(layer.length != length for layer in layers):
        return None
    for layer in layers:
        layer.make_room(length + new)
    return [rows_of(cache, block.start, block.stop, length) for block in blocks]


def fill_to(cache: DynamicCache, length: int) -> None:
    """Mark the first `length` positions of every layer written (after writing through windows)."""
    for layer in cache.layers:
        layer.fill_to(length)
