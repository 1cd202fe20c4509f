"""The door of every web app `specialize` serves (`serve`, `ui`, `feedback serve`), as plain ASGI
middleware so every decision is made on the ASGI scope, the same path the router matches:

- Host header: a server bound to loopback answers only to loopback names, so a web page on
  another site cannot reach it through DNS rebinding;
- keys: with an API key, every path but `/health` needs `Authorization: Bearer KEY`; paths under
  `/admin` need the admin key instead (without an admin key they are closed once any key is set);
  compared in constant time;
- body size: bytes are counted as they arrive, so a chunked body past the limit gets 413 without
  being read to its end or parsed; a route may have its own limit (audio uploads: 25 MiB, while
  the JSON routes keep 1 MB).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field

LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
OPEN_PATHS = frozenset({"/health"})
log = logging.getLogger("specialize.serve")


@dataclass(frozen=True)
class Access:
    api_key: str | None = None
    admin_key: str | None = None
    max_body_bytes: int = 1_000_000
    local_only: bool = True  # bound to loopback: check the Host header
    path_limits: dict[str, int] = field(default_factory=dict)  # exact path -> its own body limit

    def body_limit(self, path: str) -> int:
        return self.path_limits.get(path, self.max_body_bytes)


def same_secret(given: str, expected: str) -> bool:
    """Compare two secrets in time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode(), expected.encode())


def host_name(header: str) -> str:
    """The name part of a Host header ("[::1]:8000" -> "[::1]", "localhost:80" -> "localhost")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    def __init__(self, app, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.monotonic(), []

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self._guarded(scope, receive, send_logged)
        finally:
            entry = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status[0] if status else None,
                "model": scope.get("state", {}).get("model"),
                "ms": round(1000 * (time.monotonic() - started), 1),
            }
            log.info(json.dumps(entry))

    async def _guarded(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["path"], headers)
        if refusal:
            return await _answer(send, *refusal)
        declared = headers.get("content-length", "")
        limit = self.access.body_limit(scope["path"])
        if declared and (not declared.isdigit() or int(declared) > limit):
            return await _answer(send, 413, f"request body over {limit} bytes")
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") and not declared:
            return await self.app(scope, receive, send)
        body, more, extra = bytearray(), True, []
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before the body ended
                extra.append(message)
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await _answer(send, 413, f"request body over {limit} bytes")
        replayed = False

        async def replay():
            nonlocal replayed
            if extra:
                return extra.pop(0)
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _refusal(self, path: str, headers: dict) -> tuple[int, str, str] | None:
        access = self.access
        if access.local_only and host_name(headers.get("host", "")) not in LOOPBACK_NAMES:
            return (
                400,
                "Host header not allowed: this server answers only to localhost",
                "invalid_request_error",
            )
        if path in OPEN_PATHS or not (access.api_key or access.admin_key):
            return None
        given = headers.get("authorization", "")
        if path == "/admin" or path.startswith("/admin/"):
            if not access.admin_key:
                return (
                    403,
                    "loading and unloading adapters needs a server started with --admin-key",
                    "permission_error",
                )
            if not same_secret(given, f"Bearer {access.admin_key}"):
                return (
                    401,
                    "missing or wrong admin key (Authorization: Bearer ADMIN_KEY)",
                    "authentication_error",
                )
            return None
        if access.api_key and not same_secret(given, f"Bearer {access.api_key}"):
            return (
                401,
                "missing or wrong API key (Authorization: Bearer KEY)",
                "authentication_error",
            )
        return None


async def _answer(send, status: int, message: str, kind: str = "invalid_request_error") -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
