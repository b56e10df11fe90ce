"""Token cost of `image_url` parts, by OpenAI's documented rules (512px tiles or 32px patches).

Owns: an image part's token cost, and reading an image's size from its header.

low detail: the base cost, whatever the size. high/auto: fit within 2048x2048, then scale the
shortest side down to 768, then base + per-tile cost for every 512px tile. The size is read
from the image header of a base64 data URL (PNG, JPEG, GIF, WebP) or from explicit
width/height on the part; a remote URL of unknown size counts 0 and is reported as unknown.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass
from typing import Any

# Enough base64 for every fixed-offset header (PNG, GIF, WebP); JPEG may need the whole file.
_HEADER_CHARS = 64
# JPEG start-of-frame markers carry the size; C4, C8 and CC are other segment types.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True, slots=True)
class ImageCost:
    tokens: int
    known: bool  # False: size unknown, tokens is 0 and the caller should warn


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14+14 bits, minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes, minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF or WebP header, or None."""
    for sniff in (_png_size, _gif_size, _webp_size, _jpeg_size):
        size = sniff(data)
        if size is not None:
            return size
    return None


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        return None


def data_url_size(url: str) -> tuple[int, int] | None:
    """Size of the image in a `data:image/...;base64,` URL, or None for anything else."""
    if not url.startswith("data:"):
        return None
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        return None
    head = _b64(payload[:_HEADER_CHARS])
    size = image_size(head) if head else None
    if size is None:  # JPEG keeps its size after EXIF and tables: read the whole file
        whole = _b64(payload)
        size = image_size(whole) if whole else None
    return size


def tile_tokens(width: int, height: int, *, base: int, tile: int) -> int:
    """High-detail cost: fit in 2048x2048, shortest side down to 768, count 512px tiles."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(round(w, 6) / 512) * math.ceil(round(h, 6) / 512)
    return base + tile * tiles


# Patch-based models (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano) count 32px patches, at
# most 1536 (a larger image is scaled down to fit), times a per-model multiplier (profiles.py).
PATCH = 32
PATCH_CAP = 1536


def patch_tokens(width: int, height: int, *, multiplier: float) -> int:
    """OpenAI's documented patch rule; the product is rounded up (gpt-4.1-nano's 16 patches
    of a 128px square: 40 tokens, ruby_llm.jsonl line 1)."""
    w, h = float(width), float(height)
    if math.ceil(w / PATCH) * math.ceil(h / PATCH) > PATCH_CAP:
        shrink = math.sqrt(PATCH_CAP * PATCH * PATCH / (w * h))
        w, h = w * shrink, h * shrink
        # then shrink further so that whole patches along each side fit the cap
        shrink = min(math.floor(w / PATCH) / (w / PATCH), math.floor(h / PATCH) / (h / PATCH))
        w, h = w * shrink, h * shrink
    patches = math.ceil(round(w, 6) / PATCH) * math.ceil(round(h, 6) / PATCH)
    return math.ceil(round(patches * multiplier, 6))


def _explicit_size(part: dict[str, Any], image: dict[str, Any]) -> tuple[int, int] | None:
    for holder in (image, part):
        width, height = holder.get("width"), holder.get("height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            return width, height
    return None


def image_part_cost(
    part: dict[str, Any], *, base: int, tile: int, patch_multiplier: float | None = None
) -> ImageCost:
    """Cost of one `{"type": "image_url", "image_url": {"url", "detail"}}` part: by 32px
    patches when the model has a patch multiplier, else by 512px tiles."""
    image = part.get("image_url")
    if isinstance(image, str):  # some logs flatten the object to its URL
        image = {"url": image}
    if not isinstance(image, dict):
        return ImageCost(0, known=False)
    if image.get("detail") == "low" and patch_multiplier is None:
        return ImageCost(base, known=True)
    size = _explicit_size(part, image)
    url = image.get("url")
    if size is None and isinstance(url, str):
        size = data_url_size(url)
    if size is None:
        return ImageCost(0, known=False)
    if patch_multiplier is not None:
        return ImageCost(patch_tokens(*size, multiplier=patch_multiplier), known=True)
    return ImageCost(tile_tokens(*size, base=base, tile=tile), known=True)
