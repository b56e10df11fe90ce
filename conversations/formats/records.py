"""JSON records out of a byte stream, whatever the container: JSON Lines, a JSON array, or a
single JSON object. Every format parser consumes records, so "chat JSON" and "chat JSONL"
(or an api_log kept as a JSON array) share one parser.

Streaming: JSONL is read line by line; JSON documents go through ijson's event parser and
are built one top-level array item at a time, so a 1 GB export never sits in memory whole.
The item builder is ours rather than `ijson.items`: ijson tracks a prefix string per
nesting level, which grows quadratically on hostile input (100k nested arrays), and ours
stops at MAX_DEPTH instead.

Bounded: a JSONL line is read with a bounded readline, and a JSON document's bytes are
counted per record as the event parser pulls them, so a line or record (and so any string,
message or number inside it) over `max_record_bytes` is refused with its location after at
most that many bytes (plus one read chunk) were buffered, never materialised whole.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import ijson

from .errors import ParseError, describe
from .sources import READ_CHUNK, Meter, Source, open_metered

# Deeper than any real transcript (a tool schema nested 40 levels is still fine), shallow
# enough that json.dumps and equality checks downstream never hit the recursion limit.
MAX_DEPTH = 100
BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class Record:
    """One top-level JSON value and where it came from (line of a JSONL file, 1-based item
    of a JSON array, or None for a file holding a single JSON object)."""

    value: Any
    file: str
    number: int | None
    unit: str  # "line" or "record"
    # NUL characters (JSON "\u0000") were replaced by U+FFFD: PostgreSQL stores no NUL in
    # text or jsonb, and refusing a file OpenAI accepted would be worse than one changed
    # character (read_records says so in a warning naming the line).
    nul_replaced: bool = False

    @property
    def location(self) -> str:
        return self.file if self.number is None else f"{self.file} {self.unit} {self.number}"

    def error(self, message: str, field: str | None = None) -> ParseError:
        return ParseError(message, file=self.file, line=self.number, field=field, unit=self.unit)


def read_records(
    source: Source,
    meter: Meter | None,
    *,
    max_record_bytes: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> Generator[Record, None, None]:
    """Yield every record of `source`; raise ParseError on the first unreadable one, or
    the first line or record longer than `max_record_bytes`. `warn` hears of records whose
    NUL characters were replaced."""
    for record in _records(source, meter, max_record_bytes):
        if record.nul_replaced and warn is not None:
            warn(f"{record.location}: {NUL_WARNING}")
        yield record


NUL_WARNING = (
    "NUL characters (\\u0000) replaced by U+FFFD: the database cannot store them; the "
    "token counts are of the replaced text"
)


def _records(
    source: Source, meter: Meter | None, max_record_bytes: int | None
) -> Generator[Record, None, None]:
    with open_metered(source, meter) as stream:
        first, skipped, newlines = _skip_preamble(stream)
        if not first:
            raise ParseError("empty file", file=source.name)
        utf16 = _utf16_or_32(stream.peek(4)[:4])
        if utf16:
            raise ParseError(
                f"the file is {utf16} encoded; save it as UTF-8 and upload it again",
                file=source.name,
            )
        if first == b"[":
            yield from _json_records(stream, source, offset=skipped, limit=max_record_bytes)
        elif first == b"{":
            yield from _object_or_lines(
                stream, source, first_line=newlines + 1, offset=skipped, limit=max_record_bytes
            )
        else:
            shown = first.decode("latin-1")
            raise ParseError(
                f"not JSON: the file starts with {shown!r}, expected '[' or '{{' "
                "(a JSON array, a JSON object, or JSON Lines)",
                file=source.name,
            )


def _utf16_or_32(head: bytes) -> str:
    """The encoding of a file that is not UTF-8 but UTF-16 or UTF-32 (by its byte-order
    mark, or by the zero bytes beside its opening bracket), or ""."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    # Without a mark: an opening bracket with a zero byte beside it (UTF-16 "{" is
    # b"{\x00" or b"\x00{", UTF-32 has three zeros).
    zeros = head.count(b"\x00")
    if zeros and head.replace(b"\x00", b"")[:1] in (b"[", b"{"):
        return "UTF-32" if zeros >= 3 else "UTF-16"
    return ""


def _too_long(
    limit: int, source: Source, number: int | None, unit: str, field: str | None = None
) -> ParseError:
    what = "line" if unit == "line" else "record" if number is not None else "JSON document"
    return ParseError(
        f"this {what} is over the limit of {limit:,} bytes for one line or record; it was "
        "refused before being read whole (split it, or ask your admin to raise the limit)",
        file=source.name,
        line=number,
        field=field,
        unit=unit,
    )


def _field_path(stack: list[Any], keys: list[str]) -> str | None:
    """The JSON path (`messages[0].content`) of the value being read when a record was cut
    short: `stack` holds the containers open around it, `keys` each map's current key. A
    list's last item is the one being read if it is an open container, else the next one."""
    path = ""
    for depth, container in enumerate(stack):
        if isinstance(container, dict):
            if not keys[depth]:  # cut inside the key itself
                break
            path += f".{keys[depth]}" if path else keys[depth]
        else:
            open_child = depth + 1 < len(stack)
            path += f"[{len(container) - 1 if open_child else len(container)}]"
    return path or None


def _field_at_cut(prefix: bytes) -> str | None:
    """The path of the value a too-long line was cut in, from the part that was read (the
    limit's worth, already in memory). Deeper than MAX_DEPTH: no path."""
    stack: list[Any] = []
    keys: list[str] = []
    try:
        for event, value in ijson.basic_parse(io.BytesIO(prefix)):
            if event == "map_key":
                keys[-1] = value
            elif event in _OPENERS:
                if len(stack) >= MAX_DEPTH:
                    return None
                child: Any = {} if event == "start_map" else []
                if stack and isinstance(stack[-1], list):
                    stack[-1].append(None)
                stack.append(child)
                keys.append("")
            elif event in _CLOSERS:
                stack.pop()
                keys.pop()
            elif stack and isinstance(stack[-1], list):
                stack[-1].append(None)
    except ijson.JSONError:
        pass
    return _field_path(stack, keys)


def _skip_preamble(stream: io.BufferedReader) -> tuple[bytes, int, int]:
    """Consume a UTF-8 BOM and leading whitespace without reading past them.

    Returns the first significant byte (b"" at end of file), the bytes skipped and the
    newlines among them (JSONL line numbers must count blank lines)."""
    skipped = newlines = 0
    head = stream.peek(len(BOM))
    if head.startswith(BOM):
        stream.read(len(BOM))
        skipped = len(BOM)
    while True:
        chunk = stream.peek(READ_CHUNK)
        if not chunk:
            return b"", skipped, newlines
        stripped = chunk.lstrip(_WHITESPACE)
        blank = len(chunk) - len(stripped)
        newlines += chunk.count(b"\n", 0, blank)
        skipped += blank
        stream.read(blank)
        if stripped:
            return stripped[:1], skipped, newlines


def _readline(stream: io.BufferedReader, limit: int | None, source: Source, number: int) -> bytes:
    if limit is None:
        return stream.readline()
    line = stream.readline(limit + 1)
    if len(line) > limit and not line.endswith(b"\n"):
        raise _too_long(limit, source, number, "line", _field_at_cut(line))
    return line


def _object_or_lines(
    stream: io.BufferedReader, source: Source, *, first_line: int, offset: int, limit: int | None
) -> Iterator[Record]:
    line = _readline(stream, limit, source, first_line)
    try:
        value = _decode_line(line, source, first_line)
    except ParseError as err:
        # A pretty-printed object's first line ("{" or '{"mapping": {') is valid JSON cut
        # short at its very end; JSON strings cannot span lines, so anything else is a
        # malformed first line of a JSONL file.
        cause = err.__cause__
        if isinstance(cause, json.JSONDecodeError) and cause.pos >= len(cause.doc.rstrip()):
            yield from _json_records(_Prefixed(line, stream), source, offset=offset, limit=limit)
            return
        raise
    yield _as_record(value, source, first_line)
    number = first_line
    while raw := _readline(stream, limit, source, number + 1):
        number += 1
        if raw.strip():
            yield _as_record(_decode_line(raw, source, number), source, number)


def _decode_line(raw: bytes, source: Source, number: int) -> tuple[Any, bool]:
    """The line's value, and whether NUL characters in it were replaced."""
    if number == 1 and raw.startswith(BOM):
        raw = raw[len(BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"invalid UTF-8 at byte offset {exc.start} of the line "
            "(the file must be UTF-8 encoded)",
            file=source.name,
            line=number,
        ) from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"malformed JSON: {exc.msg} at column {exc.colno}", file=source.name, line=number
        ) from exc
    except RecursionError as exc:
        raise ParseError(
            f"JSON nested deeper than {MAX_DEPTH} levels", file=source.name, line=number
        ) from exc
    # Counting brackets is a cheap upper bound of the depth: walk the value only when it
    # could be too deep.
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(value):
        raise ParseError(
            f"JSON nested deeper than {MAX_DEPTH} levels", file=source.name, line=number
        )
    # JSON carries a NUL only as an escape: the text is searched (fast), the value walked
    # only when it may hold one (a "\\u0000" written as text leads to a walk that finds none).
    if "\\u0000" in text:
        return _nul_replaced(value)
    return value, False


def _as_record(decoded: tuple[Any, bool], source: Source, number: int) -> Record:
    value, nul = decoded
    return Record(value=value, file=source.name, number=number, unit="line", nul_replaced=nul)


def _nul_free(value: Any) -> tuple[Any, bool]:
    """A parsed record without NUL characters (ijson gives no text to search first: the
    value is walked, and copied only when it holds one)."""
    return _nul_replaced(value) if _holds_nul(value) else (value, False)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    return False


def _nul_replaced(value: Any) -> tuple[Any, bool]:
    """`value` with every NUL in its strings (keys too) replaced by U+FFFD, and whether
    there was one. Depth is bounded by MAX_DEPTH, checked before."""
    if isinstance(value, str):
        return (value.replace("\x00", "\ufffd"), True) if "\x00" in value else (value, False)
    if isinstance(value, list):
        items = [_nul_replaced(item) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    if isinstance(value, dict):
        replaced: dict[str, Any] = {}
        changed = False
        for key, item in value.items():
            # Two keys equal once replaced ("a\x00" and "a\ufffd") keep the later one: the rule
            # json.loads already applies to a key written twice, so no new case appears here.
            new_key, key_changed = _nul_replaced(key)
            replaced[new_key], item_changed = _nul_replaced(item)
            changed = changed or key_changed or item_changed
        return replaced, changed
    return value, False


def record_object(record: Record) -> dict[str, Any]:
    """The record as a JSON object, or an error saying what it is instead."""
    if not isinstance(record.value, dict):
        raise record.error(f"expected a JSON object, got {describe(record.value)}")
    return record.value


def _too_deep(value: Any) -> bool:
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


class _Prefixed:
    """A read()-able stream that first replays bytes already consumed."""

    def __init__(self, prefix: bytes, rest: io.BufferedReader) -> None:
        self._prefix = prefix
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                out, self._prefix = self._prefix, b""
                return out
            out, self._prefix = self._prefix[:size], self._prefix[size:]
            return out
        return self._rest.read(size)


class _Utf8Checked:
    """Validates UTF-8 ahead of the JSON parser, so the error can give a byte offset (the
    parser only says "invalid bytes"), and counts the bytes of the record being built:
    the parser buffers a whole string (or number) before it emits it, so the limit must
    stop the bytes going in, not check the values coming out."""

    def __init__(
        self,
        stream: io.BufferedReader | _Prefixed,
        source: Source,
        offset: int,
        limit: int | None = None,
    ) -> None:
        self._stream = stream
        self._source = source
        self._offset = offset
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._limit = limit
        # Where the record being read started (at a chunk's precision), and its number.
        self.record_start: int | None = None
        self.record: int | None = None
        # The containers and keys of the record being built (_build's own lists): where
        # in the record the limit was crossed.
        self.building: tuple[list[Any], list[str]] | None = None

    def start_record(self, number: int | None) -> None:
        self.record_start, self.record = self._offset, number

    def end_record(self) -> None:
        self.record_start = None

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        pending = len(self._decoder.getstate()[0])
        try:
            # ijson probes with read(0); only an empty answer to a real read is the end.
            self._decoder.decode(data, final=size != 0 and not data)
        except UnicodeDecodeError as exc:
            at = self._offset - pending + exc.start
            raise ParseError(
                f"invalid UTF-8 at byte offset {at:,} (the file must be UTF-8 encoded)",
                file=self._source.name,
                byte_offset=at,
            ) from exc
        self._offset += len(data)
        if (
            self._limit is not None
            and self.record_start is not None
            and self._offset - self.record_start > self._limit
        ):
            field = _field_path(*self.building) if self.building else None
            raise _too_long(self._limit, self._source, self.record, "record", field)
        return data


class _TooDeepError(Exception):
    pass


_OPENERS = {"start_map", "start_array"}
_CLOSERS = {"end_map", "end_array"}


def _json_records(
    stream: io.BufferedReader | _Prefixed, source: Source, *, offset: int, limit: int | None
) -> Iterator[Record]:
    checked = _Utf8Checked(stream, source, offset, limit)
    events = ijson.basic_parse(checked, use_float=True)
    number = 0
    try:
        event, value = next(events)
        if event == "start_map":
            # A single object is one record, from the file's first byte.
            checked.record_start = offset
            built, nul = _nul_free(_build(event, value, events, checked))
            yield Record(built, source.name, None, "record", nul_replaced=nul)
        else:  # the caller saw '['
            # Counted from the end of the previous item: the parser holds a scalar item
            # whole before its only event, so the bytes count before the record "starts".
            checked.start_record(1)
            for event, value in events:
                if event == "end_array":
                    break
                number += 1
                built, nul = _nul_free(_build(event, value, events, checked))
                checked.start_record(number + 1)
                yield Record(built, source.name, number, "record", nul_replaced=nul)
            checked.end_record()
        for _ in events:  # drains to the end, so trailing garbage is reported
            pass
    except _TooDeepError:
        raise ParseError(
            f"JSON nested deeper than {MAX_DEPTH} levels",
            file=source.name,
            line=number or None,
            unit="record",
        ) from None
    except ijson.JSONError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid JSON"
        raise ParseError(
            f"malformed JSON ({detail})",
            file=source.name,
            line=number or None,
            unit="record",
        ) from exc


def _build(event: str, value: Any, events: Iterator[tuple[str, Any]], checked: _Utf8Checked) -> Any:
    """Assemble one JSON value from parser events, iteratively and depth-limited."""
    if event not in _OPENERS:
        return value
    root: Any = {} if event == "start_map" else []
    stack: list[Any] = [root]
    keys: list[str] = [""]
    checked.building = (stack, keys)
    for event, value in events:
        if event == "map_key":
            keys[-1] = value
            continue
        if event in _CLOSERS:
            stack.pop()
            keys.pop()
            if not stack:
                return root
            continue
        child: Any = value
        if event in _OPENERS:
            child = {} if event == "start_map" else []
        parent = stack[-1]
        if isinstance(parent, list):
            parent.append(child)
        else:
            parent[keys[-1]] = child
        if event in _OPENERS:
            if len(stack) >= MAX_DEPTH:
                raise _TooDeepError
            stack.append(child)
            keys.append("")
    raise ijson.IncompleteJSONError("premature end of the JSON document")
