"""Chat templates: render conversations to tokens and mark which tokens are trained on.

The loss mask is computed by rendering growing prefixes of the conversation: the tokens an
assistant message adds after the generation prompt are its own. That works for any template
that renders a prefix of the conversation as a prefix of the tokens (ChatML and its kin), and
the check below refuses a template that does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from specialize.errors import DataError


@dataclass
class MaskedTokens:
    """Token ids of a rendered example and, per token, 1 where the loss is computed."""

    input_ids: list[int]
    mask: list[int]

    @property
    def trained(self) -> int:
        return sum(self.mask)


def render_ids(
    tokenizer, messages: list[dict], *, add_generation_prompt: bool = False
) -> list[int]:
    """Return the token ids of `messages` rendered by the tokenizer's chat template."""
    plain = [{"role": m["role"], "content": flatten_content(m["content"])} for m in messages]
    rendered = tokenizer.apply_chat_template(
        plain, tokenize=True, add_generation_prompt=add_generation_prompt
    )
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def mask_assistant_tokens(tokenizer, messages: list[dict]) -> MaskedTokens:
    """Return the rendered conversation with a mask over assistant turns whose weight is not 0."""
    full = render_ids(tokenizer, messages)
    mask = [0] * len(full)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render_ids(tokenizer, messages[:index], add_generation_prompt=True))
        upto = render_ids(tokenizer, messages[: index + 1])
        if full[: len(upto)] != upto or start > len(upto):
            raise DataError(
                "the chat template does not render a conversation's prefix as a prefix of its tokens, "
                "so assistant tokens cannot be located",
                fix="use a model whose template is ChatML-like, or train with method: cpt",
            )
        if message.get("weight", 1):
            mask[start : len(upto)] = [1] * (len(upto) - start)
    return MaskedTokens(full, mask)


def mask_completion_tokens(tokenizer, prompt: str, completion: str) -> MaskedTokens:
    """Return prompt+completion tokens with the completion (and EOS) marked as trained."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    return MaskedTokens(
        prompt_ids + completion_ids, [0] * len(prompt_ids) + [1] * len(completion_ids)
    )


def count_tokens(tokenizer, row: dict) -> int:
    """Return how many tokens a TRL row takes when rendered for training."""
    if "messages" in row:
        return len(render_ids(tokenizer, row["messages"]))
    if "chosen" in row:
        return _longest_pair(tokenizer, row)
    if "completion" in row:
        return (
            len(tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"])
            + 1
        )
    return len(tokenizer(row["text"], add_special_tokens=False)["input_ids"]) + 1


def flatten_content(content: str | list) -> str:
    """Return message content as text; attachments become placeholders for text-only templates."""
    if isinstance(content, str):
        return content
    return "".join(p["text"] if p["type"] == "text" else f"<{p['type']}>" for p in content)


def _longest_pair(tokenizer, row: dict) -> int:
    prompt, lengths = row["prompt"], []
    for key in ("chosen", "rejected"):
        if isinstance(prompt, list):
            lengths.append(len(render_ids(tokenizer, prompt + row[key])))
        else:
            lengths.append(
                len(tokenizer(prompt + row[key], add_special_tokens=False)["input_ids"]) + 1
            )
    return max(lengths)


def mask_row(tokenizer, row: dict) -> MaskedTokens:
    """Return a TRL row's training tokens and loss mask, whatever its kind.

    chat: assistant turns (weight 0 excluded); prompt_completion: the completion; text: every
    token; preference: the chosen conversation's answer (what SFT on preferences would learn).
    """
    if "messages" in row:
        return mask_assistant_tokens(tokenizer, row["messages"])
    if "chosen" in row:
        prompt, chosen = row["prompt"], row["chosen"]
        if isinstance(prompt, list):
            return mask_assistant_tokens(tokenizer, prompt + chosen)
        return mask_completion_tokens(tokenizer, prompt, chosen)
    if "completion" in row:
        return mask_completion_tokens(tokenizer, row["prompt"], row["completion"])
    ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return MaskedTokens(ids, [1] * len(ids))
