"""Gzip-compressed files (rotated `.jsonl.gz` logs): read as their decompressed content."""

import gzip
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]


def _gzip(source: Path, target: Path) -> Path:
    target.write_bytes(gzip.compress(source.read_bytes()))
    return target


@pytest.mark.parametrize(
    "name", ["chat_records.json", "sharegpt_variants.jsonl", "api_log_conversation_id.jsonl"]
)
def test_it_reads_a_gzipped_file_exactly_like_the_plain_one(
    samples: Path, parse: Parse, tmp_path: Path, name: str
) -> None:
    packed = _gzip(samples / name, tmp_path / f"{name}.gz")
    plain = parse(samples / name)
    # shown under the plain name, so that locations ("<file> record 2") compare equal too
    assert parse(packed, display_names={packed: name}) == plain
    assert plain  # the fixture holds transcripts: the comparison is not vacuous
    assert parse(packed)[0].location == f"{name}.gz {plain[0].location.split(' ', 1)[1]}"


def test_it_names_the_gzipped_file_line_and_field_in_errors(
    samples: Path, parse: Parse, tmp_path: Path
) -> None:
    packed = _gzip(samples / "chat_malformed_line3.jsonl", tmp_path / "log.jsonl.gz")
    with pytest.raises(ParseError) as plain:
        parse(samples / "chat_malformed_line3.jsonl")
    with pytest.raises(ParseError) as caught:
        parse(packed)
    assert caught.value.file == "log.jsonl.gz"
    assert caught.value.line == plain.value.line == 3


def test_it_reports_truncated_and_corrupt_gzip_data(
    samples: Path, parse: Parse, tmp_path: Path
) -> None:
    data = gzip.compress((samples / "sharegpt_variants.jsonl").read_bytes() * 50)
    torn = tmp_path / "torn.jsonl.gz"
    torn.write_bytes(data[: len(data) // 2])
    for limit in (None, 1_000_000):  # a cut-off trailer's size is garbage: not "too large"
        with pytest.raises(ParseError, match=r"torn\.jsonl\.gz: corrupt compressed data"):
            parse(torn, max_bytes=limit)
    garbled = tmp_path / "garbled.jsonl.gz"
    garbled.write_bytes(data[:20] + bytes(b ^ 0x5A for b in data[20:]))
    with pytest.raises(ParseError, match=r"garbled\.jsonl\.gz: corrupt compressed data"):
        parse(garbled)


def test_it_stops_a_gzip_bomb_at_the_byte_limit(parse: Parse, tmp_path: Path) -> None:
    # 20 MB of blanks compress to ~20 kB; a forged trailer claims 10 bytes.
    bomb = bytearray(gzip.compress(b"[" + b" " * 20_000_000 + b"]"))
    bomb[-4:] = (10).to_bytes(4, "little")
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(bomb)
    with pytest.raises(ParseError, match=r"more than the limit of 1,000,000 bytes") as caught:
        parse(path, max_bytes=1_000_000)
    assert caught.value.file == "bomb.json.gz"


def test_it_refuses_a_zip_inside_gzip(parse: Parse, tmp_path: Path) -> None:
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("a.jsonl", b"{}\n")
    packed = _gzip(inner, tmp_path / "inner.zip.gz")
    with pytest.raises(ParseError, match="nested archives are not supported"):
        parse(packed)


def test_it_counts_progress_in_decompressed_bytes(
    samples: Path, parse: Parse, tmp_path: Path
) -> None:
    plain = samples / "sharegpt_variants.jsonl"
    packed = _gzip(plain, tmp_path / "s.jsonl.gz")
    seen: list[tuple[int, int]] = []
    parse(packed, on_progress=lambda done, total: seen.append((done, total)))
    size = plain.stat().st_size
    assert seen[-1] == (size, size)


def test_it_stops_a_gzip_past_the_ratio_even_when_its_trailer_lies(
    parse: Parse, tmp_path: Path
) -> None:
    line = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    bomb = bytearray(gzip.compress(line * 200_000))  # 10 MB in ~30 kB
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(bomb)
    # An honest trailer: refused before a byte is decompressed.
    with pytest.raises(ParseError, match="more than 20 times its compressed size") as caught:
        parse(path, max_ratio=20)
    assert caught.value.file == "bomb.jsonl.gz"
    # Without a ratio limit the same file is read.
    assert len(parse(path)) == 200_000
    # A forged one: stopped once the bytes decompressed pass the floor of the ratio.
    bomb[-4:] = (10).to_bytes(4, "little")
    path.write_bytes(bomb)
    with pytest.raises(ParseError, match="refused as a decompression bomb"):
        parse(path, max_ratio=20)
