"""Images in chat requests: OpenAI `image_url` content parts, base64 data URLs only.

The server never fetches a URL and never opens a path named in a request: an `http(s)://`,
`file:` or bare path is refused with a 400 before anything is read. A data URL is decoded and
held to a byte limit (413) and a pixel limit checked from the image header before decoding (400).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from specialize.data.media import ImageProblem, decode_image


@dataclass
class ImageLimits:
    max_image_bytes: int = 4_000_000  # decoded bytes of one image
    max_image_pixels: int = 16_000_000  # width x height of one image
    max_images: int = 4  # images in one request


class RequestImageError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def request_images(messages: list[dict], limits: ImageLimits) -> tuple[list[dict], list]:
    """Return the messages (image parts as {"type": "image"}, text parts joined) and the images.

    Raises RequestImageError (400 or 413) for a URL or path, bad base64, a broken or huge image.
    """
    out, images = [], []
    for index, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            out.append(message)
            continue
        parts = []
        for pindex, part in enumerate(content):
            where = f"messages[{index}].content[{pindex}]"
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                images.append(_decode(url, where, limits))
                parts.append({"type": "image"})
            else:
                raise RequestImageError(
                    400, f"{where}: expected a text or image_url part, got type {kind!r}"
                )
        if not any(p["type"] == "image" for p in parts):
            parts = "".join(p["text"] for p in parts)  # text parts only: plain text
        out.append({**message, "content": parts})
    if len(images) > limits.max_images:
        raise RequestImageError(
            400,
            f"{len(images)} images in one request; this server takes at most {limits.max_images}",
        )
    return out, images


def _decode(url, where: str, limits: ImageLimits):
    if not isinstance(url, str) or not url.startswith("data:image/"):
        raise RequestImageError(
            400,
            f"{where}: images are accepted only as base64 data URLs (data:image/png;base64,...); "
            "this server never fetches a URL or opens a path",
        )
    head, _, payload = url.partition(",")
    if not head.endswith(";base64"):
        raise RequestImageError(400, f"{where}: the data URL must be base64 encoded")
    # A base64 text of n characters holds about 3n/4 bytes: refuse before decoding it.
    if len(payload) * 3 // 4 > limits.max_image_bytes:
        raise RequestImageError(
            413, f"{where}: image over {limits.max_image_bytes:,} bytes; send a smaller one"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestImageError(400, f"{where}: invalid base64 ({exc})") from exc
    try:
        return decode_image(data, max_pixels=limits.max_image_pixels, name=where)
    except ImageProblem as exc:
        raise RequestImageError(400, str(exc)) from exc
