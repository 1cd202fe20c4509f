"""OpenAI-compatible speech to text: POST /v1/audio/transcriptions (multipart form).

The form's `model` is "base" (or the base model's reference) or the name of a speech adapter
loaded at start; never a path. Uploads over the size limit answer 413, recordings over the
duration limit 413, anything that does not decode 400. Recordings longer than Whisper's 30 s
window are transcribed in 30 s pieces, which verbose_json returns as segments.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse

from specialize.errors import SpecializeError

FORMATS = ("json", "text", "verbose_json")
TRANSCRIPTIONS = "/v1/audio/transcriptions"
WINDOW_SECONDS = 30


@dataclass
class AudioLimits:
    max_bytes: int = 25 * 2**20  # OpenAI's own upload limit
    max_seconds: float = 600.0
    api_key: str | None = None  # Bearer token required when set


@dataclass
class SpeechHost:
    """One speech model in memory with its named adapters; a request picks one by name."""

    model_ref: str
    adapters: dict[str, str] = field(default_factory=dict)  # name -> run or adapter dir

    def __post_init__(self):
        from specialize.models.loading import adapter_dir
        from specialize.models.speech import load_speech_model

        self.speech = load_speech_model(self.model_ref)
        for name, path in self.adapters.items():
            if self.speech.model.__class__.__name__ != "PeftModel":
                from peft import PeftModel

                self.speech.model = PeftModel.from_pretrained(
                    self.speech.model, adapter_dir(path), adapter_name=name
                )
            else:
                self.speech.model.load_adapter(adapter_dir(path), adapter_name=name)
            self.speech.model.eval()
        self.lock = threading.Lock()

    def names(self) -> list[str]:
        return ["base", *self.adapters]

    def transcribe(self, name: str, recordings: list) -> list[str]:
        from specialize.models.speech import transcribe

        with self.lock:
            if name == "base":
                switch = (
                    self.speech.model.disable_adapter()
                    if self.adapters
                    else contextlib.nullcontext()
                )
            else:
                self.speech.model.set_adapter(name)
                switch = contextlib.nullcontext()
            with switch:
                return transcribe(self.speech, recordings)


def add_audio_routes(app: FastAPI, host: SpeechHost, limits: AudioLimits | None = None) -> None:
    """Mount /v1/audio/transcriptions (and /v1/audio/models) on `app`."""
    limits = limits or AudioLimits()

    def refuse(status: int, message: str, code: str | None = None) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": message, "type": "invalid_request_error", "code": code}},
            status_code=status,
        )

    def authorised(request: Request) -> bool:
        return not limits.api_key or (
            request.headers.get("authorization") == f"Bearer {limits.api_key}"
        )

    @app.get("/v1/audio/models")
    def audio_models(request: Request):
        if not authorised(request):
            return refuse(401, "missing or wrong API key (Authorization: Bearer KEY)")
        return {"object": "list", "data": [{"id": n, "object": "model"} for n in host.names()]}

    @app.post(TRANSCRIPTIONS)
    async def transcriptions(
        request: Request,
        file: UploadFile = File(...),
        model: str = Form(...),
        response_format: str = Form("json"),
        language: str | None = Form(None),
    ):
        if not authorised(request):
            return refuse(401, "missing or wrong API key (Authorization: Bearer KEY)")
        name = "base" if model in ("base", host.model_ref) else model
        if name not in host.names():
            return refuse(
                404,
                f"unknown model {model!r}; served: {', '.join(host.names())}",
                "model_not_found",
            )
        if response_format not in FORMATS:
            return refuse(
                400, f"response_format {response_format!r}; use one of {', '.join(FORMATS)}"
            )
        if language not in (None, "", "en", "english"):
            return refuse(400, f"language {language!r}: the served speech model is English-only")
        data = await file.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            return refuse(413, f"upload over {limits.max_bytes} bytes")
        try:
            samples, seconds = _decode(data, Path(file.filename or "upload").suffix)
        except SpecializeError as exc:
            return refuse(400, f"not a readable recording ({exc.what})")
        if seconds > limits.max_seconds:
            return refuse(
                413, f"recording is {seconds:.0f} s, over the {limits.max_seconds:.0f} s limit"
            )
        pieces = _windows(samples)
        texts = await _in_thread(host.transcribe, name, pieces)
        text = " ".join(t for t in texts if t).strip()
        if response_format == "text":
            return PlainTextResponse(text)
        if response_format == "json":
            return {"text": text}
        return {
            "task": "transcribe",
            "language": "english",
            "duration": round(seconds, 3),
            "text": text,
            "segments": [
                {
                    "id": i,
                    "start": i * WINDOW_SECONDS,
                    "end": round(min((i + 1) * WINDOW_SECONDS, seconds), 3),
                    "text": t,
                }
                for i, t in enumerate(texts)
            ],
        }


def _decode(data: bytes, suffix: str):
    """Return (16 kHz samples, seconds) of uploaded bytes; UserFileError when they do not decode."""
    from specialize.data.audio import TARGET_RATE, load_audio

    with tempfile.NamedTemporaryFile(suffix=suffix if len(suffix) <= 6 else "") as tmp:
        tmp.write(data)
        tmp.flush()
        samples = load_audio(tmp.name)
    return samples, len(samples) / TARGET_RATE


def _windows(samples) -> list:
    from specialize.data.audio import TARGET_RATE

    step = WINDOW_SECONDS * TARGET_RATE
    return [samples[i : i + step] for i in range(0, max(len(samples), 1), step)]


async def _in_thread(function, *args):
    import anyio

    return await anyio.to_thread.run_sync(lambda: function(*args))
