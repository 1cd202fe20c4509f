"""`specialize transcribe FILE... [--model whisper-tiny-en] [--adapter RUN]`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from specialize.models.catalog import DEFAULT_MODEL, DEFAULT_SPEECH_MODEL


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

    @app.command("serve-speech")
    def serve_speech_cmd(
        model: str = typer.Option(DEFAULT_SPEECH_MODEL, help="Speech model: alias or directory."),
        adapter: list[str] = typer.Option(
            [], help="NAME=RUN_DIR: a speech adapter served under NAME; repeatable."
        ),
        bind: str = typer.Option("127.0.0.1", help="Address to listen on."),
        port: int = typer.Option(8000, help="Port."),
        max_mb: float = typer.Option(25.0, help="Largest upload in MiB (413 above)."),
        max_seconds: float = typer.Option(600.0, help="Longest recording in seconds (413 above)."),
        api_key: str | None = typer.Option(
            None, envvar="SPECIALIZE_API_KEY", help="Require this Bearer token."
        ),
    ) -> None:
        """OpenAI-compatible POST /v1/audio/transcriptions: the base speech model and its adapters."""
        import uvicorn

        from specialize.errors import ConfigError
        from specialize.serve.app import create_app
        from specialize.serve.audio_api import AudioLimits, SpeechHost

        pairs = [spec.split("=", 1) for spec in adapter]
        bad = [spec for spec, pair in zip(adapter, pairs, strict=True) if len(pair) != 2]
        if bad:
            raise ConfigError([f"--adapter {spec!r}: expected NAME=RUN_DIR" for spec in bad])
        host = SpeechHost(model, dict(pairs))
        limits = AudioLimits(int(max_mb * 2**20), max_seconds, api_key)
        typer.echo(
            f"serving {', '.join(host.names())} on http://{bind}:{port}/v1/audio/transcriptions"
        )
        uvicorn.run(create_app(speech=(host, limits)), host=bind, port=port, log_level="warning")

    @app.command("cascade")
    def cascade_cmd(
        data: Path = typer.Argument(
            ..., help="Eval file whose rows also carry 'audio' (the spoken question)."
        ),
        model: str = typer.Option(DEFAULT_MODEL, help="Text model answering the questions."),
        adapter: Path | None = typer.Option(None, help="Text adapter (run dir or adapter dir)."),
        speech_model: str = typer.Option(DEFAULT_SPEECH_MODEL, help="Speech model."),
        speech_adapter: Path | None = typer.Option(None, help="Speech adapter (an asr run)."),
        metric: list[str] = typer.Option([], help="Metrics (default: the task defaults)."),
        out: Path = typer.Option(Path("cascade.json"), help="Where to write the result."),
        as_json: bool = typer.Option(False, "--json", help="Print cascade.json's content."),
    ) -> None:
        """Spoken questions -> speech model -> text model, scored beside the same questions typed."""
        from specialize.artifacts import atomic_write_json
        from specialize.evaluate.cascade import cascade_eval
        from specialize.models.loading import load_model
        from specialize.models.speech import load_speech_model

        speech = load_speech_model(speech_model, adapter=speech_adapter)
        text_model, tokenizer = load_model(model, adapter=adapter)
        result = cascade_eval(speech, text_model, tokenizer, data, metrics=metric or None)
        atomic_write_json(out, result)
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False, default=str))
            return
        wer = result["question_wer"]
        typer.echo(
            f"question WER {wer['mean']:.3f} [{wer['ci95'][0]:.3f}, {wer['ci95'][1]:.3f}] n={wer['n']}"
        )
        for name, typed in result["typed"].items():
            spoken, change = result["spoken"][name], result["spoken_minus_typed"][name]
            typer.echo(
                f"{name}: typed {_estimate(typed)}; spoken {_estimate(spoken)}; spoken - typed "
                f"{change['delta']:+.3f} [{change['ci95'][0]:+.3f}, {change['ci95'][1]:+.3f}], "
                f"p={change['p_value']:.3f} ({change['test']}, n={change['n']}): "
                f"{'significant' if change['significant'] else 'not significant'}"
            )
        typer.echo(f"wrote {out}")


def _estimate(e: dict) -> str:
    return f"{e['mean']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}] n={e['n']}"
