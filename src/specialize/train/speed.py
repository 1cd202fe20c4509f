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


VARLEN_SDPA = "specialize_varlen_sdpa"


def use_varlen_attention(model) -> None:
    """Make a model using sdpa attend per document when a padding-free batch packs several in one row.

    The packed row carries position ids that restart at each document; sdpa over the whole row with
    a block-diagonal mask costs (sum of lengths)^2 per head and layer, one call per document with
    `is_causal` costs the sum of squared lengths and lets the CPU's flash kernel skip the mask.
    Anything else (padded batches, a KV cache, one document) goes to transformers' own sdpa.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_attention)
    AttentionMaskInterface.register(VARLEN_SDPA, sdpa_mask)
    config._attn_implementation = VARLEN_SDPA


def varlen_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa, one causal call per packed document (see `use_varlen_attention`)."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    spans = _packed_spans(kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q"), query, key)
    if spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    dropout = kwargs.get("dropout", 0.0)
    outputs = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=kwargs.get("scaling"),
            is_causal=True,
        )
        for start, end in spans
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _packed_spans(position_ids, cu_seq_lens, query, key) -> list[tuple[int, int]] | None:
    """Return [(start, end)] of the documents packed in a one-row batch, or None when not packed.

    TRL's padding-free collator sends the boundaries (`cu_seq_lens_q`); without them they follow
    from the position ids, which restart at each document.
    """
    if position_ids is None or position_ids.shape[0] != 1 or query.shape[0] != 1:
        return None
    length = query.shape[2]
    if length < 2 or key.shape[2] != length or position_ids.shape[1] != length:
        return None
    if cu_seq_lens is not None and int(cu_seq_lens[-1]) == length:
        bounds = cu_seq_lens.tolist()
    else:
        starts = ((position_ids[0, 1:] - position_ids[0, :-1]) != 1).nonzero().flatten() + 1
        bounds = [0, *starts.tolist(), length]
    if len(bounds) <= 2:
        return None
    return list(zip(bounds[:-1], bounds[1:], strict=True))
