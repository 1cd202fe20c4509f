"""Who is labelling: each labeller gets their own signed token, so a label, an undo and an export
row belong to the person whose token made them (nobody declares a name on the page).

A token is the labeller's name and an HMAC-SHA256 of (session, name) under a secret kept in
$SPECIALIZE_HOME/feedback.key (made once, readable only by its owner), so tokens survive restarts
and a token of one session does not open another."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

from specialize.errors import ConfigError
from specialize.home import home_dir

MAX_NAME = 64


def issue(session: str, name: str) -> str:
    """Return the token that identifies `name` in `session`."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(ch in name for ch in "\r\n\t"):
        raise ConfigError([f"labeller name {name!r}: 1 to {MAX_NAME} characters on one line"])
    encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return f"{encoded}.{_sign(session, name)}"


def verify(session: str, token: str) -> str | None:
    """Return the labeller a token names in this session, or None for a forged or foreign one."""
    encoded, _, signature = token.partition(".")
    try:
        name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not name or not hmac.compare_digest(signature.encode(), _sign(session, name).encode()):
        return None
    return name


def _sign(session: str, name: str) -> str:
    message = f"{session}\0{name}".encode()
    return hmac.new(_secret(), message, hashlib.sha256).hexdigest()[:32]


def _secret() -> bytes:
    path = home_dir() / "feedback.key"
    if not path.exists():
        made = secrets.token_bytes(32)
        try:  # O_EXCL: of two processes making it at once, one writes and both read that one
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(handle, "wb") as file:
                file.write(made)
    for _ in range(50):  # another process may be writing it this very moment
        secret = path.read_bytes()
        if len(secret) == 32:
            return secret
        time.sleep(0.02)
    raise ConfigError(
        [f"{path}: not a 32-byte key; delete it to make a new one (old links stop working)"]
    )
