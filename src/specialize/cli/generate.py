"""`specialize generate` and `specialize chat`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from specialize.cli.output import print_json
from specialize.models.catalog import DEFAULT_MODEL
from specialize.models.generation import GenerationSettings, chat_messages, stream_reply
from specialize.models.loading import load_model

console = Console(highlight=False, soft_wrap=True)


def _settings(
    max_new_tokens: int, temperature: float, top_p: float, seed: int | None
) -> GenerationSettings:
    from specialize.config import build_config

    return build_config(
        GenerationSettings,
        {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
        },
        source="command line",
    )


def register(app: typer.Typer) -> None:
    """Add `generate` and `chat` to the root app."""

    @app.command("generate")
    def generate(
        prompt: str = typer.Argument(..., help="The user's message."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model reference."),
        adapter: Path | None = typer.Option(None, help="PEFT adapter dir or run dir."),
        system: str | None = typer.Option(None, help="System message."),
        max_new_tokens: int = typer.Option(256, help="Most tokens to generate."),
        temperature: float = typer.Option(0.0, help="0 is greedy; above 0 samples."),
        top_p: float = typer.Option(1.0, help="Nucleus sampling mass."),
        seed: int | None = typer.Option(None, help="Sampling seed."),
        as_json: bool = typer.Option(
            False, "--json", help="Print the reply, its token count and the settings as JSON."
        ),
    ) -> None:
        """Reply to one prompt through the chat template, streaming tokens."""
        settings = _settings(max_new_tokens, temperature, top_p, seed)
        loaded, tokenizer = load_model(model, adapter=adapter)
        messages = chat_messages(prompt, system)
        if as_json:
            reply = "".join(stream_reply(loaded, tokenizer, messages, settings))
            tokens = len(tokenizer(reply, add_special_tokens=False)["input_ids"])
            print_json(
                console,
                {
                    "model": model,
                    "adapter": str(adapter) if adapter is not None else None,
                    "messages": messages,
                    "reply": reply,
                    "reply_tokens": tokens,
                    "settings": settings.model_dump(),
                },
            )
            return
        for piece in stream_reply(loaded, tokenizer, messages, settings):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

    @app.command("chat")
    def chat(
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model reference."),
        adapter: Path | None = typer.Option(None, help="PEFT adapter dir or run dir."),
        system: str | None = typer.Option(None, help="System message."),
        max_new_tokens: int = typer.Option(256, help="Most tokens per reply."),
        temperature: float = typer.Option(0.0, help="0 is greedy; above 0 samples."),
        top_p: float = typer.Option(1.0, help="Nucleus sampling mass."),
        seed: int | None = typer.Option(None, help="Sampling seed."),
    ) -> None:
        """Talk with a model over several turns. /reset clears the history, /exit or Ctrl-D ends."""
        settings = _settings(max_new_tokens, temperature, top_p, seed)
        loaded, tokenizer = load_model(model, adapter=adapter)
        history: list[dict[str, str]] = []
        typer.echo(f"chatting with {model}{f' + {adapter}' if adapter else ''}; /reset, /exit")
        for line in _prompts():
            if line in ("/exit", "/quit"):
                break
            if line == "/reset":
                history.clear()
                continue
            if not line:
                continue
            messages = chat_messages(line, system, history)
            reply = []
            for piece in stream_reply(loaded, tokenizer, messages, settings):
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            history += [
                {"role": "user", "content": line},
                {"role": "assistant", "content": "".join(reply)},
            ]


def _prompts():
    while True:
        try:
            if sys.stdin.isatty():
                line = input("> ")
            else:
                line = sys.stdin.readline()
                if not line:
                    return
        except EOFError:
            return
        yield line.strip()
