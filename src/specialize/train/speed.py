"""Training-speed settings that change no result: where TRL's defaults waste work on a CPU.

TRL's fused LM head (SFT, GRPO) projects through the vocabulary only the positions whose label is
not -100 on CUDA/XPU, but every position elsewhere (to keep tile shapes fixed for compilers such
as Neuron's). On a CPU in eager mode a varying shape costs nothing, while the head over the 49k
vocabulary is a fifth of the model's FLOPs; SFT learns from the assistant's tokens only, so the
prompt's positions, and the entropy and top-1 metrics TRL computes on them, are wasted work.
"""

from __future__ import annotations


def score_labelled_positions_only() -> None:
    """Make TRL's fused LM head score only the labelled positions on every device.

    The loss, its gradient and the logged entropy / token accuracy are the same (they are zero on
    ignored positions either way); only the work on those positions goes.
    """
    from trl.trainer import utils

    # `add_fused_lm_head` reads this name from its own module to choose the compact path; the
    # kernel's own choice of Triton or torch tiles (trl.kernels) is untouched.
    if getattr(utils, "_use_triton", None) is not None:
        utils._use_triton = _always_compact


def _always_compact(device) -> bool:
    return True


def one_pass_frozen_head() -> None:
    """Make TRL's fused LM head use specialize.train.lm_head on a CPU with a frozen head.

    Same log-probabilities, entropy and top-1 flags (to float rounding); one vocabulary product
    fewer per step and no second pass over the tiles. A trainable head, a bias, soft-capping or
    an accelerator keep TRL's kernel."""
    from trl.trainer import utils

    from specialize.train.lm_head import CpuHead

    current = getattr(utils, "_ChunkedLogProbFunction", None)
    if current is not None and not isinstance(current, CpuHead):
        utils._ChunkedLogProbFunction = CpuHead(current)


def reuse_freed_memory() -> bool:
    """Keep the memory a training step frees for the next step; return whether glibc took it.

    glibc serves a large allocation with a fresh mapping (above its threshold of 128 KiB, which
    rises to at most 32 MiB as such blocks are freed) and hands the heap's free top back to the
    kernel, so every step faulted in and zeroed its activations' pages again: a [1,106 x 1,536]
    fp32 product of SiLU took 9.7 ms against 0.9 ms for one whose pages were already mapped.
    Measured on a LoRA SFT run in fp32 (12 steps, default model, three alternations): 59.1,
    56.5, 57.1 s before, 52.1, 50.5, 54.3 s with these thresholds, peak RSS +5%. Process-wide,
    as allocation is; a no-op off glibc."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mapped = mallopt(m_mmap_threshold, 1 << 30)  # blocks up to 1 GiB come from the heap
    kept = mallopt(m_trim_threshold, 2**31 - 1)  # and the heap's free top is kept
    return bool(mapped and kept)


def frozen_autocast_copy(weight, dtype):
    """`weight` in `dtype`, cast once and kept on the weight until it changes in place.

    Autocast casts an fp32 operand for every product it enters; a frozen weight (a LoRA base
    layer, the LM head) casts to the same numbers every time, so one kept copy does (autocast's
    casts were 14% of a profiled bf16 LoRA step here; the 28M-entry head took ~20 ms a cast).
    A change through `.data` in place (PEFT's merge) is not seen: merged layers take PEFT's own
    path, which does not use the copy."""
    import torch

    # in-place changes bump _version; a replaced storage (`weight.data = ...`) moves data_ptr
    key = (weight._version, weight.data_ptr(), dtype)
    cached = getattr(weight, "_specialize_autocast_copy", None)
    if cached is None or cached[0] != key:
        # a normal tensor even when first asked for under inference_mode (a retention probe
        # before training): an inference tensor cannot be saved for a later backward
        with torch.inference_mode(False):
            cached = (key, weight.detach().to(dtype))
        weight._specialize_autocast_copy = cached
    return cached[1]
