"""Checks that a referenced image or audio file exists and can be read."""

from __future__ import annotations

import wave
from pathlib import Path

# Leading bytes of audio formats that the standard library cannot open itself.
_AUDIO_MAGIC = {
    b"fLaC": "flac",
    b"OggS": "ogg",
    b"ID3": "mp3",
    b"\xff\xfb": "mp3",
    b"\xff\xf3": "mp3",
}


def check_media(path: Path, kind: str) -> tuple[str, str] | None:
    """Return (category, message) when the file is missing or unreadable, else None."""
    if not path.exists():
        return "missing_media", f"{kind} file not found: {path}"
    if not path.is_file():
        return "unreadable_media", f"{kind} path is not a file: {path}"
    try:
        if kind == "image":
            _check_image(path)
        else:
            _check_audio(path)
    except Exception as exc:
        return (
            "unreadable_media",
            f"cannot read {kind} {path.name} ({type(exc).__name__}: {str(exc)[:80]})",
        )
    return None


def _check_image(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.verify()


def _check_audio(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        with wave.open(str(path)) as audio:
            if audio.getnframes() == 0:
                raise ValueError("no audio frames")
        return
    if not any(head.startswith(magic) for magic in _AUDIO_MAGIC):
        raise ValueError("not a wav, flac, ogg or mp3 file")
