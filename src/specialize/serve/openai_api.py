"""OpenAI-compatible endpoints over a ModelHost and its batching Engine: /v1/models,
/v1/chat/completions and /v1/completions (streaming and not), /health, and admin endpoints that
load or unload adapters by registry name. The request's `model` is "base" or an adapter name;
never a path.

Every request becomes engine input in one place (`_job`): new request kinds (image parts, audio)
add their conversion there. Every answer is read from the engine's events by `_collect` or
`_EventStream`, which cancel the row when the client goes away or stops reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from specialize.adapters.engine import Engine, Event, Job, QueueFull
from specialize.adapters.host import ModelHost
from specialize.errors import SpecializeError
from specialize.models.generation import GenerationSettings, render_prompt_ids

log = logging.getLogger("specialize.serve")


@dataclass
class Limits:
    max_tokens: int = 512  # most tokens one request may ask for
    max_body_bytes: int = 1_000_000
    max_in_flight: int = 64  # requests running or queued in the engine; more get 429
    api_key: str | None = None  # Bearer token required on every route but /health when set
    admin_key: str | None = None  # Bearer token for /admin (loading, unloading, status)
    max_batch: int = 32  # rows decoded together in one forward
    write_timeout_s: float = 10.0  # a client that stops reading loses its stream after this
    max_image_bytes: int = 4_000_000  # one image in a chat request, decoded (more: 413)
    max_image_pixels: int = 16_000_000  # one image's width x height (more: 400)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.headers = headers


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict]  # a list: OpenAI content parts (text, image_url as a data URL)


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (n=1, ...)
    model: str = Field(..., max_length=200)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None  # {"include_usage": true}: a last chunk with the usage

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s or len(s) > 200 for s in stops):
            raise ApiError(400, "stop: up to 4 non-empty strings of at most 200 characters")
        return tuple(stops)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)


class CompletionRequest(_Sampling):
    prompt: str


class AdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def add_openai_routes(app: FastAPI, host: ModelHost, limits: Limits) -> Engine:
    engine = Engine(host, max_batch=limits.max_batch, max_in_flight=limits.max_in_flight)
    app.state.host, app.state.engine = host, engine
    app.router.on_shutdown.append(engine.stop)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.kind, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, problems[:2000])

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}  # liveness only: models and load are behind the keys

    @app.get("/v1/models")
    def models() -> dict:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "specialize",
                    **_prompt_format(host, name),
                }
                for name in host.names()
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        messages, images = _with_images([m.model_dump() for m in body.messages], limits)
        if images:
            return await _image_answer(body, request, messages, images)
        if body.model in host.names():  # an unknown model gets its 404 from _job
            host.check_format(body.model, messages)
        return await _answer(
            request, body, "chat", lambda: render_prompt_ids(host.tokenizer, messages)
        )

    async def _image_answer(body: ChatRequest, request: Request, messages, images) -> dict:
        """A vision adapter's answer. Image rows are not batched: the projector's features go in
        place of the prompt's embeddings, so the request holds the model (the engine waits)."""
        name = _model(body.model, host, request)
        if body.stream:
            raise ApiError(400, "streaming is not supported for requests with images")
        wanted = body.max_tokens or min(256, limits.max_tokens)
        if wanted > limits.max_tokens:
            raise ApiError(
                400, f"max_tokens {wanted} is over this server's limit of {limits.max_tokens}"
            )
        settings = GenerationSettings(
            max_new_tokens=wanted, temperature=body.temperature, top_p=body.top_p, seed=body.seed
        )
        reply = await run_in_threadpool(
            _run, lambda: host.chat_with_images(name, messages, images, settings)
        )
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        return _chat_body(name, reply.text, reply.finish_reason, usage)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        if body.model in host.names():
            host.check_format(body.model, body.prompt)
        return await _answer(
            request, body, "text", lambda: host.tokenizer(body.prompt)["input_ids"]
        )

    async def _answer(request: Request, body: _Sampling, kind: str, prompt_ids):
        job, events = _job(request, body, host, engine, limits, prompt_ids)
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return _EventStream(job, events, kind, limits.write_timeout_s, usage)
        await _collect(job, events, request)
        return (_chat_response if kind == "chat" else _text_response)(job)

    @app.get("/admin/status")
    def status() -> dict:
        return {"base": host.model_ref, "models": host.names(), "in_flight": engine.in_flight}

    @app.post("/admin/adapters")
    def load_adapter(body: AdapterRequest) -> dict:
        entry = _run(lambda: host.load(_registry_name(body.name)))
        return {"loaded": entry["name"], "models": host.names()}

    @app.delete("/admin/adapters/{name}")
    def unload_adapter(name: str) -> dict:
        _run(lambda: host.unload(_registry_name(name)))
        return {"unloaded": name, "models": host.names()}

    return engine


def _job(request, body: _Sampling, host: ModelHost, engine: Engine, limits: Limits, prompt_ids):
    """The one place a request becomes engine input: model, prompt tokens, settings, stops.
    Everything is checked here, before any generation starts."""
    name = _model(body.model, host, request)
    ids = _run(prompt_ids)
    room = engine.context - len(ids)
    if body.max_tokens is None:
        wanted = max(1, min(256, limits.max_tokens, room))
    elif body.max_tokens > limits.max_tokens:
        raise ApiError(
            400, f"max_tokens {body.max_tokens} is over this server's limit of {limits.max_tokens}"
        )
    else:
        wanted = body.max_tokens
    if len(ids) + wanted > engine.context:
        raise ApiError(
            400,
            f"the prompt has {len(ids)} tokens and max_tokens is {wanted}: {len(ids) + wanted} "
            f"in all, over the model's context of {engine.context} tokens",
            code="context_length_exceeded",
        )
    settings = GenerationSettings(
        max_new_tokens=wanted, temperature=body.temperature, top_p=body.top_p, seed=body.seed
    )
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()

    def notify(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody listens
            loop.call_soon_threadsafe(events.put_nowait, event)

    job = Job(name, ids, settings, body.stops(), notify)
    try:
        engine.submit(job)
    except QueueFull as exc:
        raise ApiError(
            429,
            exc.one_line(),
            "rate_limit_error",
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    except SpecializeError as exc:
        raise ApiError(400, exc.one_line()) from exc
    return job, events


async def _next(events: asyncio.Queue, job: Job) -> Event:
    event = await events.get()
    if event.kind == "error":
        error = event.error
        if isinstance(error, SpecializeError):
            raise ApiError(503, error.one_line(), "server_error")
        raise ApiError(500, f"generation failed: {type(error).__name__}", "server_error")
    return event


async def _collect(job: Job, events: asyncio.Queue, request: Request) -> None:
    """Wait for the whole reply; cancel the row when the client goes away first."""
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        while True:
            getter = asyncio.ensure_future(_next(events, job))
            await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                job.cancel()
                raise ApiError(499, "client closed the request")
            if getter.result().kind == "done":
                return
    finally:
        gone.cancel()
        job.cancel()  # a no-op for a finished row


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _EventStream(Response):
    """Server-sent events in OpenAI's chunk format, ending with [DONE]. Each write has a timeout,
    so a client that stops reading loses only its own stream; leaving cancels the row."""

    def __init__(
        self, job: Job, events: asyncio.Queue, kind: str, write_timeout_s: float, usage: bool
    ):
        super().__init__(media_type="text/event-stream")
        self.job, self.events, self.kind, self.timeout = job, events, kind, write_timeout_s
        self.usage = usage
        self.ident = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def chunk(self, text: str | None, finish: str | None = None, first: bool = False) -> bytes:
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            kind = "text_completion"
        body = {
            "id": self.ident,
            "object": kind,
            "created": self.created,
            "model": self.job.adapter,
            "choices": [choice],
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    def usage_chunk(self) -> bytes:
        kind = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        body = {"id": self.ident, "object": kind, "created": self.created}
        body |= {"model": self.job.adapter, "choices": [], "usage": _usage(self.job)}
        return f"data: {json.dumps(body)}\n\n".encode()

    async def __call__(self, scope, receive, send) -> None:
        gone = asyncio.ensure_future(_disconnected(receive))
        gone.add_done_callback(lambda _: self.job.cancel())

        async def write(data: bytes, more: bool = True) -> None:
            message = {"type": "http.response.body", "body": data, "more_body": more}
            await asyncio.wait_for(send(message), self.timeout)

        try:
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
            await asyncio.wait_for(send(start), self.timeout)
            if self.kind == "chat":
                await write(self.chunk(None, first=True))
            while not gone.done():
                getter = asyncio.ensure_future(self.events.get())
                await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                event = getter.result()
                if event.kind == "text":
                    await write(self.chunk(event.text))
                elif event.kind == "done":
                    await write(self.chunk(None, event.text))
                    if self.usage:
                        await write(self.usage_chunk())
                    await write(b"data: [DONE]\n\n", more=False)
                    break
                else:
                    error = {
                        "error": {
                            "message": f"generation failed: {event.error}",
                            "type": "server_error",
                        }
                    }
                    await write(f"data: {json.dumps(error)}\n\n".encode(), more=False)
                    break
        except (TimeoutError, OSError):
            log.info("stream %s dropped: the client stopped reading or left", self.ident)
        finally:
            self.job.cancel()
            gone.cancel()


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


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": code}},
        status_code=status,
        headers=headers,
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


def _run(action):
    try:
        return action()
    except SpecializeError as exc:
        status = 404 if type(exc).__name__ == "NotFoundError" else 400
        raise ApiError(status, exc.one_line()) from exc


def _usage(job: Job) -> dict:
    return {
        "prompt_tokens": len(job.prompt_ids),
        "completion_tokens": len(job.generated),
        "total_tokens": len(job.prompt_ids) + len(job.generated),
    }


def _chat_response(job: Job) -> dict:
    return _chat_body(job.adapter, job.text, job.finish_reason, _usage(job))


def _chat_body(model: str, text: str, finish_reason: str, usage: dict) -> dict:
    """A chat.completion in OpenAI's format."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }


def _text_response(job: Job) -> dict:
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": job.adapter,
        "choices": [
            {"index": 0, "text": job.text, "finish_reason": job.finish_reason, "logprobs": None}
        ],
        "usage": _usage(job),
    }


def _prompt_format(host, name: str) -> dict:
    """An adapter's training layout and, once requests differed from it, the skew warning."""
    training = host.formats.get(name)
    if training is None or training.layout is None:
        return {}
    info = {"training_format": training.layout.describe()}
    if name in host.format_warnings:
        warning = host.format_warnings[name]
        info["prompt_format_warning"] = warning["warning"]
        info["requests_skewed"] = warning["requests_skewed"]
    return info
