"""One request to an OpenAI-compatible chat endpoint (stdlib only), with errors that say which."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request


class EndpointError(Exception):
    """The endpoint could not be reached or answered with something other than a chat reply."""


def chat_completion(
    url: str,
    messages: list[dict],
    *,
    model: str | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int | None = None,
    api_key_env: str | None = None,
    timeout_s: float = 60.0,
) -> str:
    """Return the reply text of POST {url}/chat/completions; raise EndpointError with the reason."""
    body = {"model": model or "base", "messages": messages, "max_tokens": max_tokens}
    body["temperature"] = temperature
    if seed is not None:
        body["seed"] = seed
    headers = {"Content-Type": "application/json"}
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise EndpointError(f"environment variable {api_key_env} (the API key) is not set")
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        url.rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:200]
        exc.close()
        raise EndpointError(f"{url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise EndpointError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    except ValueError:
        raise EndpointError(f"{url}: the answer is not JSON") from None
    try:
        return str(payload["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"{url}: no choices[0].message.content in the answer") from None
