"""Record kinds: detect them, validate each row with precise field paths, convert to TRL rows.

Output rows follow TRL's dataset conventions, so its trainers take them as they are:
  text               {"text"}
  chat               {"messages": [{"role", "content", optional "weight"}]}
  instruction        converted to chat
  prompt_completion  {"prompt", "completion"}
  preference         {"prompt", "chosen", "rejected"} (all strings, or all message lists)
  multimodal         chat whose content lists parts {"type": "image"|"audio", "path"}, plus
                     "images"/"audios" with the resolved paths (a data: URL stays as it is)
  speech             {"audio", "text"} (a recording and its transcript; also read from
                     "file_name"+"transcription"/"sentence" of HF's audiofolder metadata.csv),
                     plus the recording's "audio_sha256", "seconds" and "sample_rate"
Image rows arrive in three layouts, all converted to the multimodal row above:
  TRL/HF    "images": [paths] beside messages whose content has {"type": "image"} placeholders
            (or "<image>" markers in a string), filled in order; counts must match
  OpenAI    {"type": "image_url", "image_url": {"url": path or data:image/...;base64,...}}
  own       {"type": "image", "path": ...} parts, or an "image" key on a message
Other top-level keys (ids, group keys, tags) are kept as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialize.data.audio import AudioLimits, audio_problems, inspect_audio
from specialize.data.media import check_media, image_info, is_data_url
from specialize.errors import UserFileError

KINDS = ("text", "chat", "instruction", "prompt_completion", "preference", "multimodal", "speech")
# Field names of a speech row: the recording, then its transcript (first present wins).
AUDIO_KEYS = ("audio", "file_name", "audio_path")
TRANSCRIPT_KEYS = ("text", "transcript", "transcription", "sentence")
ROLES = ("system", "user", "assistant", "tool")
MEDIA_TYPES = ("image", "audio")
# Legacy OpenAI function-calling keys that specialize does not train on: ignored, with a warning.
# (Current tool calling, "tools" on the row and "tool_calls" on assistant messages, is trained.)
IGNORED_TOOL_KEYS = ("functions", "function_call", "parallel_tool_calls")
_TOOL_MESSAGE_KEYS = {"tool_calls", "tool_call_id"}
_KNOWN_MESSAGE_KEYS = {
    "role",
    "content",
    "weight",
    "name",
    *MEDIA_TYPES,
    "images",
    "audios",
    *_TOOL_MESSAGE_KEYS,
}
IMAGE_MARKER = "<image>"


@dataclass(frozen=True)
class Defect:
    """One problem with one row: category, place, field path, and what was expected."""

    category: str
    where: str
    field: str
    message: str
    severity: str = "error"  # "error" drops the row; "warning" keeps it

    def line(self) -> str:
        field = f" {self.field}:" if self.field else ""
        return f"{self.where}:{field} {self.message} [{self.category}]"


def detect_kind(value: Any) -> str | None:
    """Return the record kind a row looks like, or None when no kind fits its keys."""
    if not isinstance(value, dict):
        return None
    keys = set(value)
    if "messages" in keys:
        media = _has_media(value["messages"]) or bool(value.get("images") or value.get("audios"))
        return "multimodal" if media else "chat"
    if keys & set(AUDIO_KEYS) and keys & set(TRANSCRIPT_KEYS):
        return "speech"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "preference"
    if "instruction" in keys:
        return "instruction"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    return None


def same_family(a: str, b: str) -> bool:
    """Chat and multimodal rows may share a file: multimodal is chat with attachments."""
    return a == b or {a, b} == {"chat", "multimodal"}


class RowChecker:
    """Validates rows of one kind and converts them; media paths resolve against `media_root`."""

    def __init__(
        self, kind: str, where: str, media_root: Path, audio_limits: AudioLimits | None = None
    ):
        self.kind, self.where, self.media_root = kind, where, media_root
        self.audio_limits = audio_limits or AudioLimits()
        self.defects: list[Defect] = []
        self._listed_images = False

    def convert(self, value: Any) -> dict | None:
        """Return the TRL row for `value`, or None when it has errors (see `self.defects`)."""
        if not isinstance(value, dict):
            self._error("not_an_object", "", f"expected a JSON object, got {type(value).__name__}")
            return None
        for key in IGNORED_TOOL_KEYS:
            if key in value:
                self._warn("ignored_field", key, "tool definitions are not trained on; ignored")
        converter = {
            "text": self._text,
            "chat": self._chat,
            "multimodal": self._chat,
            "instruction": self._instruction,
            "prompt_completion": self._prompt_completion,
            "preference": self._preference,
            "speech": self._speech,
        }[self.kind]
        row = converter(value)
        if row is None or any(d.severity == "error" for d in self.defects):
            return None
        extras = {
            k: v
            for k, v in value.items()
            if k not in _CONSUMED[self.kind] and k not in IGNORED_TOOL_KEYS
        }
        return {**row, **extras}

    # --- kinds ----------------------------------------------------------------------------

    def _text(self, value: dict) -> dict | None:
        text = self._string(value, "text")
        return None if text is None else {"text": text}

    def _instruction(self, value: dict) -> dict | None:
        instruction = self._string(value, "instruction")
        output = self._string(value, "output")
        extra = value.get("input", "")
        if extra is None:
            extra = ""
        if not isinstance(extra, str):
            self._error("wrong_type", "input", f"expected a string, got {type(extra).__name__}")
            return None
        if instruction is None or output is None:
            return None
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        if isinstance(value.get("system"), str) and value["system"].strip():
            messages.insert(0, {"role": "system", "content": value["system"]})
        return {"messages": messages}

    def _prompt_completion(self, value: dict) -> dict | None:
        prompt = self._string(value, "prompt")
        completion = self._string(value, "completion")
        return (
            None
            if prompt is None or completion is None
            else {"prompt": prompt, "completion": completion}
        )

    def _preference(self, value: dict) -> dict | None:
        parts = {}
        for key in ("prompt", "chosen", "rejected"):
            item = value.get(key)
            if isinstance(item, str):
                parts[key] = self._string(value, key)
            elif isinstance(item, list):
                role_rule = "prompt" if key == "prompt" else "answer"
                parts[key] = self._messages(item, key, role_rule)
            elif item is None:
                self._error("missing_field", key, "required field is missing")
            else:
                self._error(
                    "wrong_type",
                    key,
                    f"expected a string or a list of messages, got {type(item).__name__}",
                )
        if any(parts.get(k) is None for k in ("prompt", "chosen", "rejected")):
            return None
        if parts["chosen"] == parts["rejected"]:
            self._error(
                "identical_pair",
                "chosen",
                "chosen and rejected are the same; the pair teaches nothing",
            )
            return None
        if len({type(v) for v in parts.values()}) > 1:
            # TRL wants all three in one style; strings beside message lists become messages.
            if isinstance(parts["prompt"], str):
                parts["prompt"] = [{"role": "user", "content": parts["prompt"]}]
            for key in ("chosen", "rejected"):
                if isinstance(parts[key], str):
                    parts[key] = [{"role": "assistant", "content": parts[key]}]
        return parts

    def _speech(self, value: dict) -> dict | None:
        audio_key = next((k for k in AUDIO_KEYS if k in value), AUDIO_KEYS[0])
        text_key = next((k for k in TRANSCRIPT_KEYS if k in value), TRANSCRIPT_KEYS[0])
        ref = self._string(value, audio_key)
        transcript = self._string(value, text_key)
        if ref is None:
            return None
        path = self.media_root / ref
        limits = self.audio_limits
        try:
            info = inspect_audio(path, max_decode_seconds=limits.max_seconds)
        except UserFileError as exc:
            category = "missing_media" if not path.exists() else "unreadable_media"
            self._error(category, audio_key, exc.what + f": {path}")
            return None
        for category, message, severity in audio_problems(info, limits):
            (self._error if severity == "error" else self._warn)(category, audio_key, message)
        if transcript is None:
            return None
        return {
            "audio": str(path),
            "text": transcript,
            "audio_sha256": info.sha256,
            "seconds": round(info.seconds, 3),
            "sample_rate": info.sample_rate,
        }

    def _chat(self, value: dict) -> dict | None:
        messages = value.get("messages")
        if messages is None:
            self._error("missing_field", "messages", "required field is missing")
            return None
        if not isinstance(messages, list):
            self._error(
                "wrong_type",
                "messages",
                f"expected a list of messages, got {type(messages).__name__}",
            )
            return None
        # "<image>" in a string marks an image only where the row lists images (TRL's layout).
        self._listed_images = bool(value.get("images"))
        checked = self._messages(messages, "messages", "conversation")
        if checked is None or not self._fill_placeholders(checked, value):
            return None
        row: dict[str, Any] = {"messages": checked}
        if value.get("tools"):
            row["tools"] = value["tools"]  # validated by layouts.normalise
        media = self._collect_media(checked)
        if media.get("image"):
            row["images"] = media["image"]
        if media.get("audio"):
            row["audios"] = media["audio"]
        return row

    # --- messages -------------------------------------------------------------------------

    def _messages(self, messages: list, field: str, rule: str) -> list | None:
        if not messages:
            self._error("empty_content", field, "no messages")
            return None
        out = []
        ok = True
        for index, message in enumerate(messages):
            path = f"{field}[{index}]"
            converted = self._message(message, path)
            ok = ok and converted is not None
            out.append(converted)
        if not ok:
            return None
        self._check_order(out, field, rule)
        return out

    def _message(self, message: Any, path: str) -> dict | None:
        if not isinstance(message, dict):
            self._error(
                "wrong_type", path, f"expected a message object, got {type(message).__name__}"
            )
            return None
        role = message.get("role")
        if role is None:
            self._error("missing_field", f"{path}.role", "required field is missing")
            return None
        if role not in ROLES:
            self._error(
                "unknown_role", f"{path}.role", f"role {role!r}; expected one of {', '.join(ROLES)}"
            )
            return None
        for key in sorted(set(message) - _KNOWN_MESSAGE_KEYS):
            ignored = "tool calls are not trained on" if key in IGNORED_TOOL_KEYS else "unknown key"
            self._warn("ignored_field", f"{path}.{key}", f"{ignored}; ignored")
        if message.get("tool_calls") and role != "assistant":
            self._error("bad_tool_call", f"{path}.tool_calls", "only assistant messages call tools")
            return None
        if message.get("tool_calls") and message.get("content") in (None, ""):
            content: str | list | None = ""  # a turn that only calls tools has no text
        else:
            content = self._content(message, path)
        if content is None:
            return None
        out: dict[str, Any] = {"role": role, "content": content}
        out.update({k: message[k] for k in sorted(_TOOL_MESSAGE_KEYS) if message.get(k)})
        if "weight" in message:
            weight = message["weight"]
            if weight not in (0, 1) or isinstance(weight, bool):
                self._error("bad_weight", f"{path}.weight", f"expected 0 or 1, got {weight!r}")
                return None
            if role != "assistant":
                self._warn(
                    "ignored_field",
                    f"{path}.weight",
                    "weight only affects assistant turns; ignored",
                )
            else:
                out["weight"] = weight
        return out

    def _content(self, message: dict, path: str) -> str | list | None:
        content = message.get("content")
        attached = [(kind, message[kind]) for kind in MEDIA_TYPES if kind in message]
        if content is None:
            self._error("missing_field", f"{path}.content", "required field is missing")
            return None
        if isinstance(content, str) and IMAGE_MARKER in content and self._listed_images:
            # The LLaVA/TRL string layout: "<image>" marks where a row-level image goes.
            pieces = content.split(IMAGE_MARKER)
            marked: list[dict] = []
            for index, piece in enumerate(pieces):
                if index:
                    marked.append({"type": "image"})
                if piece.strip():
                    marked.append({"type": "text", "text": piece})
            content = marked
        if isinstance(content, str):
            if not content.strip() and not attached:
                self._error("empty_content", f"{path}.content", "empty text")
                return None
            if not attached:
                return content
            parts: list[dict] = [{"type": k, "path": v} for k, v in attached]
            return parts + ([{"type": "text", "text": content}] if content.strip() else [])
        if isinstance(content, list):
            return self._content_parts(content, f"{path}.content")
        self._error(
            "wrong_type",
            f"{path}.content",
            f"expected a string or a list of parts, got {type(content).__name__}",
        )
        return None

    def _content_parts(self, parts: list, path: str) -> list | None:
        out = []
        for index, part in enumerate(parts):
            where = f"{path}[{index}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                out.append({"type": "text", "text": part["text"]})
            elif kind in MEDIA_TYPES:
                ref = part.get("path") or part.get(kind) or part.get("url")
                if ref is None and set(part) == {"type"}:
                    out.append({"type": kind, "path": None})  # filled from the row's list
                    continue
                if not isinstance(ref, str) or not ref:
                    self._error("missing_field", f"{where}.path", f"{kind} part needs a file path")
                    return None
                out.append({"type": kind, "path": ref})
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str) or not url:
                    self._error(
                        "missing_field", f"{where}.image_url.url", "image_url part needs a url"
                    )
                    return None
                if url.startswith(("http://", "https://")):
                    self._error(
                        "remote_media",
                        f"{where}.image_url.url",
                        "remote images are not fetched; download it and give a local path or a data: URL",
                    )
                    return None
                out.append({"type": "image", "path": url.removeprefix("file://")})
            else:
                self._error(
                    "wrong_type",
                    where,
                    "expected {'type': 'text', 'text'}, {'type': 'image'|'audio', 'path'} or "
                    "{'type': 'image_url', 'image_url': {'url'}}",
                )
                return None
        if not any(p["type"] != "text" or p["text"].strip() for p in out):
            self._error("empty_content", path, "no text and no attachment")
            return None
        return out

    def _check_order(self, messages: list[dict], field: str, rule: str) -> None:
        roles = [m["role"] for m in messages]
        for index, role in enumerate(roles):
            if role == "system" and index != 0:
                self._error(
                    "turn_order", f"{field}[{index}].role", "a system message may only come first"
                )
                return
        if "tool" in roles or any(m.get("tool_calls") for m in messages):
            roles = self._check_tool_turns(messages, field)
            if roles is None:
                return
        turns = roles[1:] if roles[0] == "system" else roles
        if rule == "answer":
            if turns != ["assistant"]:
                self._error("turn_order", field, "an answer is one assistant message")
            return
        for index, role in enumerate(turns):
            expected = "user" if index % 2 == 0 else "assistant"
            if role != expected:
                offset = index + (1 if roles[0] == "system" else 0)
                self._error(
                    "turn_order",
                    f"{field}[{offset}].role",
                    f"expected {expected} (turns alternate, user first), got {role}",
                )
                return
        if rule == "conversation" and "assistant" not in turns:
            self._error("no_assistant_turn", field, "no assistant message to learn from")
        elif rule == "conversation" and turns[-1] != "assistant":
            self._error(
                "turn_order",
                f"{field}[{len(roles) - 1}].role",
                "the last message should be the assistant's",
            )
        elif rule == "prompt" and turns and turns[-1] != "user":
            self._error(
                "turn_order",
                f"{field}[{len(roles) - 1}].role",
                "a prompt should end with the user's message",
            )

    def _check_tool_turns(self, messages: list[dict], field: str) -> list[str] | None:
        """Tool results must answer an assistant's tool call; return the roles without them.

        user, assistant(tool_calls), tool, tool, assistant reads as one user and one assistant turn.
        """
        roles: list[str] = []
        calling = answered = False
        for index, message in enumerate(messages):
            role = message["role"]
            if role == "tool":
                if not calling:
                    self._error(
                        "turn_order",
                        f"{field}[{index}].role",
                        "a tool message must follow an assistant message with tool_calls",
                    )
                    return None
                answered = True
                continue
            if calling and not answered:
                self._error(
                    "turn_order",
                    f"{field}[{index}].role",
                    "the assistant's tool calls before this message get no tool results",
                )
                return None
            if role == "assistant" and calling:
                calling = bool(message.get("tool_calls"))
                answered = False
                continue  # the same assistant turn, continued after the tool results
            answered = False
            calling = role == "assistant" and bool(message.get("tool_calls"))
            roles.append(role)
        return roles  # a conversation may end on a tool call: that teaches the call

    def _fill_placeholders(self, messages: list[dict], value: dict) -> bool:
        """Give each bare {"type": "image"} part the next path of the row's "images" list."""
        for kind, key in (("image", "images"), ("audio", "audios")):
            listed = value.get(key)
            if listed is None:
                listed = []
            if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
                self._error("wrong_type", key, f"expected a list of {kind} file paths")
                return False
            holes = [
                part
                for message in messages
                if isinstance(message["content"], list)
                for part in message["content"]
                if part["type"] == kind and part["path"] is None
            ]
            given = [
                part["path"]
                for message in messages
                if isinstance(message["content"], list)
                for part in message["content"]
                if part["type"] == kind and part["path"] is not None
            ]
            if listed and not holes and listed == given:
                continue  # the list repeats the parts' own paths (some HF exports do)
            if holes and len(holes) != len(listed) or (listed and not holes):
                more = "more" if len(listed) > len(holes) else "fewer"
                self._error(
                    "media_count_mismatch",
                    key,
                    f"{len(listed)} {kind}(s) listed but {len(holes)} {{'type': '{kind}'}} "
                    f"placeholder(s) in the messages ({more} {kind}s than places); "
                    f"give one placeholder per {kind}, in order",
                )
                return False
            for part, ref in zip(holes, listed, strict=True):
                part["path"] = ref
        return True

    def _collect_media(self, messages: list[dict]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for index, message in enumerate(messages):
            if not isinstance(message["content"], list):
                continue
            for pindex, part in enumerate(message["content"]):
                if part["type"] in MEDIA_TYPES:
                    field = f"messages[{index}].content[{pindex}].path"
                    ref = part["path"]
                    resolved = ref if is_data_url(ref) else str(self.media_root / ref)
                    problem = check_media(resolved, part["type"])
                    if problem:
                        self._error(problem[0], field, problem[1])
                    else:
                        part["path"] = resolved
                        found.setdefault(part["type"], []).append(resolved)
        return found

    # --- helpers --------------------------------------------------------------------------

    def _string(self, value: dict, key: str) -> str | None:
        item = value.get(key)
        if item is None:
            self._error("missing_field", key, "required field is missing")
            return None
        if not isinstance(item, str):
            self._error("wrong_type", key, f"expected a string, got {type(item).__name__}")
            return None
        if not item.strip():
            self._error("empty_content", key, "empty text")
            return None
        return item

    def _error(self, category: str, field: str, message: str) -> None:
        self.defects.append(Defect(category, self.where, field, message))

    def _warn(self, category: str, field: str, message: str) -> None:
        self.defects.append(Defect(category, self.where, field, message, "warning"))


_CONSUMED = {
    "text": {"text"},
    "chat": {"messages", "tools"},
    "multimodal": {"messages", "images", "audios", "tools"},
    "instruction": {"instruction", "input", "output", "system"},
    "prompt_completion": {"prompt", "completion"},
    "preference": {"prompt", "chosen", "rejected"},
    "speech": {*AUDIO_KEYS, *TRANSCRIPT_KEYS},
}


def _has_media(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        if not isinstance(message, dict):
            continue
        if any(k in message for k in MEDIA_TYPES):
            return True
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in (*MEDIA_TYPES, "image_url") for p in content
        ):
            return True
    return False


# --- views of a converted row, used by curation and leakage checks ----------------------------


def _media_label(part: dict) -> str:
    """An image is named by its content hash, so the same file under two names reads the same
    (re-encoded copies are the near-duplicate check's job, by difference hash)."""
    if part["type"] == "image":
        try:
            return f"<image:{image_info(part['path']).sha256[:16]}>"
        except (OSError, ValueError):
            pass
    name = "data-url" if is_data_url(part["path"]) else Path(part["path"]).name
    return f"<{part['type']}:{name}>"


def _message_text(content: str | list) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p["text"] if p["type"] == "text" else _media_label(p) for p in content)


def row_images(row: dict) -> list[str]:
    """Return the image references of a converted row, in order of appearance."""
    messages = row.get("messages") or []
    return [
        part["path"]
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    ]


def _as_text(item: str | list) -> str:
    return item if isinstance(item, str) else "\n".join(_message_text(m["content"]) for m in item)


def prompt_text(row: dict) -> str:
    """Return what the model is asked: user turns, prompt, the whole text for raw text, or the
    recording itself (its sha256) for speech, so one recording cannot sit in train and test."""
    if "audio_sha256" in row:
        return f"<audio:{row['audio_sha256']}>"
    if "messages" in row:
        return "\n".join(
            _message_text(m["content"]) for m in row["messages"] if m["role"] == "user"
        )
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            return "\n".join(_message_text(m["content"]) for m in prompt if m["role"] == "user")
        return prompt
    return row.get("text", "")


def prompt_messages(row: dict) -> list[dict] | None:
    """Return what the model is asked as chat messages: a preference or completion row's prompt
    (text becomes one user turn), or a chat's turns before its last assistant answer. None for
    rows that ask nothing (raw text). The one place a row's prompt becomes messages."""
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and prompt:
        messages = prompt
    elif isinstance(row.get("messages"), list) and row["messages"]:
        messages = row["messages"]
    else:
        return None
    if not all(isinstance(m, dict) for m in messages):
        return None
    if messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    return [dict(m) for m in messages] or None


def answer_messages(answer: str | list) -> list[dict]:
    """Return an answer (text, or a list of turns as in TRL's conversational preference rows) as
    chat messages."""
    if isinstance(answer, list):
        return [dict(m) for m in answer]
    return [{"role": "assistant", "content": answer}]


def _turn_text(message: dict) -> str:
    """A message's text, with its tool calls written out (a call-only turn is not empty)."""
    calls = [
        f"{c['function']['name']}({json.dumps(c['function'].get('arguments', {}), ensure_ascii=False)})"
        for c in message.get("tool_calls") or []
    ]
    return "\n".join([_message_text(message["content"]), *calls]).strip()


def answer_texts(row: dict) -> list[str]:
    """Return the texts the model learns to produce (assistant turns, completion, chosen)."""
    if "messages" in row:
        return [_turn_text(m) for m in row["messages"] if m["role"] == "assistant"]
    if "completion" in row:
        return [row["completion"]]
    if "chosen" in row:
        return [_as_text(row["chosen"])]
    return [row.get("text", "")]


def full_text(row: dict) -> str:
    """Return every trained-on text field of a row joined, for duplicate detection."""
    if "audio_sha256" in row:  # the same words in another voice are a new example
        return f"{row['text']}\n<audio:{row['audio_sha256']}>"
    if "messages" in row:
        return "\n".join(f"{m['role']}: {_turn_text(m)}" for m in row["messages"])
    if "chosen" in row:
        return "\n".join(_as_text(row[k]) for k in ("prompt", "chosen", "rejected"))
    if "completion" in row:
        return f"{row['prompt']}\n{row['completion']}"
    return row.get("text", "")
