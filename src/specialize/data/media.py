"""Checks that a referenced image or audio file exists and can be read; image fingerprints.

An image reference is a file path or a `data:image/...;base64,` URL. Every image is opened,
fully decoded (a truncated file fails here, not in training), held to a pixel limit before it
is decoded (a decompression bomb is refused from its header), and its mode checked. Its
fingerprint is the sha256 of its bytes (for the manifest) and a 64-bit difference hash of its
pixels (for duplicate and leakage checks: the same photo re-encoded or resized keeps its hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Largest image accepted: 40 megapixels (a 20000x20000 PNG is 400). Above it PIL would decode
# gigabytes from a small file.
MAX_IMAGE_PIXELS = 40_000_000
# Modes that convert to RGB without losing what the picture shows.
IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1", "I;16", "I", "F")
# Two difference hashes this close (bits of 64) are the same picture.
SAME_IMAGE_BITS = 4


class ImageProblem(ValueError):
    """An image that cannot be used: category and message, for a defect or an HTTP 400."""

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class ImageInfo:
    """What the checks learned about one image."""

    width: int
    height: int
    mode: str
    sha256: str
    dhash: int
    bytes: int


def is_data_url(ref: str) -> bool:
    return ref.startswith("data:")


def decode_data_url(ref: str) -> bytes:
    """Return the bytes of a base64 `data:image/...` URL, or raise ImageProblem."""
    head, _, payload = ref.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ImageProblem(
            "bad_image_url", "expected a data:image/<type>;base64,<data> URL for an image"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageProblem(
            "unreadable_media", f"image data URL is not valid base64 ({exc})"
        ) from exc


def image_bytes(ref: str | Path) -> bytes:
    """Return the encoded bytes behind an image reference (a path or a data URL)."""
    if isinstance(ref, str) and is_data_url(ref):
        return decode_data_url(ref)
    path = Path(ref)
    if not path.exists():
        raise ImageProblem("missing_media", f"image file not found: {path}")
    if not path.is_file():
        raise ImageProblem("unreadable_media", f"image path is not a file: {path}")
    return path.read_bytes()


@contextmanager
def _pixel_limit(max_pixels: int):
    """PIL's bomb guard handed to our header check, its warning an error; restored afterwards."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    # Image.open reads only the header; decode_image checks the size right after it, before any
    # pixel is decoded, and can name the size (PIL's own refusal would come without it).
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, name: str = "image"):
    """Return the decoded RGB image in `data`, or raise ImageProblem saying what is wrong."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _pixel_limit(max_pixels):
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageProblem(
                    "image_too_large",
                    f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,}; downscale it",
                )
            if image.mode not in IMAGE_MODES:
                raise ImageProblem(
                    "bad_image_mode",
                    f"{name} has mode {image.mode}; expected one of RGB, RGBA, L, P",
                )
            image.load()  # decodes every pixel: a truncated file fails here
    except ImageProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(
            "image_too_large",
            f"{name} is over the limit of {max_pixels:,} pixels (decompression bomb guard: "
            f"{str(exc)[:60]}); downscale it",
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageProblem("unreadable_media", f"{name} is not an image PIL can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(
            "unreadable_media", f"cannot read {name} ({type(exc).__name__}: {str(exc)[:80]})"
        ) from exc
    if image.mode == "RGBA" or image.mode == "LA" or image.mode == "PA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return background
    return image.convert("RGB")


def load_image(ref: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS):
    """Return the RGB image behind a path or data URL, checked like every training image."""
    name = "image data URL" if isinstance(ref, str) and is_data_url(ref) else Path(ref).name
    return decode_image(image_bytes(ref), max_pixels=max_pixels, name=name)


def difference_hash(image) -> int:
    """Return a 64-bit difference hash: is each pixel brighter than its right neighbour (9x8 grey)."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def image_info(ref: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageInfo:
    """Return the checked image's size, mode, sha256 and difference hash (cached per file state)."""
    if isinstance(ref, str) and is_data_url(ref):
        return _image_info_of_url(ref, max_pixels)
    path = Path(ref)
    stat = path.stat() if path.is_file() else None
    return _image_info_of_file(
        str(path), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0, max_pixels
    )


@lru_cache(maxsize=65536)
def _image_info_of_file(path: str, mtime: int, size: int, max_pixels: int) -> ImageInfo:
    return _info(image_bytes(path), Path(path).name, max_pixels)


@lru_cache(maxsize=1024)
def _image_info_of_url(ref: str, max_pixels: int) -> ImageInfo:
    return _info(decode_data_url(ref), "image data URL", max_pixels)


def _info(data: bytes, name: str, max_pixels: int) -> ImageInfo:
    from PIL import Image

    image = decode_image(data, max_pixels=max_pixels, name=name)
    with _pixel_limit(max_pixels), Image.open(io.BytesIO(data)) as header:
        mode = header.mode
    return ImageInfo(
        image.width,
        image.height,
        mode,
        hashlib.sha256(data).hexdigest(),
        difference_hash(image),
        len(data),
    )


def check_media(path: Path | str, kind: str) -> tuple[str, str] | None:
    """Return (category, message) when the file is missing or unreadable, else None."""
    if kind == "image":
        try:
            image_info(path)
        except ImageProblem as exc:
            return exc.category, str(exc)
        return None
    path = Path(path)
    if not path.exists():
        return "missing_media", f"{kind} file not found: {path}"
    if not path.is_file():
        return "unreadable_media", f"{kind} path is not a file: {path}"
    try:
        _check_audio(path)
    except Exception as exc:
        return (
            "unreadable_media",
            f"cannot read {kind} {path.name} ({type(exc).__name__}: {str(exc)[:80]})",
        )
    return None


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
