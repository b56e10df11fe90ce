"""Reading a chat-completions request body for the built-in endpoint without parsing the
history it re-sends (design.md 2.9).

A conversation sends all of its messages again on every call. The parse of a request's body
is kept as bytes: everything up to the end of its last message. The next request of the
same conversation starts with exactly those bytes (a byte comparison, memcmp), so it is
read from there on: its new messages are parsed, the messages before are the previous
request's objects, and so are the fields after them when their text is the previous
request's again (a conversation's options seldom change). The result is what json.loads
gives for the whole body; anything this reader does not follow (another layout, a
duplicated "messages" key, whitespace the scan does not expect) is read by json.loads
instead.

The bodies read share their objects (messages, fields) with the parses kept and with later
reads: callers never change them. Pure Python, no Django; not thread-safe (the caller holds
a lock).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Bodies whose parse is kept, per reader (one reader per simulated organization), and the
# bytes they may hold in all: a bounded memory for a long-running endpoint.
KEPT_BODIES = 64
KEPT_BYTES = 32 << 20
# Bytes compared first, at the end of a kept prefix (its last message, which tells two
# conversations with the same system prompt apart): a miss costs a short comparison.
PROBE = 64

_decoder = json.JSONDecoder()
# The decoder's C scanner itself: (value, end) of the JSON value at an index, as raw_decode
# gives without its Python frame; StopIteration when no value starts there.
_scan: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]
_WHITESPACE = " \t\n\r"

# check(body, start): refuses a body (raises) unless it is a request; its messages before
# `start` were checked when first read.
BodyCheck = Callable[[Any, int], None]


class _NotFollowed(Exception):
    """The body is not laid out as this reader follows; json.loads reads it."""


@dataclass(slots=True)
class _Kept:
    body: bytes  # a request's body, kept whole (a slice would be a copy)
    end: int  # where its last message ends: the prefix the next request repeats
    head: dict[str, Any]  # the fields before "messages"
    messages: list[Any]
    # Its text after the messages' "]", to the end, and their parse: a request that ends with
    # the same text has the same fields (the usual: a conversation's options do not change).
    fields: str
    rest: dict[str, Any]
    # Set once when kept (_kept, _renew), not on each comparison (_match): the prefix as a
    # view (not a copy), and its last PROBE bytes, from probe_at.
    prefix: bytes | memoryview  # a view of body (mypyc cannot name memoryview alone here)
    probe_at: int
    probe: bytes


def _kept(
    body: bytes,
    end: int,
    head: dict[str, Any],
    messages: list[Any],
    fields: str,
    rest: dict[str, Any],
) -> _Kept:
    probe_at = end - PROBE if end > PROBE else 0
    prefix = memoryview(body)[:end]
    return _Kept(body, end, head, messages, fields, rest, prefix, probe_at, body[probe_at:end])


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WHITESPACE:
        at += 1
    return at


def _expect(text: str, at: int, char: str) -> int:
    at = _skip(text, at)
    if at >= len(text) or text[at] != char:
        raise _NotFollowed
    return at + 1


def _messages_on(text: str, at: int, messages: list[Any]) -> tuple[int, int]:
    """Reads array elements from `at` (just after "[" or after a kept element): appends
    them to `messages`; (where the last element read ends, where the array ends)."""
    last_end = at
    at = _skip(text, at)
    if at < len(text) and text[at] not in ",]" and not messages:  # the first element
        value, at = _decoder.raw_decode(text, at)
        messages.append(value)
        last_end = at
        at = _skip(text, at)
    while at < len(text) and text[at] == ",":
        if not messages:
            raise _NotFollowed
        value, at = _decoder.raw_decode(text, _skip(text, at + 1))
        messages.append(value)
        last_end = at
        at = _skip(text, at)
    return last_end, _expect(text, at, "]")


def _rest(text: str, at: int) -> dict[str, Any]:
    """The fields after the messages, up to the body's end."""
    at = _skip(text, at)
    if at < len(text) and text[at] == ",":
        if text[_skip(text, at + 1) : _skip(text, at + 1) + 1] != '"':  # ", }" is not JSON
            raise _NotFollowed
        rest: dict[str, Any] = json.loads("{" + text[at + 1 :])
    else:
        at = _expect(text, at, "}")
        if text[at:].strip(_WHITESPACE):
            raise _NotFollowed
        rest = {}
    # A field again takes the later value as in json.loads (a dict's update does too), but a
    # second "messages" would make the messages read here, and checked, not the body's.
    if "messages" in rest:
        raise _NotFollowed
    return rest


def _tail(raw: bytes, kept: _Kept) -> tuple[list[Any], int, str, dict[str, Any]] | None:
    """The usual rest of a body after the prefix `kept` holds: `,{new message},...]` then
    compact fields `,"name":value...}` or `}`. The new messages are read in one scan, as an
    array (its first "," decoded as "[": one copy of the tail, and where the array closes
    tells where the last message ends); the fields are `kept`'s again when their text is,
    else read in one scan, as an object. The new messages, where the last one ends (in
    bytes, in `raw`), the fields' text and the fields; None for another layout (the element
    by element reader then reads it, or refuses it as json.loads would)."""
    start = kept.end  # after a "}": a character boundary
    text = "[" + raw[start + 1 :].decode()
    try:
        new, after = _scan(text, 0)
    except (StopIteration, ValueError):  # not JSON here: told apart on the longer path
        return None
    fields, rest = kept.fields, kept.rest
    if len(text) - after != len(fields) or not text.endswith(fields):
        fields = text[after:]
        parsed = _fields(fields)
        if parsed is None:
            return None
        rest = parsed
    last = after - 1  # the "]"; whitespace before it is not the last message's
    while text[last - 1] in _WHITESPACE:
        last -= 1
    if len(text) != len(raw) - start:  # not ASCII: the offset in bytes
        last = len(text[:last].encode())
    return new, start + last, fields, rest


def _fields(text: str) -> dict[str, Any] | None:
    """The fields after the messages' "]" in the usual layout: `,"name":value...}` or `}`;
    None for another."""
    try:
        if text.startswith(',"'):
            rest, end = _scan("{" + text[1:], 0)
        elif text.startswith("}"):
            rest, end = {}, 1
        else:
            return None
    except (StopIteration, ValueError):
        return None
    if end < len(text) and text[end:].strip(_WHITESPACE):
        return None
    if "messages" in rest:  # a second "messages" (json.loads takes it): not followed
        return None
    return rest  # type: ignore[no-any-return]


def _byte_offset(text: str, chars: int, ascii_only: bool) -> int:
    return chars if ascii_only else len(text[:chars].encode())


class BodyReader:
    """One simulated organization's kept parses."""

    def __init__(self) -> None:
        # By id of the body, in the order read (a read moves its entry to the end).
        self.kept: dict[int, _Kept] = {}
        self.bytes = 0
        # The latest read that grew a kept request: its messages, and the kept request's
        # messages they start with (the very objects).
        self.grown: tuple[list[Any], list[Any]] | None = None

    def base(self, messages: object) -> list[Any] | None:
        """The list of messages `messages` starts with, item for item the same objects,
        when `messages` is the latest body's read after a kept one's: its previous
        request's (as read, so never changed since). Else None."""
        grown = self.grown
        return grown[1] if grown is not None and grown[0] is messages else None

    def read(self, raw: bytes, check: BodyCheck) -> dict[str, Any]:
        """The body of `raw` (as json.loads(raw) would give it), passed by `check` (which
        raises to refuse it; only a body it passed is kept). Raises ValueError (or
        UnicodeDecodeError) as json.loads does on a body that is not JSON."""
        self.grown = None
        kept = self._match(raw)
        if kept is not None:
            try:
                return self._read_on(raw, kept, check)
            except (_NotFollowed, ValueError):  # UnicodeDecodeError is a ValueError
                pass
        try:
            return self._read_whole(raw, check)
        except (_NotFollowed, ValueError):  # json.loads decides, and says what is wrong
            body = json.loads(raw)
            check(body, 0)
            return body  # type: ignore[no-any-return]

    def _match(self, raw: bytes) -> _Kept | None:
        for kept in reversed(self.kept.values()):  # the latest first
            # (False when raw is shorter: no length to check first)
            if raw.startswith(kept.probe, kept.probe_at) and raw.startswith(kept.prefix):
                return kept
        return None

    def _read_on(self, raw: bytes, kept: _Kept, check: BodyCheck) -> dict[str, Any]:
        start = kept.end
        tail = _tail(raw, kept) if raw.startswith(b",{", start) else None
        if tail is None:  # another layout: element by element
            text = raw[start:].decode()
            messages = list(kept.messages)
            last, after = _messages_on(text, 0, messages)
            fields, rest = text[after:], _rest(text, after)
            end = start + _byte_offset(text, last, len(text) == len(raw) - start)
        else:
            new, end, fields, rest = tail
            messages = kept.messages + new
        body = {**kept.head, "messages": messages, **rest}
        check(body, len(kept.messages))
        self.grown = (messages, kept.messages)  # (before _renew changes `kept` in place)
        self._renew(kept, raw, end, messages, fields, rest)
        return body

    def _read_whole(self, raw: bytes, check: BodyCheck) -> dict[str, Any]:
        text = raw.decode()
        head: dict[str, Any] = {}
        at = _expect(text, 0, "{")
        while True:
            at = _skip(text, at)
            if at >= len(text) or text[at] != '"':
                raise _NotFollowed
            key, at = _decoder.raw_decode(text, at)
            at = _expect(text, at, ":")
            if key == "messages":
                break
            head[key], at = _decoder.raw_decode(text, _skip(text, at))
            at = _expect(text, at, ",")
        at = _expect(text, at, "[")
        messages: list[Any] = []
        last, after = _messages_on(text, at, messages)
        rest = _rest(text, after)
        body = {**head, "messages": messages, **rest}
        check(body, 0)
        if messages:
            end = _byte_offset(text, last, len(text) == len(raw))
            self._add(_kept(raw, end, head, messages, text[after:], rest))
        return body

    def _renew(
        self,
        kept: _Kept,
        raw: bytes,
        end: int,
        messages: list[Any],
        fields: str,
        rest: dict[str, Any],
    ) -> None:
        """The conversation moved on: its entry holds its latest request now, renewed in
        place (no new object) and moved to the end."""
        entries = self.kept
        gone = len(kept.body)
        del entries[id(kept.body)]
        again = entries.pop(id(raw), None)  # the same request again, kept by another entry
        if again is not None:
            gone += len(again.body)
        self.bytes += len(raw) - gone
        # The fields _kept sets.
        probe_at = end - PROBE if end > PROBE else 0
        kept.body, kept.end, kept.messages = raw, end, messages
        kept.fields, kept.rest = fields, rest
        kept.prefix, kept.probe_at, kept.probe = memoryview(raw)[:end], probe_at, raw[probe_at:end]
        entries[id(raw)] = kept
        if self.bytes > KEPT_BYTES:  # (renewing never adds an entry)
            self._trim()

    def _add(self, kept: _Kept) -> None:
        raw = kept.body
        again = self.kept.pop(id(raw), None)  # the same request again: kept anew
        if again is not None:
            self.bytes -= len(again.body)
        self.kept[id(raw)] = kept
        self.bytes += len(raw)
        self._trim()

    def _trim(self) -> None:
        kept = self.kept
        while len(kept) > KEPT_BODIES or self.bytes > KEPT_BYTES:
            gone = kept.pop(next(iter(kept)))  # the least recently read
            self.bytes -= len(gone.body)
