"""The server under load and under attack: many mixed clients through the official `openai`
client (streaming and not, some leaving early, one never reading), every route behind its key,
Host header, context, body and number limits, disconnects, 429, and SIGTERM under load."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.unit.adapters.test_engine import random_adapter

KEY, ADMIN = "inference-key", "admin-key"
MODELS = ("base", "creative", "terse", "formal")
PROMPTS = ["Hi", "How do I block my card?", "What does a transfer to a joint account cost?"]


@pytest.fixture(scope="module")
def load_home(tmp_path_factory, tiny_model_dir):
    from specialize.adapters import registry

    home = tmp_path_factory.mktemp("load-home")
    old = os.environ.get("SPECIALIZE_HOME")
    os.environ["SPECIALIZE_HOME"] = str(home)
    try:
        for seed, name in enumerate(MODELS[1:]):
            # strong enough (alpha/r = 4) that every adapter answers visibly differently
            random_adapter(tiny_model_dir, home / name, seed, "all-linear", r=4, lora_alpha=16)
            registry.register(name, home / name, base_model=str(tiny_model_dir))
    finally:
        os.environ.pop("SPECIALIZE_HOME") if old is None else os.environ.update(SPECIALIZE_HOME=old)
    return home


def start(app):
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, port


@pytest.fixture(scope="module")
def server(load_home, tiny_model_dir):
    from specialize.adapters.host import ModelHost
    from specialize.serve.app import create_app
    from specialize.serve.openai_api import Limits

    old = os.environ.get("SPECIALIZE_HOME")
    os.environ["SPECIALIZE_HOME"] = str(load_home)
    try:
        host = ModelHost(str(tiny_model_dir), list(MODELS[1:]))
    finally:
        os.environ.update(SPECIALIZE_HOME=old) if old else os.environ.pop("SPECIALIZE_HOME")
    limits = Limits(
        max_tokens=64, max_body_bytes=200_000, max_in_flight=200, api_key=KEY, admin_key=ADMIN
    )
    app = create_app(host, limits)
    instance, thread, port = start(app)
    yield app, port
    instance.should_exit = True
    thread.join(10)


def raw(port, method, path, body=b"", headers=None, read=True):
    """One HTTP/1.1 request over a plain socket; return (status, body text) or the socket."""
    head = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    head |= {"Content-Length": str(len(body))} if body is not None else {}
    head |= headers or {}
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall("\r\n".join(lines).encode() + (body or b""))
    if not read:
        return sock
    return parse(sock, bodiless=method == "HEAD")


def parse(sock, bodiless=False):
    data = b""
    sock.settimeout(20)
    while chunk := sock.recv(65536):
        data += chunk
        if bodiless and b"\r\n\r\n" in data:
            break
        if b"\r\n\r\n" in data and b"content-length" in data.lower():
            head, _, rest = data.partition(b"\r\n\r\n")
            size = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(rest) >= size:
                break
    sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest.decode(errors="replace")


def in_flight(port):
    status, body = raw(port, "GET", "/admin/status", None, {"Authorization": f"Bearer {ADMIN}"})
    assert status == 200, body
    return json.loads(body)["in_flight"]


def wait_idle(port, seconds=10):
    deadline = time.monotonic() + seconds
    while in_flight(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    return in_flight(port)


def chat_body(model="base", prompt="Hi", **extra):
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}]} | extra
    ).encode()


def test_many_mixed_clients_each_get_their_own_adapters_answer(server):
    from openai import OpenAI

    app, port = server
    host = app.state.host
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
    alone = {
        (m, p): host.chat(m, [{"role": "user", "content": p}], settings(12)).text
        for m in MODELS
        for p in PROMPTS
    }
    assert len(set(alone.values())) >= 9  # the adapters answer differently
    jobs = [(m, p, i) for i in range(4) for m in MODELS for p in PROMPTS]  # 48 requests

    # one client asks for a long stream and never reads it
    silent = raw(
        port,
        "POST",
        "/v1/chat/completions",
        chat_body(max_tokens=64, stream=True),
        {"Authorization": f"Bearer {KEY}"},
        read=False,
    )

    def ask(job):
        model, prompt, kind = job
        messages = [{"role": "user", "content": prompt}]
        if kind == 0:
            reply = client.chat.completions.create(model=model, messages=messages, max_tokens=12)
            return job, reply.choices[0].message.content
        stream = client.chat.completions.create(
            model=model, messages=messages, max_tokens=12, stream=True
        )
        if kind == 3:  # leaves after the first piece
            next(iter(stream))
            stream.close()
            return job, None
        return job, "".join(c.choices[0].delta.content or "" for c in stream)

    started = time.monotonic()
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(ask, jobs))
    assert time.monotonic() - started < 60
    answered = [(job, text) for job, text in results if text is not None]
    assert len(answered) == 36
    for (model, prompt, _), text in answered:
        assert text == alone[(model, prompt)], (model, prompt)
    silent.close()
    assert wait_idle(port) == 0


def settings(tokens):
    from specialize.models.generation import GenerationSettings

    return GenerationSettings(max_new_tokens=tokens)


def test_every_route_without_the_key_is_refused(server):
    app, port = server
    paths = {
        (route.path, method)
        for route in app.routes
        for method in getattr(route, "methods", ()) or ()
    }
    assert ("/v1/chat/completions", "POST") in paths and ("/admin/status", "GET") in paths
    assert not any(path.startswith("/api/runs") or path == "/" for path, _ in paths)  # no dashboard
    for path, method in sorted(paths):
        concrete = path.replace("{name}", "creative")
        status, body = raw(port, method, concrete, b"{}" if method == "POST" else None)
        expected = 200 if path == "/health" else 401
        assert status == expected, (method, path, body)
        if path.startswith("/admin"):  # the inference key is not the admin key
            status, _ = raw(port, method, concrete, b"{}", {"Authorization": f"Bearer {KEY}"})
            assert status == 401
    status, body = raw(port, "GET", "/health", None)
    assert json.loads(body) == {"status": "ok"}
    # the router and the guard see the same path: tricks with encodings or slashes do not slip by
    for path in ("//v1/models", "/v1/models/", "/%761/models", "/admin/../v1/models"):
        assert raw(port, "GET", path, None)[0] in (401, 404)


def test_a_foreign_host_header_is_refused(server):
    _, port = server
    status, body = raw(port, "GET", "/health", None, {"Host": "x?"})
    assert status == 400 and "Host header" in body
    status, _ = raw(port, "GET", "/health", None, {"Host": "evil.example:80"})
    assert status == 400
    assert raw(port, "GET", "/health", None, {"Host": "localhost:1234"})[0] == 200


def test_limits_answer_fast_and_clearly(server):
    _, port = server
    auth = {"Authorization": f"Bearer {KEY}"}
    started = time.monotonic()
    status, body = raw(
        port, "POST", "/v1/chat/completions", chat_body(prompt="word " * 2100, max_tokens=10), auth
    )
    assert status == 400 and "context of 2048" in body and "max_tokens is 10" in body
    assert time.monotonic() - started < 5
    for bad in (
        {"seed": -1},
        {"seed": 2**70},
        {"temperature": 9},
        {"top_p": 0},
        {"max_tokens": "many"},
        {"max_tokens": 10**12},
        {"stop": ["a"] * 9},
    ):
        status, body = raw(port, "POST", "/v1/chat/completions", chat_body(**bad), auth)
        assert status == 400, (bad, body)
    status, body = raw(
        port, "POST", "/v1/chat/completions", b'{"model": "base", "messages": [', auth
    )
    assert status == 400


def chunked_flood(port, path, extra=""):
    """Send an endless chunked body; return how much went out before the server answered."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode())
    piece, sent = b"x" * 65536, 0
    try:
        while sent < 64 * 2**20:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
    except OSError:  # the server answered and closed: it did not wait for the rest
        pass
    return sent, parse(sock)


@pytest.mark.parametrize("kind", ["ui", "feedback"])
def test_the_dashboard_and_the_feedback_page_count_body_bytes_too(kind, home):
    from specialize.serve.app import create_app
    from specialize.serve.feedback_api import FeedbackSession

    app = create_app() if kind == "ui" else create_app(feedback=FeedbackSession("s"))
    instance, thread, port = start(app)
    try:
        sent, (status, body) = chunked_flood(port, "/api/feedback/label")
        assert status == 413 and "1000000 bytes" in body and sent < 64 * 2**20
    finally:
        instance.should_exit = True
        thread.join(10)


def test_a_chunked_body_past_the_limit_gets_413_without_being_read(server):
    _, port = server
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode())
    piece = b"x" * 65536
    sent = 0
    try:
        while sent < 64 * 2**20:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
    except OSError:  # the server answered and closed: it did not wait for the rest
        pass
    assert sent < 64 * 2**20
    status, body = parse(sock)
    assert status == 413 and "200000 bytes" in body


def test_immediate_disconnects_bring_in_flight_back_to_zero(server):
    _, port = server
    auth = {"Authorization": f"Bearer {KEY}"}
    for index in range(100):
        body = chat_body(prompt=PROMPTS[index % 3], max_tokens=64, stream=index % 2 == 0)
        raw(port, "POST", "/v1/chat/completions", body, auth, read=False).close()
    assert wait_idle(port) == 0


def test_a_full_queue_answers_429_with_retry_after(tiny_model_dir):
    from specialize.adapters.host import ModelHost
    from specialize.serve.app import create_app
    from specialize.serve.openai_api import Limits

    host = ModelHost(str(tiny_model_dir))
    instance, thread, port = start(create_app(host, Limits(max_tokens=2000, max_in_flight=2)))
    try:
        long = chat_body(max_tokens=2000, stream=True)
        busy = [raw(port, "POST", "/v1/chat/completions", long, read=False) for _ in range(2)]
        time.sleep(0.3)
        sock = raw(port, "POST", "/v1/chat/completions", chat_body(), read=False)
        sock.settimeout(10)
        answer = sock.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 429") and "retry-after:" in answer.lower()
        for s in busy + [sock]:
            s.close()
    finally:
        instance.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module", autouse=True)
def subprocess_server(tmp_path_factory, tiny_model_dir):
    """`specialize serve` in its own process, started first so its start overlaps the other tests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("sigterm")
    env = os.environ | {"SPECIALIZE_HOME": str(folder / "home")}
    command = [sys.executable, "-m", "specialize.cli.main", "serve", "--model", str(tiny_model_dir)]
    with (folder / "serve.log").open("w") as log:
        server = subprocess.Popen(
            [*command, "--port", str(port), "--max-tokens", "2000"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield server, port, folder / "serve.log"
    if server.poll() is None:
        server.kill()
        server.wait()


def test_sigterm_under_load_stops_the_server_within_seconds(subprocess_server):
    server, port, log = subprocess_server
    deadline = time.monotonic() + 90
    while True:
        try:
            if raw(port, "GET", "/health", None)[0] == 200:
                break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()
            time.sleep(0.2)
    streams = [
        raw(
            port,
            "POST",
            "/v1/chat/completions",
            chat_body(max_tokens=2000, stream=True),
            read=False,
        )
        for _ in range(8)
    ]
    time.sleep(1)
    assert server.poll() is None
    server.send_signal(signal.SIGTERM)
    started = time.monotonic()
    server.wait(15)
    assert time.monotonic() - started < 8, log.read_text()
    for stream in streams:
        stream.close()


def test_binding_beyond_loopback_needs_a_key_or_insecure(cli, tiny_model_dir):
    code, _, err = cli("serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0")
    assert code == 2 and "needs --api-key" in err and "--insecure" in err
    code, _, err = cli("serve", "--host", "0.0.0.0", "--api-key", "k", "--admin-key", "k")
    assert code == 2 and "must differ" in err


def test_a_client_that_stops_reading_loses_only_its_own_stream(server):
    import asyncio

    from openai import OpenAI

    from specialize.adapters.engine import Job
    from specialize.models.generation import GenerationSettings, render_prompt_ids
    from specialize.serve.openai_api import _EventStream

    app, port = server
    engine = app.state.engine
    ids = render_prompt_ids(engine.host.tokenizer, [{"role": "user", "content": "Hi"}])
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)

    async def stalled_client():
        loop = asyncio.get_running_loop()
        events = asyncio.Queue()
        job = Job(
            "creative",
            ids,
            GenerationSettings(max_new_tokens=2000),
            notify=lambda e: loop.call_soon_threadsafe(events.put_nowait, e),
        )
        engine.submit(job)
        sent = []

        async def send(message):  # after three writes the client's buffers are full
            sent.append(message)
            if len(sent) > 3:
                await asyncio.Event().wait()

        async def receive():  # it neither sends anything nor leaves
            await asyncio.Event().wait()

        started = time.monotonic()
        others = loop.run_in_executor(
            None,
            lambda: client.chat.completions.create(
                model="terse", messages=[{"role": "user", "content": "Hi"}], max_tokens=12
            ),
        )
        await _EventStream(job, events, "chat", 0.5, False)({}, receive, send)
        return job, time.monotonic() - started, await others

    job, took, other = asyncio.run(stalled_client())
    assert took < 5 and job.cancelled and len(job.generated) < 2000
    assert other.choices[0].finish_reason == "length"  # served while the stalled stream waited
    assert wait_idle(port) == 0
