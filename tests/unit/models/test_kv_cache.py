"""The in-place KV cache: new positions written into room kept in one buffer, row windows,
rows leaving in place, blocks joined right-aligned, growth by a fixed room."""

import pytest
import torch


def test_the_cache_writes_new_positions_in_place():
    from specialize.models.kv_cache import PreallocatedLayer

    layer = PreallocatedLayer(capacity=8)
    steps = [torch.randn(2, 3, n, 4) for n in (5, 1, 1)]
    pointers = set()
    for keys in steps:
        out_keys, out_values = layer.update(keys, keys * 2)
        pointers.add(layer._keys.data_ptr())
    expected = torch.cat(steps, dim=-2)
    assert torch.equal(out_keys, expected) and torch.equal(out_values, expected * 2)
    assert layer.get_seq_length() == 7 and len(pointers) == 1  # one buffer, never copied
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, expected[1:]) and layer.get_seq_length() == 7
    layer.update(torch.ones(1, 3, 1, 4), torch.ones(1, 3, 1, 4))
    assert torch.equal(layer.keys[:, :, :7], expected[1:]) and layer.keys.shape[-2] == 8


def test_a_window_writes_into_its_rows_of_the_parent_and_never_regrows():
    from specialize.models.kv_cache import PreallocatedLayer

    parent = PreallocatedLayer(capacity=4)
    parent.allocate(3, 2, 4, 4, torch.float32, torch.device("cpu"))
    window = parent.window(1, 3, length=1)  # rows 1-2, position 0 left as padding
    new = torch.randn(2, 2, 2, 4)
    window.update(new, new * 2)
    parent.fill_to(3)
    assert torch.equal(parent.keys[1:, :, 1:3], new) and torch.equal(
        parent.values[1:, :, 1:3], new * 2
    )
    assert not parent.keys[0].any() and not parent.keys[1:, :, 0].any()  # untouched rows stay zero
    with pytest.raises(RuntimeError, match="cannot grow"):
        window.update(torch.ones(2, 2, 2, 4), torch.ones(2, 2, 2, 4))


def test_rows_leave_in_place_and_a_reorder_still_gathers():
    from specialize.models.kv_cache import PreallocatedLayer

    layer = PreallocatedLayer(capacity=6)
    keys = torch.randn(4, 2, 5, 3)
    layer.update(keys, -keys)
    buffer = layer._keys.data_ptr()
    layer.batch_select_indices(torch.tensor([0, 2, 3]))  # ascending: moved up in place
    assert layer._keys.data_ptr() == buffer
    assert torch.equal(layer.keys, keys[[0, 2, 3]]) and torch.equal(layer.values, -keys[[0, 2, 3]])
    layer.update(torch.ones(3, 2, 1, 3), torch.ones(3, 2, 1, 3))  # the next write still lands
    assert torch.equal(layer.keys[:, :, :5], keys[[0, 2, 3]]) and layer.keys[:, :, 5].eq(1).all()
    layer.batch_select_indices(torch.tensor([2, 0]))  # a reorder: gathered into a new buffer
    assert torch.equal(layer.keys[:, :, :5], keys[[3, 0]])


def test_joined_cache_right_aligns_blocks_keeps_room_and_grows_by_it():
    from transformers import DynamicCache

    from specialize.models.kv_cache import joined_cache, keep_rows

    def block(rows, length, seed):
        cache = DynamicCache()
        torch.manual_seed(seed)
        for number in range(2):
            keys = torch.randn(rows, 3, length, 4)
            cache.update(keys, keys + 1, number)
        return cache

    short, long = block(2, 3, 0), block(1, 5, 1)
    cache = joined_cache([short, long], width=5, room=2)
    for layer, a, b in zip(cache.layers, short.layers, long.layers, strict=True):
        assert layer.keys.shape == (3, 3, 5, 4) and layer._keys.shape[-2] == 7
        assert torch.equal(layer.keys[:2, :, 2:], a.keys) and not layer.keys[:2, :, :2].any()
        assert torch.equal(layer.keys[2:], b.keys) and torch.equal(layer.values[2:], b.values)
    layer = cache.layers[0]
    buffer = layer._keys.data_ptr()
    for step in range(3):  # two steps fit in the room; the third grows the buffer by 2
        new = torch.full((3, 3, 1, 4), float(step))
        for number in range(2):
            cache.update(new, new, number)
        assert (layer._keys.data_ptr() == buffer) == (step < 2)
    assert layer._keys.shape[-2] == 9 and torch.equal(layer.keys[0, 0, 5:, 0], torch.arange(3.0))
    # rows leave: in place while every position stays; a new buffer when leading ones go
    kept = keep_rows(cache, [0, 2], first=0, room=2)
    assert kept.layers[1]._keys.data_ptr() == cache.layers[1]._keys.data_ptr()
    assert torch.equal(kept.layers[1].keys[1, :, :5], long.layers[1].keys[0])
    trimmed = keep_rows(kept, [1], first=2, room=2)
    assert torch.equal(trimmed.layers[1].keys[0, :, :3], long.layers[1].keys[0, :, 2:])
    assert trimmed.layers[1].keys.shape[-2] == 6 and trimmed.layers[1]._keys.shape[-2] == 8


def test_row_windows_make_room_first_and_each_block_writes_its_rows():
    """The serving engine's groups of rows (a DoRA adapter's, the stacked adapters') decode
    through one window each: a full buffer grows before any window is made, never inside one."""
    from transformers import DynamicCache

    from specialize.models.kv_cache import fill_to, joined_cache, row_windows

    empty = DynamicCache()
    assert row_windows(empty, [range(0, 1)], 1) is None  # nothing filled yet: a prefill
    source = DynamicCache()
    keys = torch.randn(3, 2, 4, 5)
    source.update(keys, -keys, 0)
    cache = joined_cache([source], width=4, room=0)  # full: no room for the next position
    assert cache.layers[0]._keys.shape[-2] == 4
    windows = row_windows(cache, [range(0, 2), range(2, 3)], 1)
    assert cache.layers[0]._keys.shape[-2] > 4  # grown once, for every window
    new = torch.randn(3, 2, 1, 5)
    for window, rows in zip(windows, (slice(0, 2), slice(2, 3)), strict=True):
        window.layers[0].update(new[rows], -new[rows])
    fill_to(cache, 5)
    assert torch.equal(cache.layers[0].keys, torch.cat([keys, new], dim=-2))
    assert torch.equal(cache.layers[0].values, -torch.cat([keys, new], dim=-2))
