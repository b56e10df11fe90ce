"""Byte streams to parse: plain files and zip members, read under one byte budget.

Every parser reads through `open_metered`, so the size limit and the progress callback
hold for all formats alike, and a member whose header understates its size is still
stopped once the bytes actually read pass the limit. A compressed source also carries its
own ceiling (`expand_limit`, its compressed size times the allowed ratio), checked on the
bytes actually decompressed: a bomb is stopped a few chunks past the ratio, whatever its
headers say, and nothing it expands to is ever held whole.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import ParseError

ProgressCallback = Callable[[int, int], None]

# Report progress about once per megabyte: often enough for a progress bar, cheap enough
# to leave on for a 1 GB export.
PROGRESS_STEP = 1 << 20
READ_CHUNK = 1 << 16
# Below this, any ratio is allowed: a small file of repeated lines compresses far better
# than a big one, and a megabyte costs nothing to read.
RATIO_FLOOR = 1 << 20


def expand_limit(compressed: int, max_ratio: float | None) -> int | None:
    """The most bytes `compressed` bytes may decompress to under `max_ratio` (None: any)."""
    if max_ratio is None:
        return None
    return max(int(compressed * max_ratio), RATIO_FLOOR)


def ratio_error(name: str, compressed: int, max_ratio: float) -> ParseError:
    return ParseError(
        f"decompresses to more than {max_ratio:g} times its compressed size of "
        f"{compressed:,} bytes: refused as a decompression bomb",
        file=name,
    )


@dataclass(frozen=True, slots=True)
class Source:
    """One file to parse. `open` returns raw bytes; `size` is the (uncompressed) byte count
    known before reading, used for the limit check and as the progress total."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]
    # False when `size` is only a hint (a gzip trailer, unreadable on a truncated file): it
    # then drives progress but not the up-front limit check; the meter still enforces it.
    size_is_exact: bool = True
    # A compressed source: its size on disk and the ratio it may expand by (None: a plain
    # file, read as it is).
    compressed_size: int | None = None
    max_ratio: float | None = None


def file_source(path: Path, name: str) -> Source:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ParseError(f"cannot read the file ({exc.strerror or exc})", file=name) from exc
    return Source(name=name, size=size, open=lambda: path.open("rb"))


class Meter:
    """Counts bytes read across all sources of one import, enforces `max_bytes`, reports
    progress."""

    def __init__(
        self,
        *,
        total: int,
        max_bytes: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.total = total
        self.max_bytes = max_bytes
        self.on_progress = on_progress
        self.read = 0
        self._reported = 0

    def advance(self, n: int, source: Source) -> None:
        self.read += n
        if self.max_bytes is not None and self.read > self.max_bytes:
            raise ParseError(
                f"more than the limit of {self.max_bytes:,} bytes read; the file is larger "
                "than it declared (or grew while being read)",
                file=source.name,
            )
        if self.on_progress is not None and self.read - self._reported >= PROGRESS_STEP:
            self._reported = self.read
            self.on_progress(self.read, max(self.total, self.read))

    def finish(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.read, max(self.total, self.read))


class _MeteredRaw(io.RawIOBase):
    def __init__(self, inner: IO[bytes], meter: Meter | None, source: Source) -> None:
        self._inner = inner
        self._meter = meter
        self._source = source
        self._read = 0
        self._ceiling = (
            expand_limit(source.compressed_size, source.max_ratio)
            if source.compressed_size is not None
            else None
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except (zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError) as exc:
            # Corrupt or truncated compressed data: zipfile and gzip check CRCs and sizes
            # as they go (gzip raises EOFError for a cut-off file).
            raise ParseError(f"corrupt compressed data ({exc})", file=self._source.name) from exc
        n = len(data)
        buffer[:n] = data
        self._read += n
        if self._ceiling is not None and self._read > self._ceiling:
            assert self._source.compressed_size is not None and self._source.max_ratio
            raise ratio_error(
                self._source.name, self._source.compressed_size, self._source.max_ratio
            )
        if self._meter is not None:
            self._meter.advance(n, self._source)
        return n

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


def open_metered(source: Source, meter: Meter | None) -> io.BufferedReader:
    """A buffered binary stream over `source` that counts into `meter` (None: uncounted,
    for sniffing the head of a file)."""
    try:
        inner = source.open()
    except OSError as exc:
        raise ParseError(f"cannot read the file ({exc.strerror or exc})", file=source.name) from exc
    except zipfile.BadZipFile as exc:
        raise ParseError(f"corrupt archive member ({exc})", file=source.name) from exc
    return io.BufferedReader(_MeteredRaw(inner, meter, source), buffer_size=READ_CHUNK)
