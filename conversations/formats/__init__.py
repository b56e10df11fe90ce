"""Transcript parsers: files in the formats teams actually have -> engine.types.Transcript.

Pure Python, no Django import. `parse_files` streams: JSONL line by line, JSON arrays one
item at a time, zip members without extracting them; the only formats that hold state
until the end are api_log (conversations are grouped across the whole log) and batch (the
output file is joined against the input file). Every problem is a ParseError naming the
file, line or record and field. A gzip-compressed file (`.json.gz`, `.jsonl.gz`) is read
as its decompressed content, streamed like any other file.

Formats (FORMATS): chat_json, chat_jsonl, api_log, batch, sharegpt, chatgpt_export, zip.
A named format picks the record parser; the container (JSON Lines, JSON array, single JSON
object) is always read from the content, so "chat_json" also reads a JSONL file. A zip is
recognized by its magic bytes whatever format is named, and its members are parsed with
the named format, or each detected when none is named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path

from conversations.engine.types import Transcript

from .api_log import parse_api_log
from .archive import is_zip, local_source, zip_sources
from .batch import INPUT, OUTPUT, parse_batch
from .chat import parse_chat
from .chatgpt_export import parse_chatgpt_export
from .detect import detect_format, sniff
from .errors import ParseError
from .records import Record, read_records
from .sharegpt import parse_sharegpt
from .sources import Meter, ProgressCallback, Source, file_source, open_metered

__all__ = ["FORMATS", "ParseError", "ProgressCallback", "detect_format", "parse_files"]

FORMATS = ("chat_json", "chat_jsonl", "api_log", "batch", "sharegpt", "chatgpt_export", "zip")

_PER_RECORD: dict[str, Callable[[Iterable[Record]], Iterator[Transcript]]] = {
    "chat_json": parse_chat,
    "chat_jsonl": parse_chat,
    "sharegpt": parse_sharegpt,
    "chatgpt_export": parse_chatgpt_export,
}


def parse_files(
    paths: list[Path],
    *,
    format: str | None = None,
    display_names: dict[Path, str] | None = None,
    max_bytes: int | None = None,
    max_record_bytes: int | None = None,
    max_ratio: float | None = None,
    on_progress: ProgressCallback | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_format: Callable[[str, str], None] | None = None,
) -> Iterator[Transcript]:
    """Yield every Transcript in `paths`, in file order (api_log and batch files last, as
    they are grouped or joined across files).

    format: one of FORMATS, or None to detect each file. display_names: temp path -> the
    user's file name, used in errors and locations. max_bytes: limit on the total bytes
    read (uncompressed for zip members), checked up front from declared sizes and again
    while reading. max_record_bytes: limit on one JSONL line, JSON array item or
    single-object file, enforced before it is held whole (so it bounds every string and
    message too). max_ratio: how many times its compressed size a gzip file or zip member
    may expand to. on_progress(bytes_read, total_bytes): called about once per MB and at
    the end. on_warning(text): hears what concerns a file rather than one conversation
    (archive members left out, a Batch pair that hardly matches). on_format(name, format):
    hears how each file (each archive member) is read, before any is.
    """
    if format is not None and format not in FORMATS:
        raise ParseError(f"unknown format {format!r} (expected one of {', '.join(FORMATS)})")
    names = display_names or {}
    # Expand every archive before parsing anything: an unsafe or oversized member in the
    # last zip must refuse the upload before the first transcript is yielded.
    sources: list[Source] = []
    for path in paths:
        sources.extend(
            _expand(path, names.get(path, path.name), format, max_bytes, max_ratio, on_warning)
        )
    total = sum(source.size for source in sources)
    declared = sum(source.size for source in sources if source.size_is_exact)
    if max_bytes is not None and declared > max_bytes:
        raise ParseError(
            f"{declared:,} bytes to read in all, over the limit of {max_bytes:,} bytes",
            file=", ".join(names.get(path, path.name) for path in paths),
        )
    # Sniffing reads only each file's first record, under its own budget (a gzip's first
    # record can be a bomb): the import's meter counts the bytes the parse itself reads, so
    # progress ends at exactly the total.
    plan = [
        (source, *_format_of(source, format, max_bytes, max_record_bytes)) for source in sources
    ]
    if on_format is not None:
        for source, kind, _role in plan:
            on_format(source.name, kind)
    meter = Meter(total=total, max_bytes=max_bytes, on_progress=on_progress)

    def records(chosen: list[Source]) -> Iterator[Record]:
        return chain.from_iterable(
            read_records(source, meter, max_record_bytes=max_record_bytes, warn=on_warning)
            for source in chosen
        )

    for source, kind, _role in plan:
        if kind in _PER_RECORD:
            yield from _PER_RECORD[kind](records([source]))
    # One log may be split across files (daily rotation): group all of them together.
    logs = [source for source, kind, _role in plan if kind == "api_log"]
    if logs:
        yield from parse_api_log(records(logs))
    inputs = [source for source, kind, role in plan if kind == "batch" and role == INPUT]
    outputs = [source for source, kind, role in plan if kind == "batch" and role == OUTPUT]
    if inputs or outputs:
        yield from parse_batch(records(inputs), records(outputs), warn=on_warning or _ignore)
    meter.finish()


def _expand(
    path: Path,
    name: str,
    format: str | None,
    max_bytes: int | None,
    max_ratio: float | None,
    warn: Callable[[str], None] | None,
) -> list[Source]:
    if path.is_dir():
        raise ParseError("is a directory, expected a file", file=name)
    with open_metered(file_source(path, name), None) as stream:
        head = stream.read(4)
    if is_zip(head):
        return zip_sources(path, name, max_bytes=max_bytes, warn=warn, max_ratio=max_ratio)
    if format == "zip":
        raise ParseError("not a zip archive", file=name)
    return [local_source(path, name, max_ratio=max_ratio)]


def _format_of(
    source: Source, format: str | None, max_bytes: int | None, max_record_bytes: int | None
) -> tuple[str, str | None]:
    if format is not None and (format in _PER_RECORD or format == "api_log"):
        return format, None
    kind, role = sniff(source, max_bytes=max_bytes, max_record_bytes=max_record_bytes)
    if kind == "zip":
        raise ParseError(
            "nested archives are not supported: extract this member (or decompress this "
            "file) and upload what it holds",
            file=source.name,
        )
    if format == "batch" and kind != "batch":
        raise ParseError(
            "not a Batch API file: expected 'custom_id' with 'body' (input) or 'response' "
            "(output) on each line",
            file=source.name,
        )
    return kind, role


def _ignore(_text: str) -> None:
    pass
