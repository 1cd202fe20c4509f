"""Padding-free forwards for trainers that batch right-padded rows: preference pairs (DPO, reward).

TRL's DPOTrainer and RewardTrainer pad each [chosen; rejected] batch to its longest row (DPO's own
padding-free mode is switched off in TRL 1.16; the reward trainer has none), and with answers of
varied length much of what a step computes is padding: in the benchmark's pairs about a third of
the tokens, each through every layer, twice a step for DPO (the policy and the reference pass),
and sdpa masks [rows, L, L] scores to ignore them.

Here the fused-head forward that TRL calls (`model(..., labels=..., fused_lm_head=True)`, added by
`trl.trainer.utils.add_fused_lm_head`) packs the batch's real tokens into one row whose positions
restart at every row, so each row attends to itself only (`packed_attention`), and hands back the
per-token outputs in the padded layout the trainer reads: the same log-probabilities, to float
rounding, without the padding's work. A reward model's forward (sequence classification) likewise
runs its backbone over the packed row and scores each row's last token, the token transformers
pools. A batch it cannot pack this way (not right-padded, other inputs such as images) runs the
original forward unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# Per-token fields of TRL's FusedCausalLMOutput, all [rows, length - 1] (zero where unlabelled).
PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")

# Inputs a text-only call may carry; anything else (pixel values, token types) is left to the
# original forward.
_TEXT_INPUTS = frozenset({"input_ids", "attention_mask", "labels", "use_cache"})


def packing_trainer(trainer_class, model, padding_free: bool, pack):
    """`trainer_class`, or with padding_free (and a model attending with sdpa) a subclass that,
    once the trainer has set its model up (TRL adds its fused head then), packs its batches with
    `pack` (pack_padded_rows, pack_padded_scores)."""
    from specialize.train.packed_attention import use_training_attention

    switched = use_training_attention(model)  # padded batches gain from it too (grouped kv heads)
    if not (padding_free and switched):
        return trainer_class

    class PackingTrainer(trainer_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            model = self.model
            pack(model.get_base_model() if hasattr(model, "get_base_model") else model)

    PackingTrainer.__name__ = PackingTrainer.__qualname__ = f"Packed{trainer_class.__name__}"
    return PackingTrainer


def pack_padded_rows(model) -> None:
    """Wrap `model.forward` (TRL's fused-head forward) so that fused-head calls run packed."""
    fused = model.forward

    @functools.wraps(fused)
    def forward(*args, fused_lm_head=False, **kwargs):
        given = _given(kwargs)
        if fused_lm_head and not args and _packable(given):
            return _packed(fused, **given)
        return fused(*args, fused_lm_head=fused_lm_head, **kwargs)

    model.forward = forward


def pack_padded_scores(model) -> None:
    """Wrap a sequence-classification model's forward (a reward model) so that text batches run packed."""
    plain = model.forward

    @functools.wraps(plain)
    def forward(*args, **kwargs):
        given = _given(kwargs)
        if not args and "labels" not in given and _packable(given, labelled=False):
            pooled = _pooled_tokens(model, given["input_ids"], given["attention_mask"])
            if pooled is not None:
                return _packed_scores(model, pooled, **given)
        return plain(*args, **kwargs)

    model.forward = forward


def _pooled_tokens(model, input_ids, attention_mask):
    """The token each row's score is read from, as transformers pools it (the rightmost that is
    not the pad token), or None where that is not a real token of the row."""
    pad = model.config.get_text_config().pad_token_id
    if pad is None:
        return None
    not_pad = (input_ids != pad).int()
    pooled = (torch.arange(input_ids.shape[1], device=input_ids.device) * not_pad).argmax(-1)
    return pooled if bool((pooled < attention_mask.sum(1)).all()) else None


def _given(kwargs) -> dict:
    """The call's arguments that carry something: PEFT passes its others as None, and an output
    object is what the packed forward returns anyway (`return_dict=False` is left unpacked)."""
    return {
        name: value
        for name, value in kwargs.items()
        if value is not None and not (name == "return_dict" and value is True)
    }


def _packable(kwargs, labelled: bool = True) -> bool:
    """Whether the call is a text batch of right-padded rows, each with at least one token."""
    if not set(kwargs) <= _TEXT_INPUTS:
        return False
    ids, mask, labels = kwargs.get("input_ids"), kwargs.get("attention_mask"), kwargs.get("labels")
    if ids is None or mask is None or ids.dim() != 2 or mask.shape != ids.shape:
        return False
    if labelled and (labels is None or labels.shape != ids.shape):
        return False
    lengths = mask.sum(1)
    right_padded = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
    return bool(lengths.min() > 0) and torch.equal(mask.bool(), right_padded)


@dataclass(frozen=True)
class Packing:
    """Where the rows of a right-padded batch sit in the packed row."""

    keep: torch.Tensor  # [rows, length] the real tokens
    lengths: torch.Tensor  # [rows]
    starts: torch.Tensor  # [rows] each row's first token in the packed row
    positions: torch.Tensor  # [1, tokens] restarting at every row

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> Packing:
        keep = attention_mask.bool()
        lengths = keep.sum(1)
        starts = lengths.cumsum(0) - lengths
        tokens = int(lengths.sum())
        positions = torch.arange(tokens, device=keep.device) - starts.repeat_interleave(lengths)
        return cls(keep, lengths, starts, positions[None])

    def row(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The batch's real tokens as one [1, tokens] row."""
        return input_ids[self.keep][None]


def _packed(fused, input_ids, attention_mask, labels, **rest):
    """The fused head's padded outputs, from the forward run over the packed rows."""
    packing = Packing.of(attention_mask)
    lengths, starts, tokens = packing.lengths, packing.starts, packing.positions.shape[1]
    packed_labels = labels[packing.keep]  # a new tensor: the caller's labels stay as they are
    # The token before a row's first is the previous row's last: that prediction is not learnt.
    packed_labels[starts] = -100
    out = fused(
        input_ids=packing.row(input_ids),
        position_ids=packing.positions,
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


def _packed_scores(model, pooled, input_ids, attention_mask, **rest):
    """The padded forward's pooled scores, from the backbone run over the packed rows."""
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    packing = Packing.of(attention_mask)
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(
        input_ids=packing.row(input_ids), position_ids=packing.positions, **rest
    ).last_hidden_state[0]
    return SequenceClassifierOutputWithPast(logits=model.score(hidden[packing.starts + pooled]))
