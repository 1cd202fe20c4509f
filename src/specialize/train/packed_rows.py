"""Padding-free forwards for trainers that batch right-padded rows: DPO's chosen and rejected answers.

TRL's DPOTrainer pads each [chosen; rejected] batch to its longest row (its own padding-free mode
is switched off in TRL 1.16), and with answers of varied length much of what a step computes is
padding: in the benchmark's pairs about half the tokens, each through every layer, twice a step
(the policy and the reference pass), and sdpa masks [rows, L, L] scores to ignore them.

Here the fused-head forward that TRL calls (`model(..., labels=..., fused_lm_head=True)`, added by
`trl.trainer.utils.add_fused_lm_head`) packs the batch's real tokens into one row whose positions
restart at every row, so each row attends to itself only (`packed_attention`), and hands back the
per-token outputs in the padded layout the trainer reads: the same log-probabilities, to float
rounding, without the padding's work. A batch it cannot pack this way (not right-padded, other
inputs such as images) runs the original forward unchanged.
"""

from __future__ import annotations

import functools

import torch

# Per-token fields of TRL's FusedCausalLMOutput, all [rows, length - 1] (zero where unlabelled).
PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")

# Inputs a text-only fused-head call may carry (PEFT passes its other arguments as None); anything
# else (pixel values, token types) is left to the original forward.
_TEXT_INPUTS = frozenset({"input_ids", "attention_mask", "labels", "use_cache"})


def pack_padded_rows(model) -> None:
    """Wrap `model.forward` (TRL's fused-head forward) so that fused-head calls run packed."""
    fused = model.forward

    @functools.wraps(fused)
    def forward(*args, fused_lm_head=False, **kwargs):
        given = {name: value for name, value in kwargs.items() if value is not None}
        if fused_lm_head and not args and _packable(given):
            return _packed(fused, **given)
        return fused(*args, fused_lm_head=fused_lm_head, **kwargs)

    model.forward = forward


def _packable(kwargs) -> bool:
    """Whether the call is a text batch of right-padded rows, each with at least one token."""
    if not set(kwargs) <= _TEXT_INPUTS:
        return False
    ids, mask, labels = kwargs.get("input_ids"), kwargs.get("attention_mask"), kwargs.get("labels")
    if ids is None or mask is None or labels is None or ids.dim() != 2:
        return False
    if mask.shape != ids.shape or labels.shape != ids.shape:
        return False
    lengths = mask.sum(1)
    right_padded = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
    return bool(lengths.min() > 0) and torch.equal(mask.bool(), right_padded)


def _packed(fused, input_ids, attention_mask, labels, **rest):
    keep = attention_mask.bool()
    lengths = keep.sum(1)
    starts = lengths.cumsum(0) - lengths  # where each row begins in the packed row
    tokens = int(lengths.sum())
    positions = torch.arange(tokens, device=input_ids.device) - starts.repeat_interleave(lengths)
    packed_labels = labels[keep]  # a new tensor: the caller's labels stay as they are
    # The token before a row's first is the previous row's last: that prediction is not learnt.
    packed_labels[starts] = -100
    out = fused(
        input_ids=input_ids[keep][None],
        position_ids=positions[None],
        labels=packed_labels[None],
        fused_lm_head=True,
        **rest,
    )
    # Padded position p of row r predicts token p + 1 of that row: packed prediction starts[r] + p.
    width = input_ids.shape[1] - 1
    offsets = torch.arange(width, device=input_ids.device)
    predicted = offsets[None] < (lengths - 1)[:, None]
    index = (starts[:, None] + offsets[None]).clamp_(max=max(tokens - 2, 0)).flatten()

    def unpack(values):
        if values is None:
            return None
        padded = values[0].index_select(0, index).view(len(lengths), width)
        return padded.masked_fill(~predicted, 0)

    fields = {name: unpack(getattr(out, name, None)) for name in PER_TOKEN_FIELDS}
    return type(out)(
        loss=out.loss,
        label_mask=labels[:, 1:] != -100,
        aux_loss=getattr(out, "aux_loss", None),
        **fields,
    )
