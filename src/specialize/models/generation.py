"""Text generation through the chat template: one reply, or a stream of text pieces."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from pydantic import Field

from specialize.config import Config

Message = dict[str, str]


class GenerationSettings(Config):
    """How to sample a reply."""

    max_new_tokens: int = Field(256, ge=1, description="Most tokens to generate.")
    temperature: float = Field(0.0, ge=0.0, description="0 is greedy; above 0 samples.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (when sampling).")
    seed: int | None = Field(None, description="Seed for sampling; fixed seed, same reply.")

    def to_generate_kwargs(self, tokenizer) -> dict:
        """Return the keyword arguments for `model.generate`."""
        kwargs = dict(max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            # Explicitly greedy, overriding any sampling defaults in the model's generation_config.
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs


def chat_messages(
    prompt: str, system: str | None = None, history: list[Message] | None = None
) -> list[Message]:
    """Return the message list for a prompt with optional system text and earlier turns."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    return messages + list(history or []) + [{"role": "user", "content": prompt}]


def render_prompt_ids(tokenizer, messages: list[Message]) -> list[int]:
    """Return the token ids of `messages` rendered by the chat template, ready for a reply."""
    if not getattr(tokenizer, "chat_template", None):
        # Base models without a template get plain text; the reply continues it.
        text = "\n".join(m["content"] for m in messages)
        return tokenizer(text)["input_ids"]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def stream_reply(
    model, tokenizer, messages: list[Message], settings: GenerationSettings
) -> Iterator[str]:
    """Yield the reply to `messages` piece by piece as the model produces it."""
    import torch
    from transformers import TextIteratorStreamer

    ids = torch.tensor([render_prompt_ids(tokenizer, messages)], device=model.device)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        streamer=streamer,
        **settings.to_generate_kwargs(tokenizer),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if errors:
        raise errors[0]


def generate_reply(
    model, tokenizer, messages: list[Message], settings: GenerationSettings | None = None
) -> str:
    """Return the whole reply to `messages`."""
    return "".join(stream_reply(model, tokenizer, messages, settings or GenerationSettings()))
