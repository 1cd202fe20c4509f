"""Chat templates: render conversations to tokens and mark which tokens are trained on.

The loss mask is computed by rendering growing prefixes of the conversation: the tokens an
assistant message adds after the generation prompt are its own. That works for any template
that renders a prefix of the conversation as a prefix of the tokens (ChatML and its kin), and
the check below refuses a template that does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from specialize.errors import DataError

# The fallback for templates that know nothing of tools (documented in the README, "Tool calling"):
# the schemas go into the system prompt, calls into the assistant's text, results stay role "tool".
TOOL_SYSTEM_PROMPT = (
    "You can call the functions below. To call one, answer with\n"
    '<tool_call>\n{"name": <function name>, "arguments": <JSON object>}\n</tool_call>\n'
    "Functions:\n<tools>\n{tools}\n</tools>"
)


# Named chat templates for `chat_template:` in data and recipe configs (or give a .jinja file).
NAMED_TEMPLATES = {
    # ChatML with no default system prompt (SmolLM2's adds one when a conversation has none).
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    # ChatML that renders tools itself (Hermes style, as Qwen2.5): schemas in the system prompt,
    # calls as <tool_call> JSON, results as <tool_response> in a tool turn.
    "chatml-tools": (
        "{% if tools %}<|im_start|>system\n"
        "{% if messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{% endif %}"
        "You can call these tools:\n<tools>"
        "{% for tool in tools %}{{ '\\n' }}{{ (tool.function if tool.function is defined else tool) | tojson }}"
        "{% endfor %}{{ '\\n' }}</tools><|im_end|>\n"
        "{% elif messages[0].role == 'system' %}"
        "<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
        "{% for message in messages %}{% if not (message.role == 'system' and loop.first) %}"
        "<|im_start|>{{ message.role }}\n"
        "{% if message.role == 'tool' %}<tool_response>\n{{ message.content }}\n</tool_response>"
        "{% else %}{{ message.content }}{% endif %}"
        "{% for call in message.tool_calls or [] %}"
        "{% if message.content or not loop.first %}{{ '\\n' }}{% endif %}"
        "<tool_call>\n{{ {'name': call.function.name, 'arguments': call.function.arguments} | tojson }}"
        "\n</tool_call>{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}
_PROBE = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "First question?"},
    {"role": "assistant", "content": "First answer."},
    {"role": "user", "content": "Second question?"},
    {"role": "assistant", "content": "Second answer."},
]


def resolve_chat_template(value: str, base_dir: Path | None = None) -> str:
    """Return the template text for a named template or a .jinja file (relative to base_dir)."""
    if value in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[value]
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise DataError(
            f"chat_template {value!r} is neither a named template nor a file",
            where=str(path),
            fix=f"use one of {', '.join(NAMED_TEMPLATES)} or the path of a .jinja file",
        )
    return path.read_text(encoding="utf-8")


def use_chat_template(tokenizer, template: str | None, origin: str = "chat_template"):
    """Set `template` on the tokenizer after checking it renders a conversation prefix-stably
    (so assistant tokens can be masked); return the tokenizer. None leaves it as it is."""
    if template is None:
        return tokenizer
    previous = tokenizer.chat_template
    tokenizer.chat_template = template
    try:
        masked = mask_assistant_tokens(tokenizer, _PROBE)
    except DataError as exc:
        tokenizer.chat_template = previous
        raise DataError(f"{origin}: {exc.what}", fix=exc.fix) from None
    except Exception as exc:  # jinja raises its own errors on a broken template
        tokenizer.chat_template = previous
        raise DataError(
            f"{origin}: the template does not render ({type(exc).__name__}: {exc})",
            fix="fix the Jinja template",
        ) from None
    if not masked.trained:
        tokenizer.chat_template = previous
        raise DataError(
            f"{origin}: the template renders no assistant text", fix="check the template"
        )
    return tokenizer


@dataclass
class MaskedTokens:
    """Token ids of a rendered example and, per token, 1 where the loss is computed."""

    input_ids: list[int]
    mask: list[int]

    @property
    def trained(self) -> int:
        return sum(self.mask)


def render_ids(
    tokenizer,
    messages: list[dict],
    *,
    add_generation_prompt: bool = False,
    tools: list[dict] | None = None,
) -> list[int]:
    """Return the token ids of `messages` rendered by the tokenizer's chat template.

    Tool schemas and calls go to the template when it renders tools, otherwise through the
    text fallback (`tool_text_messages`).
    """
    uses_tools = bool(tools) or any(m.get("tool_calls") for m in messages)
    kwargs: dict = {}
    if uses_tools and supports_tools(tokenizer):
        plain = [_native_message(m) for m in messages]
        kwargs["tools"] = tools or None
    elif uses_tools:
        plain = tool_text_messages(messages, tools, with_system=True)
    else:
        plain = [{"role": m["role"], "content": flatten_content(m["content"])} for m in messages]
    rendered = tokenizer.apply_chat_template(
        plain, tokenize=True, add_generation_prompt=add_generation_prompt, **kwargs
    )
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def supports_tools(tokenizer) -> bool:
    """True when the chat template itself renders tool schemas and tool calls."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "tools" in template and "tool_calls" in template


def tool_text_messages(
    messages: list[dict], tools: list[dict] | None, *, with_system: bool
) -> list[dict]:
    """Return plain {role, content} messages with tools written as text (the documented fallback).

    The schemas join the system prompt (one JSON line per function), each tool call becomes
    `<tool_call>{"name", "arguments"}</tool_call>` in the assistant's text, and a tool result
    keeps role "tool" (ChatML renders any role) inside `<tool_response>` tags. Weights are kept.
    """
    out = []
    for message in messages:
        content = flatten_content(message["content"] or "")
        for call in message.get("tool_calls") or []:
            function = call["function"]
            payload = json.dumps(
                {"name": function["name"], "arguments": function.get("arguments", {})},
                ensure_ascii=False,
            )
            content = f"{content}\n" if content else ""
            content += f"<tool_call>\n{payload}\n</tool_call>"
        if message["role"] == "tool":
            content = f"<tool_response>\n{content}\n</tool_response>"
        plain = {"role": message["role"], "content": content}
        if "weight" in message:
            plain["weight"] = message["weight"]
        out.append(plain)
    if with_system and tools:
        listing = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
        prompt = TOOL_SYSTEM_PROMPT.replace("{tools}", listing)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _native_message(message: dict) -> dict:
    plain = {"role": message["role"], "content": flatten_content(message["content"] or "")}
    for key in ("tool_calls", "tool_call_id", "name"):
        if message.get(key):
            plain[key] = message[key]
    return plain


def mask_assistant_tokens(
    tokenizer, messages: list[dict], tools: list[dict] | None = None
) -> MaskedTokens:
    """Return the rendered conversation with a mask over assistant turns whose weight is not 0.

    Tool results (role "tool") and the tool schemas are never trained on; the assistant's tool
    calls are, as part of its turn.
    """
    full = render_ids(tokenizer, messages, tools=tools)
    mask = [0] * len(full)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(
            render_ids(tokenizer, messages[:index], add_generation_prompt=True, tools=tools)
        )
        upto = render_ids(tokenizer, messages[: index + 1], tools=tools)
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
        return len(render_ids(tokenizer, row["messages"], tools=row.get("tools")))
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
        return mask_assistant_tokens(tokenizer, row["messages"], row.get("tools"))
    if "chosen" in row:
        prompt, chosen = row["prompt"], row["chosen"]
        if isinstance(prompt, list):
            return mask_assistant_tokens(tokenizer, prompt + chosen)
        return mask_completion_tokens(tokenizer, prompt, chosen)
    if "completion" in row:
        return mask_completion_tokens(tokenizer, row["prompt"], row["completion"])
    ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return MaskedTokens(ids, [1] * len(ids))
