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
