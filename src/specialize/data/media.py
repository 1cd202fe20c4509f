"""Checks that a referenced image or audio file exists and can be read."""

from __future__ import annotations

from pathlib import Path


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
    """Decode the recording and apply the speech checks (rate, duration, silence) with defaults."""
    from specialize.data.audio import AudioLimits, audio_problems, inspect_audio

    limits = AudioLimits()
    info = inspect_audio(path, max_decode_seconds=limits.max_seconds)
    errors = [
        message for _, message, severity in audio_problems(info, limits) if severity == "error"
    ]
    if errors:
        raise ValueError("; ".join(errors))
