"""Row layouts other tools write, normalised into the record kinds of `records.py`.

Runs before kind detection, so every layout below becomes a plain chat, instruction or
preference row and is validated by the one checker:

  sharegpt                  {"conversations": [{"from", "value"}], "system"?, "tools"?} -> chat.
                            Tags human/user, gpt/assistant/chatgpt/bing, system, tool/observation
                            (a tool result) and function_call (an assistant tool call whose value is
                            {"name", "arguments"} JSON); other tags through the source's `roles`.
  columns                   the source's `columns` map your field names onto ours first.
  alpaca_history            {"instruction", "input"?, "output", "history": [[q, a], ...]} -> chat
                            with the earlier turns first (their answers trained unless
                            `train_history: false`, then they are context only).
  conversational_prompt_completion
                            TRL {"prompt": [messages], "completion": [messages]} -> chat whose
                            prompt turns are context (weight 0): loss on the completion only.
  implicit_prompt_preference
                            TRL {"chosen": [messages], "rejected": [messages]} sharing a prefix
                            -> preference with that prefix as the prompt.
  openai_dpo                {"input": {"messages", "tools"?}, "preferred_output": [message],
                            "non_preferred_output": [message]} -> preference.
  tool calling              OpenAI "tools" on the row, "tool_calls" on assistant messages and role
                            "tool" stay in chat rows (see `templates.py` for how they are rendered).

A value of None (how Arrow and Parquet spell a missing struct field) counts as absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from specialize.data.records import Defect

CANONICAL_ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
    "observation": "tool",
    "function_call": "function_call",
}
# Canonical field -> the key it has in our rows (answer depends on the row: see _rename).
_COLUMN_KEYS = {
    "messages": "messages",
    "system": "system",
    "tools": "tools",
    "prompt": "prompt",
    "chosen": "chosen",
    "rejected": "rejected",
    "images": "images",
    "audio": "audios",
}


@dataclass
class LayoutOptions:
    """How one source's rows are read: column names, extra role tags, history training."""

    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> user's field
    roles: dict[str, str] = field(default_factory=dict)  # user's tag -> role
    train_history: bool = True

    @classmethod
    def from_source(cls, source) -> LayoutOptions:
        columns = {k: v for k, v in source.columns.model_dump().items() if v is not None}
        return cls(columns, dict(source.roles), source.train_history)


@dataclass
class Normalised:
    value: Any
    layout: str | None = None  # None: already one of our kinds
    defects: list[Defect] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.defects)


def normalise(value: Any, where: str, options: LayoutOptions | None = None) -> Normalised:
    """Return `value` rewritten into one of our record kinds, naming the layout it came in."""
    options = options or LayoutOptions()
    if not isinstance(value, dict):
        return Normalised(value)
    out = Normalised({k: v for k, v in value.items() if v is not None})
    _rename(out, where, options)
    if out.failed:
        return out
    row = out.value
    if isinstance(row.get("input"), dict) and "preferred_output" in row:
        _openai_dpo(out, where)
    elif "conversations" in row and "messages" not in row:
        row["messages"] = row.pop("conversations")
        out.layout = "sharegpt"
    elif isinstance(row.get("prompt"), list) and isinstance(row.get("completion"), list):
        _conversational_prompt_completion(out)
    elif "prompt" not in row and isinstance(row.get("chosen"), list) and "rejected" in row:
        _implicit_prompt(out, where)
    elif "instruction" in row and "history" in row:
        _alpaca_history(out, where, options)
    if not out.failed and isinstance(out.value.get("messages"), list):
        _chat_messages(out, where, options)
    return out


# --- layouts ------------------------------------------------------------------------------


def _rename(out: Normalised, where: str, options: LayoutOptions) -> None:
    row = out.value
    for name, column in options.columns.items():
        if name in ("role", "content"):
            continue  # message keys, applied per message
        key = _COLUMN_KEYS.get(name)
        if name == "answer":
            key = "output" if "instruction" in row else "completion"
        if column not in row:
            _error(
                out,
                where,
                "missing_field",
                column,
                f"column {column!r} (columns.{name}) is missing; fields are {sorted(row)}",
            )
            continue
        if column != key:
            row[key] = row.pop(column)
    if options.columns:
        out.layout = "columns"


def _openai_dpo(out: Normalised, where: str) -> None:
    row = out.value
    given = row.pop("input")
    messages = given.get("messages")
    if not isinstance(messages, list):
        _error(out, where, "missing_field", "input.messages", "expected a list of messages")
        return
    row["prompt"] = messages
    row["chosen"] = row.pop("preferred_output")
    if "non_preferred_output" not in row:
        _error(out, where, "missing_field", "non_preferred_output", "required field is missing")
        return
    row["rejected"] = row.pop("non_preferred_output")
    if given.get("tools") is not None:
        row["tools"] = given["tools"]
    out.layout = "openai_dpo"
    _preference_tools(out, where)


def _conversational_prompt_completion(out: Normalised) -> None:
    row = out.value
    prompt = [_as_context(m) for m in row.pop("prompt")]
    row["messages"] = prompt + row.pop("completion")
    out.layout = "conversational_prompt_completion"


def _implicit_prompt(out: Normalised, where: str) -> None:
    row = out.value
    chosen, rejected = row["chosen"], row["rejected"]
    if not isinstance(rejected, list):
        _error(out, where, "wrong_type", "rejected", "expected a list of messages like chosen")
        return
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        _error(
            out,
            where,
            "no_shared_prompt",
            "chosen",
            "chosen and rejected share no first message, so there is no prompt; "
            "add a prompt field or start both with the same user message",
        )
        return
    row["prompt"], row["chosen"], row["rejected"] = (
        chosen[:shared],
        chosen[shared:],
        rejected[shared:],
    )
    out.layout = "implicit_prompt_preference"
    _preference_tools(out, where)


def _alpaca_history(out: Normalised, where: str, options: LayoutOptions) -> None:
    row = out.value
    history = row.pop("history")
    instruction, output, extra = row.get("instruction"), row.get("output"), row.get("input") or ""
    if not (isinstance(instruction, str) and isinstance(output, str) and isinstance(extra, str)):
        return  # the instruction checker names the broken field
    if not isinstance(history, list):
        _error(out, where, "wrong_type", "history", "expected a list of [prompt, answer] pairs")
        return
    messages: list[dict] = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append({"role": "system", "content": row["system"]})
    for index, pair in enumerate(history):
        if not (
            isinstance(pair, list | tuple)
            and len(pair) == 2
            and all(isinstance(t, str) for t in pair)
        ):
            _error(
                out,
                where,
                "wrong_type",
                f"history[{index}]",
                "expected [prompt, answer], two strings",
            )
            return
        answer = {"role": "assistant", "content": pair[1]}
        if not options.train_history:
            answer["weight"] = 0
        messages += [{"role": "user", "content": pair[0]}, answer]
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    for key in ("instruction", "input", "output", "system"):
        row.pop(key, None)
    row["messages"] = messages
    out.layout = "alpaca_history"


def _preference_tools(out: Normalised, where: str) -> None:
    """Preference trainers tokenise rows themselves: tools are folded into text here."""
    from specialize.data.templates import tool_text_messages

    row = out.value
    tools = _tools(out, where, row.pop("tools", None))
    if out.failed:
        return
    uses_calls = any(
        isinstance(m, dict) and (m.get("tool_calls") or m.get("role") == "tool")
        for key in ("prompt", "chosen", "rejected")
        if isinstance(row.get(key), list)
        for m in row[key]
    )
    if not tools and not uses_calls:
        return
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(row.get(key), list):
            return
        for index, message in enumerate(row[key]):
            if isinstance(message, dict) and message.get("tool_calls") is not None:
                _tool_calls(out, where, f"{key}[{index}].tool_calls", message)
    if out.failed:
        return
    row["prompt"] = tool_text_messages(row["prompt"], tools, with_system=True)
    for key in ("chosen", "rejected"):
        row[key] = tool_text_messages(row[key], None, with_system=False)


# --- messages -----------------------------------------------------------------------------


def _chat_messages(out: Normalised, where: str, options: LayoutOptions) -> None:
    row = out.value
    field_name = "conversations" if out.layout == "sharegpt" else "messages"
    converted = []
    sharegpt = out.layout == "sharegpt"
    for index, message in enumerate(row["messages"]):
        if not isinstance(message, dict):
            converted.append(message)  # the checker reports the wrong type
            continue
        message = {k: v for k, v in message.items() if v is not None}
        role_key = options.columns.get("role") or ("role" if "role" in message else "from")
        content_key = options.columns.get("content") or (
            "content" if "content" in message or "tool_calls" in message else "value"
        )
        sharegpt = sharegpt or role_key == "from"
        path = f"{field_name}[{index}]"
        tag = message.pop(role_key, None)
        if content_key in message:
            message["content"] = message.pop(content_key)
        if tag is None:
            converted.append(message)
            continue
        role = _role(out, where, f"{path}.{role_key}", tag, options)
        if role is None:
            return
        if role == "function_call":
            message = _function_call(out, where, f"{path}.{content_key}", message)
            if message is None:
                return
            role = "assistant"
        if message.get("tool_calls") is not None:
            _tool_calls(out, where, f"{path}.tool_calls", message)
            if out.failed:
                return
        converted.append({"role": role, **message})
    if sharegpt and out.layout is None:
        out.layout = "sharegpt"
    system = row.pop("system", None) if out.layout in ("sharegpt", "columns") else None
    if (
        isinstance(system, str)
        and system.strip()
        and converted[:1]
        and converted[0].get("role") != "system"
    ):
        converted.insert(0, {"role": "system", "content": system})
    row["messages"] = converted
    tools = _tools(out, where, row.pop("tools", None))
    if tools:
        row["tools"] = tools


def _role(out: Normalised, where: str, path: str, tag: Any, options: LayoutOptions) -> str | None:
    if isinstance(tag, str):
        if tag in options.roles:
            return options.roles[tag]
        if tag in CANONICAL_ROLES:
            return tag
        if tag in SHAREGPT_ROLES:
            return SHAREGPT_ROLES[tag]
    tags = ", ".join(sorted(set(SHAREGPT_ROLES) - set(CANONICAL_ROLES) | set(options.roles)))
    _error(
        out,
        where,
        "unknown_role",
        path,
        f"role {tag!r}; expected one of {', '.join(CANONICAL_ROLES)} or a ShareGPT tag ({tags}); "
        f"or map it in the source's roles (roles: {{{tag}: assistant}}) or with --role",
    )
    return None


def _function_call(out: Normalised, where: str, path: str, message: dict) -> dict | None:
    """A ShareGPT function_call turn: its value is {"name", "arguments"} JSON (or a list of them)."""
    value = message.pop("content", None)
    try:
        calls = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as exc:
        _error(out, where, "bad_tool_call", path, f"not JSON ({exc.msg} at column {exc.colno})")
        return None
    calls = calls if isinstance(calls, list) else [calls]
    message["tool_calls"] = [{"type": "function", "function": c} for c in calls]
    message["content"] = ""
    return message


def _tool_calls(out: Normalised, where: str, path: str, message: dict) -> None:
    """Check OpenAI tool calls; arguments given as a JSON string become an object."""
    calls = message["tool_calls"]
    if not isinstance(calls, list) or not calls:
        _error(out, where, "bad_tool_call", path, "expected a non-empty list of tool calls")
        return
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            _error(
                out,
                where,
                "bad_tool_call",
                f"{path}[{index}]",
                'expected {"type": "function", "function": {"name", "arguments"}}',
            )
            return
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                _error(
                    out,
                    where,
                    "bad_tool_call",
                    f"{path}[{index}].function.arguments",
                    f"not JSON ({exc.msg} at column {exc.colno})",
                )
                return
        if not isinstance(arguments, dict):
            _error(
                out,
                where,
                "bad_tool_call",
                f"{path}[{index}].function.arguments",
                "expected a JSON object of arguments",
            )
            return
        calls[index] = {
            **call,
            "type": "function",
            "function": {"name": function["name"], "arguments": arguments},
        }
    if message.get("content") is None:
        message["content"] = ""


def _tools(out: Normalised, where: str, tools: Any) -> list | None:
    if tools is None:
        return None
    if isinstance(tools, str):  # LLaMA-Factory stores the schemas as a JSON string
        try:
            tools = json.loads(tools) if tools.strip() else []
        except json.JSONDecodeError as exc:
            _error(out, where, "bad_tools", "tools", f"not JSON ({exc.msg} at column {exc.colno})")
            return None
    if not isinstance(tools, list):
        _error(out, where, "bad_tools", "tools", "expected a list of tool schemas")
        return None
    for index, tool in enumerate(tools):
        schema = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            _error(
                out,
                where,
                "bad_tools",
                f"tools[{index}]",
                'expected {"type": "function", "function": {"name", "description", "parameters"}}',
            )
            return None
        if "function" not in tool:
            tools[index] = {"type": "function", "function": tool}
    return tools or None


def _as_context(message: Any) -> Any:
    if isinstance(message, dict) and message.get("role") == "assistant":
        return {**message, "weight": 0}
    return message


def _error(out: Normalised, where: str, category: str, field_path: str, message: str) -> None:
    out.defects.append(Defect(category, where, field_path, message))
