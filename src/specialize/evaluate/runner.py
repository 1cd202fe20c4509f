"""Model-side evaluation: batched generation, log-likelihoods, perplexity, and drift from the base.

All of it runs under inference_mode, batched, with progress bars; generation uses the KV cache
(transformers' generate) with left padding so every row of a batch continues its own prompt.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from tqdm import tqdm

from specialize.models.generation import GenerationSettings, render_prompt_ids


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
    """
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(
        range(len(encoded)), key=lambda i: len(encoded[i])
    )  # similar lengths batch together
    replies: list[str] = [""] * len(encoded)
    pad = tokenizer.pad_token_id
    for chunk in _chunks(order, batch_size, progress):
        longest = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), longest), dtype=torch.long)
        for row, index in enumerate(chunk):
            tokens = encoded[index]
            ids[row, longest - len(tokens) :] = torch.tensor(tokens)
            mask[row, longest - len(tokens) :] = 1
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                use_cache=True,
                **settings.to_generate_kwargs(tokenizer),
            )
        for row, index in enumerate(chunk):
            replies[index] = tokenizer.decode(out[row, longest:], skip_special_tokens=True).strip()
    return replies


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
    # once too, then every continuation against its cached keys and values.
    single = [i for i, (tokens, start) in enumerate(items) if start == len(tokens) - 1]
    rest = [i for i in range(len(items)) if i not in set(single)]
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

    A batch of contexts runs left-padded (positions counted from each one's first real token) with
    logits for its last position only; its KV cache is then repeated for each continuation, and the
    continuations run right-padded against it, their positions continuing their context's. The sums
    equal `_score`'s (the whole sequence at once) up to float rounding.
    """
    contexts: dict[tuple[int, ...], list[int]] = {}
    for index, (tokens, start) in enumerate(items):
        contexts.setdefault(tuple(tokens[:start]), []).append(index)
    keys = sorted(contexts, key=len)
    scores = [0.0] * len(items)
    for chunk in _chunks(_by_continuations(keys, contexts, batch_size), 1, progress):
        rows = [k for group in chunk for k in group]
        members = [(row, i) for row, k in enumerate(rows) for i in contexts[keys[k]]]
        ids, mask = _pad([list(keys[k]) for k in rows], pad, left=True)
        with torch.inference_mode():
            out = model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(model.device),
                use_cache=True,
                logits_to_keep=1,
            )
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            continuations = [items[i][0][items[i][1] :] for _, i in members]
            for (row, index), tokens in zip(members, continuations, strict=True):
                scores[index] = first[row, tokens[0]].item()
            if max(len(t) for t in continuations) == 1:
                continue
            parents = torch.tensor([row for row, _ in members])
            cache = out.past_key_values
            cache.batch_select_indices(parents.to(model.device))
            fed, fed_mask = _pad([t[:-1] or [pad] for t in continuations], pad, left=False)
            fed_mask[[len(t) == 1 for t in continuations], 0] = 0
            lengths = mask.sum(-1)[parents]
            logits = model(
                input_ids=fed.to(model.device),
                attention_mask=torch.cat([mask[parents], fed_mask], dim=1).to(model.device),
                position_ids=(lengths[:, None] + torch.arange(fed.shape[1])).to(model.device),
                past_key_values=cache,
                use_cache=True,
            ).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
        for n, ((_, index), tokens) in enumerate(zip(members, continuations, strict=True)):
            if len(tokens) > 1:
                targets = torch.tensor(tokens[1:], device=logprobs.device)
                picked = logprobs[n, : len(tokens) - 1].gather(-1, targets[:, None])
                scores[index] += picked.sum().item()
    return scores


def _by_continuations(
    keys: list[tuple[int, ...]], contexts: dict[tuple[int, ...], list[int]], batch_size: int
) -> list[list[int]]:
    """Group context indices so a group holds at most `batch_size` continuations (at least one context)."""
    groups: list[list[int]] = []
    count = 0
    for k in range(len(keys)):
        n = len(contexts[keys[k]])
        if not groups or (groups[-1] and count + n > batch_size):
            groups.append([])
            count = 0
        groups[-1].append(k)
        count += n
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
    bar = tqdm(total=len(order), desc=progress, unit="item", disable=progress is None, leave=False)
    with contextlib.closing(bar):
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            yield chunk
            bar.update(len(chunk))
