"""OpenAI's image token rule, with sizes read from data-URL headers."""

from __future__ import annotations

import base64
import struct
import zlib

from conversations.engine.images import data_url_size, image_size, patch_tokens, tile_tokens
from conversations.engine.messages import encode_message
from conversations.engine.profiles import default_profile


def png(width: int, height: int) -> bytes:
    """A real (tiny-to-encode) grayscale PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def image_message(url: str, detail: str | None = None, **extra: int) -> dict[str, object]:
    image: dict[str, object] = {"url": url, **extra}
    if detail:
        image["detail"] = detail
    return {"role": "user", "content": [{"type": "image_url", "image_url": image}]}


def test_it_counts_a_generated_png_by_detail() -> None:
    profile = default_profile("gpt-4o")
    url = data_url(png(1024, 1024))
    low = encode_message(image_message(url, "low"), profile)
    high = encode_message(image_message(url, "high"), profile)
    auto = encode_message(image_message(url), profile)
    assert low.body == 85
    assert high.body == auto.body == 765  # 768x768 after scaling: 4 tiles
    assert high.unknown_images == 0


def test_it_scales_large_images_before_counting_tiles() -> None:
    assert tile_tokens(2048, 4096, base=85, tile=170) == 1105  # 768x1536: 6 tiles
    assert tile_tokens(512, 512, base=85, tile=170) == 255
    assert tile_tokens(100, 100, base=85, tile=170) == 255  # never scaled up
    assert tile_tokens(4096, 8192, base=85, tile=170) == 1105


def test_it_reads_sizes_from_every_supported_header() -> None:
    jpeg = (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", 16)
        + b"JFIF\x00"
        + bytes(9)
        + b"\xff\xc0"
        + struct.pack(">HBHH", 17, 8, 600, 800)
        + bytes(12)
    )
    gif = b"GIF89a" + struct.pack("<HH", 320, 240) + bytes(8)
    vp8x = (
        b"RIFF"
        + bytes(4)
        + b"WEBPVP8X"
        + bytes(8)
        + (1999).to_bytes(3, "little")
        + (999).to_bytes(3, "little")
    )
    bits = (640 - 1) | ((480 - 1) << 14)
    vp8l = (
        b"RIFF"
        + bytes(4)
        + b"WEBPVP8L"
        + bytes(4)
        + b"\x2f"
        + bits.to_bytes(4, "little")
        + (bytes(8))
    )
    assert image_size(jpeg) == (800, 600)
    assert image_size(gif) == (320, 240)
    assert image_size(vp8x) == (2000, 1000)
    assert image_size(vp8l) == (640, 480)
    assert image_size(b"not an image") is None
    # a JPEG's size can sit far beyond the first bytes of the data URL
    padded = b"\xff\xd8" + b"\xff\xe1" + struct.pack(">H", 5002) + bytes(5000) + jpeg[2 + 18 :]
    assert data_url_size(data_url(padded, "jpeg")) == (800, 600)


def test_it_reports_images_of_unknown_size() -> None:
    profile = default_profile("gpt-4o")
    remote = encode_message(image_message("https://example.com/a.png"), profile)
    assert (remote.body, remote.unknown_images) == (0, 1)
    sized = encode_message(
        image_message("https://example.com/a.png", width=512, height=512), profile
    )
    assert (sized.body, sized.unknown_images) == (255, 0)
    low = encode_message(image_message("https://example.com/a.png", "low"), profile)
    assert (low.body, low.unknown_images) == (85, 0)  # low detail needs no size


def test_it_uses_the_models_own_image_rates() -> None:
    url = data_url(png(1024, 1024))
    mini = encode_message(image_message(url, "low"), default_profile("gpt-4o-mini"))
    assert mini.body == 2833


def test_it_changes_the_prompt_when_the_image_changes() -> None:
    profile = default_profile("gpt-4o")
    one = encode_message(image_message(data_url(png(512, 512))), profile)
    other = encode_message(image_message(data_url(png(512, 511))), profile)
    assert len(one.tokens) == len(other.tokens) and one.tokens != other.tokens


def test_it_counts_patches_on_patch_based_models() -> None:
    # OpenAI's vision guide: 32px patches times the model's multiplier, at most 1536 patches.
    assert patch_tokens(128, 128, multiplier=2.46) == 40  # 16 patches; ruby_llm.jsonl line 1
    assert patch_tokens(640, 480, multiplier=1.72) == 516  # 300 patches (o4-mini)
    assert patch_tokens(1024, 1024, multiplier=1.0) == 1024
    # the guide's example: 1800x2400 is scaled to fit 1536 patches, then whole patches
    assert patch_tokens(1800, 2400, multiplier=1.0) == 1452
    url = data_url(png(128, 128))
    nano = encode_message(image_message(url), default_profile("gpt-4.1-nano"))
    assert nano.body == 40
    assert encode_message(image_message(url), default_profile("gpt-4o")).body == 255  # tiles
    assert encode_message(image_message(url), default_profile("gpt-5")).body == 70 + 140
