"""Which format a file is in, from its content: zip by magic bytes, otherwise the keys of
its first JSON record (a gzip file's once decompressed). File names are never trusted
(uploads arrive as temp files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .archive import is_gzip, is_zip, local_source
from .batch import batch_role
from .errors import ParseError
from .records import Record, read_records
from .sources import Meter, Source, open_metered

_API_LOG_KEYS = {"request", "request_body", "response", "response_body"}
_EXPECTED = (
    "expected 'messages' (chat), 'request' and 'response' (api_log), 'custom_id' with 'body' "
    "or 'response' (batch), 'conversations' (ShareGPT) or 'mapping' (ChatGPT export); "
    "or name the format explicitly"
)


def detect_format(path: Path) -> str:
    """The format name (one of FORMATS) of the file at `path` (gzip: of its content)."""
    return sniff(local_source(path, path.name))[0]


def _no_more(records: Iterator[Record]) -> bool:
    """Whether the records end here. A broken next line is a next line: the parse says
    what is wrong with it, naming its line."""
    try:
        return next(records, None) is None
    except ParseError:
        return False


def sniff(
    source: Source, *, max_bytes: int | None = None, max_record_bytes: int | None = None
) -> tuple[str, str | None]:
    """(format, batch role) of a source; the role is "input"/"output" for batch files.
    Reading stops at `max_bytes`, or `max_record_bytes` of the first record, even when the
    first record has not ended."""
    with open_metered(source, None) as stream:
        head = stream.read(4)
    if is_zip(head):
        return "zip", None
    if is_gzip(head):  # compressed twice, or a .gz member of a zip
        raise ParseError(
            "gzip-compressed data inside a gzip or a zip is not supported: decompress it "
            "and upload the file",
            file=source.name,
        )
    meter = Meter(total=source.size, max_bytes=max_bytes)
    records = read_records(source, meter, max_record_bytes=max_record_bytes)
    try:
        record = next(records, None)
        # A file of one line is one JSON document, whichever way it was written: a chat in
        # it is read as Chat JSON, as the same chat indented is. Only a second line makes
        # it JSONL (records stop at max_record_bytes, so the peek is bounded too).
        alone = record is not None and record.unit == "line" and _no_more(records)
    finally:
        records.close()
    if record is None:
        raise ParseError("empty JSON array: no records", file=source.name)
    if not isinstance(record.value, dict):
        raise record.error("expected a JSON object; cannot tell the format")
    keys = set(record.value)
    role = batch_role(keys)
    # From the most distinctive key ("mapping", "custom_id") to the most generic
    # ("messages"), so a record carrying extra keys still lands in its own format.
    if "mapping" in keys:
        return "chatgpt_export", None
    if role is not None:
        return "batch", role
    if keys & _API_LOG_KEYS:
        return "api_log", None
    if "messages" in keys:
        return ("chat_jsonl" if record.unit == "line" and not alone else "chat_json"), None
    if "conversations" in keys:
        return "sharegpt", None
    shown = ", ".join(sorted(keys)[:10]) or "none"
    raise record.error(f"cannot tell the format from the keys ({shown}): {_EXPECTED}")
