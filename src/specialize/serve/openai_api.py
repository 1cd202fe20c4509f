"""OpenAI-compatible endpoints over a ModelHost: /v1/models, /v1/chat/completions (streaming and
not), /v1/completions, /health, and an admin endpoint that loads or unloads adapters by registry
name. The request's `model` is "base" or an adapter name; never a path."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from specialize.adapters.host import ModelHost
from specialize.errors import SpecializeError
from specialize.models.generation import GenerationSettings

log = logging.getLogger("specialize.serve")


@dataclass
class Limits:
    max_tokens: int = 512  # most tokens one request may ask for
    max_body_bytes: int = 1_000_000
    max_in_flight: int = 8  # requests running or waiting for the model; more get 429
    api_key: str | None = None  # Bearer token required on every /v1 and /admin request when set
    max_image_bytes: int = 4_000_000  # one image in a chat request, decoded (more: 413)
    max_image_pixels: int = 16_000_000  # one image's width x height (more: 400)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict]  # a list: OpenAI content parts (text, image_url as a data URL)


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (n=1, ...)
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)


class CompletionRequest(_Sampling):
    prompt: str


class AdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def add_openai_routes(app: FastAPI, host: ModelHost, limits: Limits) -> None:
    gate = _Gate(limits.max_in_flight)
    app.state.host = host

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return JSONResponse(
            {"error": {"message": exc.message, "type": exc.kind, "code": exc.code}},
            status_code=exc.status,
        )

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.monotonic()
        path = request.url.path
        protected = path.startswith("/v1") or path.startswith("/admin")
        if (
            protected
            and limits.api_key
            and request.headers.get("authorization") != f"Bearer {limits.api_key}"
        ):
            response = _error(
                401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error"
            )
        elif int(request.headers.get("content-length") or 0) > limits.max_body_bytes:
            response = _error(413, f"request body over {limits.max_body_bytes} bytes")
        else:
            response = await call_next(request)
        log.info(
            json.dumps(
                {
                    "method": request.method,
                    "path": path,
                    "status": response.status_code,
                    "model": getattr(request.state, "model", None),
                    "ms": round(1000 * (time.monotonic() - started), 1),
                }
            )
        )
        return response

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "base": host.model_ref,
            "models": host.names(),
            "in_flight": gate.count,
        }

    @app.get("/v1/models")
    def models() -> dict:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "specialize"}
                for name in host.names()
            ],
        }

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest, request: Request):
        name = _model(body.model, host, request)
        settings = _settings(body, limits)
        messages, images = _with_images([m.model_dump() for m in body.messages], limits)
        if images:
            if body.stream:
                raise ApiError(400, "streaming is not supported for requests with images")
            with gate.slot():
                reply = _run(lambda: host.chat_with_images(name, messages, images, settings))
            return _chat_response(name, reply)
        if body.stream:
            gate.acquire()  # before the headers go out, so a full server can still answer 429
            return StreamingResponse(
                _chat_stream(host, gate, name, messages, settings), media_type="text/event-stream"
            )
        with gate.slot():
            reply = _run(lambda: host.chat(name, messages, settings))
        return _chat_response(name, reply)

    @app.post("/v1/completions")
    def completions(body: CompletionRequest, request: Request):
        name = _model(body.model, host, request)
        if body.stream:
            raise ApiError(400, "streaming completions are not supported; use /v1/chat/completions")
        settings = _settings(body, limits)
        with gate.slot():
            reply = _run(lambda: host.complete(name, body.prompt, settings))
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "text": reply.text,
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(reply),
        }

    @app.post("/admin/adapters")
    def load_adapter(body: AdapterRequest) -> dict:
        entry = _run(lambda: host.load(_registry_name(body.name)))
        return {"loaded": entry["name"], "models": host.names()}

    @app.delete("/admin/adapters/{name}")
    def unload_adapter(name: str) -> dict:
        _run(lambda: host.unload(_registry_name(name)))
        return {"unloaded": name, "models": host.names()}


def _with_images(messages: list[dict], limits: Limits) -> tuple[list[dict], list]:
    """Image parts decoded from data URLs (413/400 past the limits); text-only messages unchanged."""
    from specialize.serve.images import ImageLimits, RequestImageError, request_images

    image_limits = ImageLimits(
        max_image_bytes=limits.max_image_bytes, max_image_pixels=limits.max_image_pixels
    )
    try:
        return request_images(messages, image_limits)
    except RequestImageError as exc:
        raise ApiError(exc.status, str(exc)) from exc


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": None}}, status_code=status
    )


def _registry_name(name: str) -> str:
    from specialize.adapters.registry import check_name

    try:
        check_name(name)
    except SpecializeError as exc:
        raise ApiError(
            400, f"{exc.what}; adapters are loaded by registry name, never by path"
        ) from exc
    return name


def _model(name: str, host: ModelHost, request: Request) -> str:
    request.state.model = name
    if "/" in name or "\\" in name or name.startswith("."):
        raise ApiError(
            400,
            f"model {name!r} looks like a path; use 'base' or a served adapter name",
            code="model_not_found",
        )
    if name not in host.names():
        raise ApiError(
            404,
            f"model {name!r} is not served; available: {', '.join(host.names())}",
            code="model_not_found",
        )
    return name


def _settings(body: _Sampling, limits: Limits) -> GenerationSettings:
    wanted = body.max_tokens or min(256, limits.max_tokens)
    if wanted > limits.max_tokens:
        raise ApiError(
            400, f"max_tokens {wanted} is over this server's limit of {limits.max_tokens}"
        )
    return GenerationSettings(
        max_new_tokens=wanted, temperature=body.temperature, top_p=body.top_p, seed=body.seed
    )


def _run(action):
    try:
        return action()
    except SpecializeError as exc:
        status = 404 if type(exc).__name__ == "NotFoundError" else 400
        raise ApiError(status, exc.one_line()) from exc


def _usage(reply) -> dict:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _chat_response(name: str, reply) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": _usage(reply),
    }


def _chat_stream(
    host: ModelHost, gate: _Gate, name: str, messages: list[dict], settings: GenerationSettings
):
    """Server-sent events in OpenAI's chunk format, ending with [DONE]."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict, finish: str | None = None) -> str:
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        for piece in host.stream_chat(name, messages, settings):
            if piece:
                yield chunk({"content": piece})
        yield chunk({}, "stop")
        yield "data: [DONE]\n\n"
    finally:
        gate.release()  # also when the client goes away mid-stream


class _Gate:
    """Counts requests running or waiting for the model; past the limit a request gets 429."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self.count >= self.limit:
                raise ApiError(
                    429,
                    f"server busy: {self.count} requests in flight (limit {self.limit}); retry shortly",
                    "rate_limit_error",
                )
            self.count += 1

    def release(self) -> None:
        with self._lock:
            self.count -= 1

    @contextlib.contextmanager
    def slot(self):
        self.acquire()
        try:
            yield
        finally:
            self.release()
