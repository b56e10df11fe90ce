"""Which format a file is in, from its content: zip by magic bytes, otherwise the keys of
its first JSON record. File names are never trusted (uploads arrive as temp files)."""

from __future__ import annotations

from pathlib import Path

from .archive import is_zip
from .batch import batch_role
from .errors import ParseError
from .records import read_records
from .sources import Source, file_source, open_metered

_GZIP_MAGIC = b"\x1f\x8b"
_API_LOG_KEYS = {"request", "request_body", "response", "response_body"}
_EXPECTED = (
    "expected 'messages' (chat), 'request' and 'response' (api_log), 'custom_id' with 'body' "
    "or 'response' (batch), 'conversations' (ShareGPT) or 'mapping' (ChatGPT export); "
    "or name the format explicitly"
)


def detect_format(path: Path) -> str:
    """The format name (one of FORMATS) of the file at `path`."""
    return sniff(file_source(path, path.name))[0]


def sniff(source: Source) -> tuple[str, str | None]:
    """(format, batch role) of a source; the role is "input"/"output" for batch files."""
    with open_metered(source, None) as stream:
        head = stream.read(4)
    if is_zip(head):
        return "zip", None
    if head.startswith(_GZIP_MAGIC):
        raise ParseError(
            "gzip-compressed file: upload it uncompressed or inside a .zip", file=source.name
        )
    records = read_records(source, None)
    try:
        record = next(records, None)
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
        return ("chat_jsonl" if record.unit == "line" else "chat_json"), None
    if "conversations" in keys:
        return "sharegpt", None
    shown = ", ".join(sorted(keys)[:10]) or "none"
    raise record.error(f"cannot tell the format from the keys ({shown}): {_EXPECTED}")
