"""Model-side evaluation: batched generation, log-likelihoods, perplexity, and drift from the base.

All of it runs under inference_mode, batched, with progress bars; generation uses the KV cache
(transformers' generate) with left padding so every row of a batch continues its own prompt.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from tqdm import tqdm

from specialize.models.generation import GenerationSettings, render_prompt_ids
from specialize.models.kv_cache import (
    allocated_cache,
    copy_prefix,
    fill_to,
    preallocated_cache,
    rows_of,
)


def generate_batch(
    model,
    tokenizer,
    prompts: Sequence[list[dict] | str],
    settings: GenerationSettings,
    *,
    batch_size: int = 16,
    progress: str | None = None,
) -> list[str]:
    """Return one reply per prompt, in order, greedy unless settings say otherwise.

    A prompt is a message list (rendered by the chat template) or raw text (completion style).
    Greedy replies come from `_greedy_chunk` (the prompts' shared prefix computed once, finished
    rows leaving the batch); sampling, and models whose generation config asks for more than
    argmax, go through transformers' generate.
    """
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(
        range(len(encoded)), key=lambda i: len(encoded[i])
    )  # similar lengths batch together
    replies: list[str] = [""] * len(encoded)
    greedy = _plain_greedy(model, settings)
    shared = _shared_prefix(encoded) if greedy else 0
    for chunk in _chunks(order, batch_size, progress):
        rows = [encoded[i] for i in chunk]
        with torch.inference_mode():
            if greedy:
                outputs = _greedy_chunk(model, rows, shared, settings.max_new_tokens, _stops(model))
            else:
                outputs = _generate_chunk(model, tokenizer, rows, settings)
        for index, tokens in zip(chunk, outputs, strict=True):
            replies[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return replies


def _generate_chunk(model, tokenizer, rows: list[list[int]], settings) -> list[list[int]]:
    """Generated ids per row through transformers' generate (left padding, KV cache)."""
    ids, mask = _pad(rows, tokenizer.pad_token_id, left=True)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    out = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        use_cache=True,
        **settings.to_generate_kwargs(tokenizer),
    )
    return out[:, ids.shape[1] :].tolist()


def _greedy_chunk(
    model, rows: list[list[int]], shared: int, max_new_tokens: int, stops: set[int]
) -> list[list[int]]:
    """Greedy ids per row: the same argmax as generate, with less work per token.

    The prompts go into the KV cache first (`_prefill`). A row that emits a stop token leaves
    the batch (its KV cache rows are dropped), so the remaining steps run on the unfinished rows
    only. The cache has room for the prompt and the reply from the start (kv_cache.py): no copy
    of it per generated token.
    """
    device = model.device
    cache, mask, position, logits = _prefill(model, rows, shared, max_new_tokens)
    outputs: list[list[int]] = [[] for _ in rows]
    live = torch.arange(len(rows))  # which input row each batch row is
    stop = torch.tensor(sorted(stops), dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        tokens = logits[:, -1].argmax(-1)
        for row, token in zip(live.tolist(), tokens.tolist(), strict=True):
            outputs[row].append(token)
        running = ~torch.isin(tokens, stop)
        if step + 1 == max_new_tokens or not running.any():
            break
        if not running.all():  # finished rows leave the batch and the cache
            keep = running.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            live, tokens, mask, position = (
                live[keep.cpu()],
                tokens[keep],
                mask[keep],
                position[keep],
            )
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        position = position + 1
        logits = model(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=mask,
            position_ids=position,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits
    return outputs


# Prompts run into the cache in groups of similar length of about this many (padded) tokens:
# enough rows for the products to run near full speed, few enough that a short prompt is not
# padded to the longest one of the whole batch.
PREFILL_GROUP_TOKENS = 1024


def _prefill(model, rows: list[list[int]], shared: int, max_new_tokens: int):
    """Run the prompts into a KV cache; return (cache, mask, last positions, last logits).

    The first `shared` tokens (identical in every row) run once and are copied into every row.
    The rest of each prompt is left-padded after that prefix ([prefix][pad][suffix]) to the
    batch's longest, with position ids counted over real tokens only, so every row sees exactly
    its own prompt. Rows (sorted by length by the caller) run in groups of similar length, each
    writing into its own rows of the cache: a group pays only for its own padding.
    """
    device = model.device
    longest = max(len(r) for r in rows)
    capacity = longest + max_new_tokens
    cache = allocated_cache(model, len(rows), capacity, longest)
    windows = cache is not None  # else one group, written into the cache directly
    if shared or not windows:
        # With windows the prefix is only copied out of this one-row cache: room for it suffices.
        prefix = preallocated_cache(model, shared if windows else capacity)
        if shared:
            model(
                input_ids=torch.tensor([rows[0][:shared]], device=device),
                position_ids=torch.arange(shared, device=device).unsqueeze(0),
                past_key_values=prefix,
                use_cache=True,
                logits_to_keep=1,
            )
        if windows:
            copy_prefix(cache, prefix)
        else:
            prefix.batch_repeat_interleave(len(rows))
            cache = prefix
    width = longest - shared
    mask = torch.zeros((len(rows), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    position = torch.zeros((len(rows), 1), dtype=torch.long)
    logits = []
    groups = _length_groups([len(r) - shared for r in rows]) if windows else [(0, len(rows))]
    for start, stop in groups:
        ids, own = _pad([r[shared:] for r in rows[start:stop]], 0, left=True)
        offset = shared + width - ids.shape[1]  # the group's padding up to the batch's longest
        mask[start:stop, offset:] = own
        positions = (shared + own.cumsum(-1) - 1).clamp(min=shared)
        logits.append(
            model(
                input_ids=ids.to(device),
                attention_mask=mask[start:stop].to(device),
                position_ids=positions.to(device),
                past_key_values=rows_of(cache, start, stop, offset) if windows else cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits
        )
        position[start:stop] = positions[:, -1:]
    if windows:
        fill_to(cache, shared + width)
    return cache, mask.to(device), position.to(device), torch.cat(logits)


def _length_groups(lengths: list[int]) -> list[tuple[int, int]]:
    """Consecutive (start, stop) groups of rows, each padded to at most PREFILL_GROUP_TOKENS.

    A group always takes at least one row; rows sorted by length make the padding small.
    """
    groups, start, widest = [], 0, 0
    for index, length in enumerate(lengths):
        wider = max(widest, length)
        if index > start and wider * (index - start + 1) > PREFILL_GROUP_TOKENS:
            groups.append((start, index))
            start, wider = index, length
        widest = wider
    groups.append((start, len(lengths)))
    return groups


def _shared_prefix(encoded: list[list[int]]) -> int:
    """Number of leading tokens every prompt shares, leaving each at least one token of its own."""
    if not encoded:
        return 0
    shortest = min(len(e) for e in encoded)
    first = encoded[0]
    length = 0
    while length < shortest - 1 and all(e[length] == first[length] for e in encoded):
        length += 1
    return length


# Generation-config fields that change the next token beyond argmax; any non-default one sends
# greedy generation through transformers' generate, which applies it.
_PROCESSOR_FIELDS = (
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "sequence_bias",
    "exponential_decay_length_penalty",
    "num_beams",
    "guidance_scale",
    "stop_strings",
)


def _plain_greedy(model, settings: GenerationSettings) -> bool:
    """True when the reply is argmax at every step of a decoder-only language model."""
    from transformers import GenerationConfig

    config = getattr(model, "generation_config", None)
    if settings.temperature > 0 or config is None or model.config.is_encoder_decoder:
        return False
    default = GenerationConfig()
    return all(getattr(config, f, None) == getattr(default, f, None) for f in _PROCESSOR_FIELDS)


def _stops(model) -> set[int]:
    """The token ids that end a reply (the generation config's eos, as generate uses them)."""
    eos = model.generation_config.eos_token_id
    return set() if eos is None else set([eos] if isinstance(eos, int) else eos)


def prompt_ids(tokenizer, prompt: list[dict] | str) -> list[int]:
    """Return the token ids of a chat prompt (with the generation header) or of raw text."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return render_prompt_ids(tokenizer, prompt)


def continuation_logprobs(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 16,
    progress: str | None = None,
) -> list[float]:
    """Return log p(continuation | context) summed over the continuation's tokens, per pair.

    Tokenised as lm-evaluation-harness does: context and context+continuation are encoded and the
    continuation is the difference, so a leading space belongs to the continuation.
    """
    items = []
    for context, continuation in pairs:
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
        start = min(start, len(whole) - 1)
        items.append((whole, max(start, 1)))
    # One-token continuations (MMLU's " A".." D", BoolQ's " no"/" yes") of a shared context need one
    # forward pass for the context, not one per choice; longer ones (ARC, HellaSwag) run the context
    # once too, in one row with all its choices (`_score_shared_contexts`).
    single = [i for i, (tokens, start) in enumerate(items) if start == len(tokens) - 1]
    rest = [i for i, (tokens, start) in enumerate(items) if start != len(tokens) - 1]
    scores = [0.0] * len(items)
    for index, score in zip(
        single,
        _score_next_tokens(
            model, [items[i] for i in single], tokenizer.pad_token_id, batch_size, progress
        ),
        strict=True,
    ):
        scores[index] = score
    for index, score in zip(
        rest,
        _score_shared_contexts(
            model, [items[i] for i in rest], tokenizer.pad_token_id, batch_size, progress
        ),
        strict=True,
    ):
        scores[index] = score
    return scores


def _score_shared_contexts(
    model, items: list[tuple[list[int], int]], pad: int, batch_size: int, progress: str | None
) -> list[float]:
    """Return summed log-probabilities of tokens[start:] per item, each distinct context run once.

    One row per distinct context: [left padding][context][choice 1][choice 2]..., each choice without
    its last token (nothing is predicted from it). A 4D mask lets every choice see the context and
    its own earlier tokens only, with positions continuing the context's, so each choice is scored
    exactly as if it ran alone after the context, and nothing is padded per choice (the old layout
    repeated the context's KV cache and right-padded every choice to the longest). The scored
    positions (the context's last and every choice token) are the row's tail, so the 49k-wide LM
    head runs on the tail only (`logits_to_keep`). The sums equal `_score`'s (the whole sequence
    at once) up to float rounding.
    """
    contexts: dict[tuple[int, ...], list[int]] = {}
    for index, (tokens, start) in enumerate(items):
        contexts.setdefault(tuple(tokens[:start]), []).append(index)
    rows = [
        _ChoiceTree(list(key), [items[i][0][items[i][1] :] for i in members], members)
        for key, members in contexts.items()
    ]
    rows.sort(key=lambda row: len(row.tokens))  # similar widths batch together: less padding
    scores = torch.zeros(len(items), dtype=torch.float64)
    for chunk in _chunks(_by_choices(rows, batch_size), 1, progress):
        batch = [rows[k] for group in chunk for k in group]
        scores.index_add_(0, *_score_trees(model, batch, pad))
    return scores.tolist()


@dataclass
class _ChoiceTree:
    """A context and its choices laid out in one row (see `_score_shared_contexts`)."""

    context: list[int]
    choices: list[list[int]]
    members: list[int]  # the item index of each choice

    @cached_property
    def tokens(self) -> list[int]:
        return self.context + [t for choice in self.choices for t in choice[:-1]]

    @property
    def tail(self) -> int:
        """Scored positions at the row's end: the context's last token and every fed choice token."""
        return 1 + sum(len(choice) - 1 for choice in self.choices)

    def layout(self) -> tuple[list[int], list[int]]:
        """(segment, position) per token: segment 0 is the context, k the k-th choice."""
        segment, position = [0] * len(self.context), list(range(len(self.context)))
        for k, choice in enumerate(self.choices, start=1):
            segment += [k] * (len(choice) - 1)
            position += range(len(self.context), len(self.context) + len(choice) - 1)
        return segment, position


def _score_trees(model, batch: list[_ChoiceTree], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(item index, log-probability) for every scored choice token of a batch of rows."""
    width = max(len(row.tokens) for row in batch)
    keep = max(row.tail for row in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    segment = torch.full((len(batch), width), -1, dtype=torch.long)  # -1: padding
    position = torch.zeros((len(batch), width), dtype=torch.long)
    members, rows, columns, targets = [], [], [], []
    for r, row in enumerate(batch):
        tokens, (seg, pos) = row.tokens, row.layout()
        first = width - len(tokens)
        ids[r, first:] = torch.tensor(tokens)
        segment[r, first:] = torch.tensor(seg)
        position[r, first:] = torch.tensor(pos)
        last = first + len(row.context) - 1  # the context's last token predicts each first token
        begin = last + 1  # where the current choice's fed tokens start
        for item, choice in zip(row.members, row.choices, strict=True):
            for n, target in enumerate(choice):
                members.append(item)
                rows.append(r)
                columns.append(begin + n - 1 if n else last)
                targets.append(target)
            begin += len(choice) - 1
    with torch.inference_mode():
        logits = model(
            input_ids=ids.to(model.device),
            attention_mask=_tree_mask(segment, position, model.dtype).to(model.device),
            position_ids=position.to(model.device),
            logits_to_keep=keep,
        ).logits.float()
        at = (torch.tensor(rows), torch.tensor(columns) - (width - keep))  # in the kept logits
        # log_softmax, not logit - logsumexp: torch's fp32 log_softmax rounds ~1e-5 nats low per
        # token (logsumexp is closer to float64), and lm-evaluation-harness sums log_softmax, so
        # this keeps `specialize parity` at its 1e-5-per-token agreement on long continuations.
        picked = torch.log_softmax(logits, dim=-1)[at + (torch.tensor(targets),)]
    return torch.tensor(members), picked.double().cpu()


def _tree_mask(segment: torch.Tensor, position: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [batch, 1, width, width] mask: a token sees the context's tokens and its own
    segment's up to its position; padding sees itself only (no softmax over nothing)."""
    q_segment, k_segment = segment[:, :, None], segment[:, None, :]
    seen = (position[:, None, :] <= position[:, :, None]) & (
        (k_segment == 0) | (k_segment == q_segment)
    )
    seen &= (q_segment >= 0) & (k_segment >= 0)
    seen |= torch.eye(segment.shape[1], dtype=torch.bool)
    mask = torch.zeros(seen.shape, dtype=dtype).masked_fill_(~seen, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def _by_choices(rows: list[_ChoiceTree], batch_size: int) -> list[list[int]]:
    """Group rows so a group holds at most `batch_size` choices (and at least one row)."""
    groups: list[list[int]] = []
    count = 0
    for k, row in enumerate(rows):
        if not groups or count + len(row.choices) > batch_size:
            groups.append([])
            count = 0
        groups[-1].append(k)
        count += len(row.choices)
    return groups


def _score_next_tokens(
    model, items: list[tuple[list[int], int]], pad: int, batch_size: int, progress: str | None
) -> list[float]:
    """Return log p(last token | the tokens before it), one forward pass per distinct context."""
    contexts: dict[tuple[int, ...], list[int]] = {}
    for index, (tokens, _) in enumerate(items):
        contexts.setdefault(tuple(tokens[:-1]), []).append(index)
    keys = list(contexts)
    scores = [0.0] * len(items)
    for chunk in _chunks(
        sorted(range(len(keys)), key=lambda k: len(keys[k])), batch_size, progress
    ):
        # Left-padded, so every row's last position is the last column: the LM head runs there only.
        ids, mask = _pad([list(keys[k]) for k in chunk], pad, left=True)
        with torch.inference_mode():
            logits = model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(model.device),
                logits_to_keep=1,
            ).logits.float()
        for row, k in enumerate(chunk):
            last = torch.log_softmax(logits[row, -1], dim=-1)
            for index in contexts[keys[k]]:
                scores[index] = last[items[index][0][-1]].item()
    return scores


def text_nll(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = 1024,
    batch_size: int = 8,
    progress: str | None = None,
) -> list[tuple[float, int]]:
    """Return (negative log-likelihood summed, predicted tokens) per text, for perplexity."""
    items = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        bos = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        items.append(([bos, *ids], 1))
    scores = _score(model, items, tokenizer.pad_token_id, batch_size, progress)
    return [(-s, len(tokens) - 1) for s, (tokens, _) in zip(scores, items, strict=True)]


def perplexity(nll_counts: Sequence[tuple[float, int]]) -> float:
    """Return corpus perplexity: exp(total NLL / total tokens)."""
    total = sum(n for n, _ in nll_counts)
    count = sum(c for _, c in nll_counts)
    return math.exp(total / count) if count else float("nan")


def drift_kl(
    model,
    tokenizer,
    prompts: Sequence[list[dict]],
    *,
    base_model=None,
    batch_size: int = 8,
    progress: str | None = None,
) -> list[float]:
    """Return, per prompt, the mean KL(base || model) of next-token distributions over its tokens.

    The base is `base_model` when given (after full fine-tuning), else `model` with its adapter
    disabled, so a LoRA run needs no second copy of the weights.
    """
    if base_model is None and not hasattr(model, "disable_adapter"):
        raise ValueError("drift needs a base model, or a PEFT model whose adapter can be disabled")
    encoded = [render_prompt_ids(tokenizer, p) for p in prompts]
    result = []
    for chunk in _chunks(list(range(len(encoded))), batch_size, progress):
        ids, mask = _pad([encoded[i] for i in chunk], tokenizer.pad_token_id)
        tuned = _log_softmax(model, ids, mask)
        if base_model is not None:
            base = _log_softmax(base_model, ids, mask)
        else:
            with model.disable_adapter():
                base = _log_softmax(model, ids, mask)
        kl = (base.exp() * (base - tuned)).sum(-1)  # [batch, positions]
        weights = mask.to(kl.device).float()
        result.extend(((kl * weights).sum(1) / weights.sum(1)).tolist())
    return result


def _log_softmax(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
    return torch.log_softmax(logits.float(), dim=-1)


def _score(
    model, items: list[tuple[list[int], int]], pad: int, batch_size: int, progress: str | None
) -> list[float]:
    """Return summed log-probabilities of tokens[start:] given the tokens before, per item."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    scores = [0.0] * len(items)
    for chunk in _chunks(order, batch_size, progress):
        ids, mask = _pad([items[i][0] for i in chunk], pad, left=False)
        with torch.inference_mode():
            logits = model(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
            ).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = ids[:, 1:].to(logprobs.device)
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        for row, index in enumerate(chunk):
            tokens, start = items[index]
            scores[index] = picked[row, start - 1 : len(tokens) - 1].sum().item()
    return scores


def _pad(rows: list[list[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(longest - len(row), longest) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


def _chunks(order: list[int], size: int, progress: str | None) -> Iterator[list[int]]:
    """`order` in chunks of at most `size`, evened out (100 at 64 -> 50 + 50, not 64 + 36)."""
    bar = tqdm(total=len(order), desc=progress, unit="item", disable=progress is None, leave=False)
    count = -(-len(order) // size) if order else 0
    with contextlib.closing(bar):
        for n in range(count):
            chunk = order[n * len(order) // count : (n + 1) * len(order) // count]
            yield chunk
            bar.update(len(chunk))
