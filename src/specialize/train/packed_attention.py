"""Attention for training batches: each packed document attends to itself, without an L x L mask;
padded batches on CPU attend without repeated kv heads.

Padding-free training concatenates a batch's rows into one sequence whose position ids restart at
every document. transformers' sdpa path then builds a block-diagonal causal mask over the whole
sequence, and with an explicit mask torch's CPU flash kernel computes every one of the L x L
scores (and their gradients) only to mask most of them: at batch 8 of ~130-token rows that was
about a quarter of a LoRA training step here (fwd + bwd ~90 ms a layer at L = 1,100).

Here the documents are scattered into a right-padded [documents, heads, longest, dim] batch and
attended with `is_causal=True` and no mask: a real query never sees a padded key (padding comes
after it), so the result is the masked one (to float rounding), at the cost of the documents'
own squares only. A masked call with grouped kv heads on CPU (padded batches) attends with the
groups as they are (`_masked_gqa`); anything else (a KV cache's decoding step, one document) goes
to transformers' sdpa unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NAME = "specialize_training"


@dataclass(frozen=True)
class Layout:
    """Where each packed token sits in the padded per-document batch, and each document's span."""

    documents: int
    longest: int
    index: torch.Tensor  # token t of the packed row -> document * longest + position in document
    spans: tuple[tuple[int, int], ...]  # (start, end) of each document in the packed row


def packed_layout(position_ids: torch.Tensor) -> Layout | None:
    """The layout of a one-row batch whose position ids restart per document, else None.

    A document starts wherever the position does not follow the previous one (as transformers'
    own packed-sequence detection decides), so its first position need not be 0."""
    if position_ids.dim() != 2 or position_ids.shape[0] != 1 or position_ids.shape[1] < 2:
        return None
    positions = position_ids[0]
    starts = torch.ones_like(positions, dtype=torch.bool)
    starts[1:] = positions[1:] != positions[:-1] + 1
    document = starts.cumsum(0) - 1
    documents = int(document[-1]) + 1
    if documents == 1:
        return None
    lengths = torch.bincount(document, minlength=documents)
    first = lengths.cumsum(0) - lengths
    within = torch.arange(positions.numel(), device=positions.device) - first[document]
    longest = int(lengths.max())
    ends = lengths.cumsum(0).tolist()
    spans = tuple(zip([0, *ends[:-1]], ends, strict=True))
    return Layout(documents, longest, document * longest + within, spans)


_last: tuple[torch.Tensor, Layout | None] | None = None


def _layout_for(position_ids: torch.Tensor) -> Layout | None:
    """Every layer of one forward gets the same position_ids tensor: work its layout out once."""
    global _last
    if _last is None or _last[0] is not position_ids:
        _last = (position_ids, packed_layout(position_ids))
    return _last[1]


def packed_attention_forward(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """transformers' attention interface: (output [batch, length, heads, dim], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    layout = None
    # sdpa's own masks are boolean; an additive one was made by a caller with its own layout
    # (e.g. the multiple-choice scorer's choice rows), whose positions must not be read as documents.
    own_mask = attention_mask is None or attention_mask.dtype == torch.bool
    if (
        own_mask
        and position_ids is not None
        and query.shape[2] == key.shape[2] == position_ids.shape[-1]
    ):
        layout = _layout_for(position_ids)
    if layout is None:
        if _masked_gqa(module, query, attention_mask, kwargs):
            return _grouped_attention(query, key, value, attention_mask, dropout, scaling), None
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # torch's CPU flash kernel runs bf16 fwd + bwd at about half its fp32 speed (measured on
    # AVX512-BF16), so under autocast the documents attend in fp32; the result returns in bf16.
    compute = torch.float32 if query.device.type == "cpu" else query.dtype
    tokens = [states[0].transpose(0, 1).to(compute) for states in (query, key, value)]
    with torch.autocast(query.device.type, enabled=False):
        if query.device.type == "cpu" and not dropout:
            packed = _DocumentAttention.apply(*tokens, layout, scaling)
        else:
            packed = _padded_attention(*tokens, layout, scaling, dropout)
    return packed.to(query.dtype).unsqueeze(0), None


def _masked_gqa(module, query, attention_mask, kwargs) -> bool:
    """Whether this is a masked multi-position call with grouped kv heads on CPU.

    transformers' sdpa path copies every key and value once per query head (`repeat_kv`) when a
    mask is given (its CUDA kernels fall back to math with a mask and grouped heads); torch's CPU
    kernel takes the groups as they are, with the same output bitwise. A padded fp32 LoRA step of
    SmolLM2-135M at 8 x 300 tokens took 12.4 s against 13.5-14.1 (the same loss), and the repeated
    copies are no longer kept for the backward: padded SFT at 8 x ~124 tokens peaked 200-280 MiB
    lower (3,557 / 3,638 against 3,838 / 3,834 MiB, its time within noise). GRPO's batches are
    padded."""
    return (
        query.device.type == "cpu"
        and attention_mask is not None
        and query.shape[2] > 1
        and getattr(module, "num_key_value_groups", 1) > 1
        and not any(kwargs.get(name) is not None for name in ("position_bias", "cache", "softcap"))
    )


def _grouped_attention(query, key, value, mask, dropout: float, scale: float | None):
    """sdpa with the kv heads grouped: [batch, heads, length, dim] in, [batch, length, heads, dim] out."""
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=True
    )
    return output.transpose(1, 2).contiguous()


def _padded_attention(query, key, value, layout: Layout, scale: float | None, dropout: float):
    """sdpa over the padded documents, with autograd's own backward (which keeps the padded
    q, k, v and output)."""
    output = F.scaled_dot_product_attention(
        _to_documents(query, layout),
        _to_documents(key, layout),
        _to_documents(value, layout),
        dropout_p=dropout,
        scale=scale,
        is_causal=True,
        enable_gqa=query.shape[1] != key.shape[1],  # no repeated copies of the kv heads
    )
    return _to_tokens(output, layout)


# Up to this many documents a batch, each attends in its own kernel call; more (many short
# documents, where a call's fixed cost would dominate) attend padded in one.
MOST_CALLS = 64


class _DocumentAttention(torch.autograd.Function):
    """torch's CPU flash attention over the packed documents, keeping q, k, v and the output
    packed for the backward.

    Autograd's sdpa node keeps them padded to the longest document (at batch 8 of SmolLM2 chat
    rows, 1,464 slots for 1,041 tokens: 257 MiB a step). Each document attends in its own call
    on its span of the packed row, so no query is padded: one padded call computed every
    document's square at the longest one's size (8 documents of 73-184 tokens: 21.3 ms a layer's
    forward and backward against 13.2 ms for one call each). Above MOST_CALLS documents they
    attend padded in one call; there a padded query's output gradient is zero, so what its output
    held does not matter. The kernel takes the kv heads ungrouped (no repeated copies)."""

    @staticmethod
    def forward(ctx, query, key, value, layout: Layout, scale: float | None):
        if _one_call_each(layout):
            packed, logsumexps = _attend_each(query, key, value, layout.spans, scale)
        else:
            output, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                *(_to_documents(states, layout) for states in (query, key, value)),
                0.0,
                True,
                scale=scale,
            )
            packed, logsumexps = _to_tokens(output, layout), [logsumexp]
        ctx.save_for_backward(query, key, value, packed, *logsumexps)
        ctx.layout, ctx.scale = layout, scale
        return packed

    @staticmethod
    def backward(ctx, grad):
        query, key, value, output, *logsumexps = ctx.saved_tensors
        layout, kept = ctx.layout, (grad, query, key, value, output)
        if _one_call_each(layout):
            return *_attend_each_backward(kept, logsumexps, layout.spans, ctx.scale), None, None
        grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            *(_to_documents(t, layout) for t in kept),
            logsumexps[0],
            0.0,
            True,
            scale=ctx.scale,
        )
        return *(_to_tokens(g, layout) for g in grads), None, None


def _one_call_each(layout: Layout) -> bool:
    return len(layout.spans) <= MOST_CALLS


def _document(tokens: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
    """The span's tokens of a packed [length, heads, dim] tensor as [1, heads, span, dim] (a view)."""
    return tokens[span[0] : span[1]].transpose(0, 1).unsqueeze(0)


def _attend_each(query, key, value, spans, scale):
    """Each document's flash attention written into one packed output; and the log-sum-exps."""
    packed = query.new_empty(query.shape[0], query.shape[1], value.shape[2])
    logsumexps = []
    for span in spans:
        output, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            *(_document(states, span) for states in (query, key, value)), 0.0, True, scale=scale
        )
        _document(packed, span).copy_(output)
        logsumexps.append(logsumexp)
    return packed, logsumexps


def _attend_each_backward(kept, logsumexps, spans, scale):
    """The packed gradients of q, k and v, document by document."""
    grad, query, key, value, _ = kept
    grads = [torch.empty_like(t) for t in (query, key, value)]
    for span, logsumexp in zip(spans, logsumexps, strict=True):
        parts = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            *(_document(t, span) for t in kept), logsumexp, 0.0, True, scale=scale
        )
        for whole, part in zip(grads, parts, strict=True):
            _document(whole, span).copy_(part)
    return grads


def _to_documents(tokens: torch.Tensor, layout: Layout) -> torch.Tensor:
    """[length, heads, dim] packed -> [documents, heads, longest, dim], zero-padded on the right."""
    padded = _Scatter.apply(tokens, layout.index, layout.documents * layout.longest)
    return padded.view(layout.documents, layout.longest, *tokens.shape[1:]).transpose(1, 2)


def _to_tokens(documents: torch.Tensor, layout: Layout) -> torch.Tensor:
    """[documents, heads, longest, dim] -> [length, heads, dim], the packed tokens only."""
    heads, dim = documents.shape[1], documents.shape[3]
    return documents.transpose(1, 2).reshape(-1, heads, dim).index_select(0, layout.index)


class _Scatter(torch.autograd.Function):
    """tokens -> rows `index` of a zeroed [slots, ...] tensor, keeping only the index for backward.

    Tensor.index_copy's autograd keeps its whole source (for the source's shape): with q, k and v
    of every layer that was a second fp32 copy of them held to the backward, ~110 MiB a step in
    a LoRA SFT of SmolLM2-135M at batch 8."""

    @staticmethod
    def forward(ctx, tokens, index, slots):
        ctx.save_for_backward(index)
        padded = tokens.new_zeros(slots, *tokens.shape[1:])
        return padded.index_copy_(0, index, tokens)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def register() -> None:
    """Make NAME a transformers attention implementation (its masks are sdpa's)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention_forward)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def use_training_attention(model) -> bool:
    """Switch a model that attends with sdpa to NAME, training's attention (packed documents
    each on their own, padded batches on CPU with grouped kv heads, the rest as sdpa; same
    results); return whether it did.

    Other implementations (eager, flash) are left alone: they were chosen for a reason."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    model.set_attn_implementation(NAME)
    return True
