"""`specialize transcribe FILE... [--model whisper-tiny-en] [--adapter RUN]`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from specialize.models.catalog import DEFAULT_SPEECH_MODEL


def register(app: typer.Typer) -> None:
    @app.command("transcribe")
    def transcribe_cmd(
        files: list[Path] = typer.Argument(
            ..., help="Recordings (wav, flac, ogg); any sample rate."
        ),
        model: str = typer.Option(DEFAULT_SPEECH_MODEL, help="Speech model: alias or directory."),
        adapter: Path | None = typer.Option(
            None, help="A speech adapter: run directory of a `method: asr` run, or adapter dir."
        ),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per file."),
    ) -> None:
        """Write what was said in each recording (Whisper, greedy, 16 kHz mono)."""
        from specialize.data.audio import TARGET_RATE, load_audio
        from specialize.models.speech import load_speech_model, transcribe

        speech = load_speech_model(model, adapter=adapter)
        for file in files:
            audio = load_audio(file)
            (text,) = transcribe(speech, [audio])
            if as_json:
                record = {
                    "file": str(file),
                    "text": text,
                    "seconds": round(len(audio) / TARGET_RATE, 3),
                    "model": model,
                    "adapter": str(adapter) if adapter else None,
                }
                typer.echo(json.dumps(record, ensure_ascii=False))
            else:
                typer.echo(f"{file}: {text}" if len(files) > 1 else text)
