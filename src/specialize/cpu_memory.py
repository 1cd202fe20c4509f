"""Two CPU memory settings that libraries read once, at first use, so they are set on import.

Page-aligned large blocks. torch reads `THP_MEM_ALLOC_ENABLE` once, at its first CPU allocation
(not at import). Set, it allocates every block of 2 MiB or more at a page boundary and advises the
kernel to back it with transparent huge pages (which it does only where the THP mode is `always` or
`madvise`). Measured on LoRA SFT of the default model (`benchmarks/train_throughput.py`, 24 steps
of 8, alternated): peak RSS 3,062-3,094 MiB without, 2,752-2,865 MiB with (2,789 with huge pages
switched off for the process, so the page alignment is what counts: glibc then places the
activations' large blocks so that fewer holes open between them); time and results unchanged, and
the same on the checkpointed path (2,058-2,127 -> 1,914-1,919 MiB), for DPO and the reward model
(-11 to -17%), and on evaluation (the core retention suite: 1,871-1,876 -> 1,844-1,894 MiB, 40-42 s
either way).

A bounded oneDNN kernel cache. On a CPU with native bf16, torch runs bf16 products through oneDNN,
which compiles a kernel for every new product shape and keeps up to 1,024 of them in the heap,
among the activations. Packed training batches change their token count every step, so every
step adds ~25 kernels no later step reuses, and peak RSS climbed for ~30 steps of a LoRA SFT run.
A step reuses its own kernels across the model's layers, so 64 kept kernels cost no speed.
Measured (`train_throughput.py --rows 384`, 48 steps of 8, alternated twice): 2,987 / 3,044 MiB
with 1,024 kept, 2,558 / 2,563 with 64; 140.4 / 137.6 s against 135.8 / 135.8 s, the same loss.
"""

from __future__ import annotations

import os

PAGE_ALIGNED_BLOCKS = "THP_MEM_ALLOC_ENABLE"
KERNEL_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
KERNEL_CACHE_OLD = "DNNL_PRIMITIVE_CACHE_CAPACITY"  # oneDNN still reads its former name
KEPT_KERNELS = 64  # a training step compiles ~25 (its product shapes, forward and backward)
SETTINGS = (PAGE_ALIGNED_BLOCKS, KERNEL_CACHE)  # what set_cpu_memory_defaults may set


def set_cpu_memory_defaults() -> None:
    """Both settings below, each unless the environment already has it."""
    align_large_blocks()
    bound_kernel_cache()


def align_large_blocks() -> bool:
    """Ask torch for page-aligned large CPU blocks unless the environment already says; return
    whether this call asked.

    Process-wide and inherited by child processes, as the variable is. It takes effect only if
    torch has allocated no CPU tensor yet, which is why `specialize/__init__.py` calls it before
    importing anything that could; a program that made tensors before importing specialize keeps
    torch's default (set the variable in its environment instead)."""
    if PAGE_ALIGNED_BLOCKS in os.environ:
        return False
    os.environ[PAGE_ALIGNED_BLOCKS] = "1"
    return True


def bound_kernel_cache() -> bool:
    """Keep at most KEPT_KERNELS compiled oneDNN kernels unless the environment already says;
    return whether this call set it.

    oneDNN reads the variable when it compiles its first kernel, so like `align_large_blocks` it
    must be set before a program's first bf16 product; inherited by child processes."""
    if KERNEL_CACHE in os.environ or KERNEL_CACHE_OLD in os.environ:
        return False
    os.environ[KERNEL_CACHE] = str(KEPT_KERNELS)
    return True
