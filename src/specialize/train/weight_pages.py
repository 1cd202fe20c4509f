"""Give a frozen fp32 base's memory back to the OS while training reads only its 16-bit copies.

Under CPU autocast every product of a frozen LoRA base layer (and of the tied head, through
`lm_head`) reads the weight's kept 16-bit copy (`speed.frozen_autocast_copy`), so the fp32 weights
sit unread for the whole run: 512 MiB of the default model's 540. Transformers memory-maps a
safetensors file whose dtype is the one asked for, so those weights are the file's pages, and
`madvise(MADV_PAGEOUT)` hands them back to the kernel. Nothing is lost: a clean page of the file is
dropped and read back from the file, bitwise, by whatever next touches it (a merge, fp32
evaluation, generation); a page written in place is anonymous and, with no swap, stays where it is.
Weights that are not a file's pages (converted dtype, a model built in memory) are left alone, and
the kernel keeps any page another mapping shares (a server mapping the same file): best effort,
never a change of value.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch
from transformers import TrainerCallback

from specialize.train.fused_lora import fused_bases
from specialize.train.speed import frozen_autocast_copy

MADV_PAGEOUT = 21  # Linux 5.4+; older kernels answer EINVAL and nothing happens


def page_out_frozen_base(model, dtype: torch.dtype) -> int:
    """Make the `dtype` copies of `model`'s frozen LoRA bases and tied head, then page out the fp32
    weights they came from where those are a file's pages; return the bytes handed back.

    The copies are made first so that making them later does not read the weights back in."""
    weights = _read_through_copies(model)
    for weight in weights:
        frozen_autocast_copy(weight, dtype)
    return page_out(weights)


def page_out(tensors) -> int:
    """madvise(MADV_PAGEOUT) the whole pages inside each contiguous tensor that a file backs;
    return the bytes advised (0 off Linux or where nothing is a file's)."""
    madvise = _madvise()
    if madvise is None:
        return 0
    mappings = file_mappings()
    advised, seen = 0, set()
    for tensor in tensors:
        start, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
        if (
            start in seen
            or not tensor.is_contiguous()
            or not in_file_mapping(start, size, mappings)
        ):
            continue
        seen.add(start)
        low, high = whole_pages(tensor)  # a page shared with a neighbour stays
        if high > low and madvise(low, high - low, MADV_PAGEOUT) == 0:
            advised += high - low
    return advised


def whole_pages(tensor) -> tuple[int, int]:
    """The addresses [low, high) of the pages that lie wholly inside a contiguous tensor."""
    start, page = tensor.data_ptr(), mmap.PAGESIZE
    end = start + tensor.numel() * tensor.element_size()
    return -(-start // page) * page, end // page * page


def file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's mappings of files, from /proc/self/maps."""
    found = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                # address perms offset dev inode path; an anonymous mapping has inode 0
                if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):
                    low, high = fields[0].split("-")
                    found.append((int(low, 16), int(high, 16)))
    except OSError:
        return []
    return found


def in_file_mapping(start: int, size: int, mappings) -> bool:
    """Whether the bytes [start, start + size) lie inside one of `mappings`."""
    return any(low <= start and start + size <= high for low, high in mappings)


def _read_through_copies(model) -> list[torch.Tensor]:
    """The fp32 frozen weights that training under autocast reads only through kept copies: the
    base of every LoRA linear layer the fused path computes, and the tied input/output embedding
    (the head's products use its copy; the input lookup reads a few rows back in)."""
    weights = [base.weight for base in fused_bases(model)]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not head.weight.requires_grad:
        weights.append(head.weight)
    return [w for w in weights if w.dtype == torch.float32 and w.device.type == "cpu"]


def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


class FrozenBasePages(TrainerCallback):
    """Trainer callback: page the frozen fp32 base out when training starts and after each
    retention probe (it runs outside autocast, so it reads the fp32 weights back in)."""

    def __init__(self, model, dtype: torch.dtype):
        self.model, self.dtype = model, dtype
        self.paged_out = 0  # bytes handed back when training started

    def on_train_begin(self, args, state, control, **kwargs):
        self.paged_out = page_out_frozen_base(self.model, self.dtype)

    def on_save(self, args, state, control, **kwargs):
        page_out(_read_through_copies(self.model))
