"""Requests rendered into token sequences, each message encoded once (design.md 2.4, 2.6).

A request renders as: tools block, response-format schema, every message (overhead
placeholders, role, name, content...), reply priming; its length is `count_request`. In the
manual flow each request extends the previous one, so a `TranscriptRenderer` keeps one growing
*chain* (message tokens, full-block hashes, the partial block still open) and a call only pays
for the messages it adds: no history is re-tokenized and no shared block is re-hashed.
"""

from __future__ import annotations

import bisect
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain as chain_iter
from itertools import islice
from typing import Any, overload

from .cache import ROOT_HASH, STEP, hash_blocks_into
from .tokens import (
    EncodedMessage,
    ModelProfile,
    encode_message,
    encode_response_format,
    encode_tools,
    priming_tokens,
)
from .types import ChatMessage


class EncodingCache:
    """Encoded messages shared between analyses of the same message objects (the strategies
    of one transcript re-send the same dicts). Keyed by identity, checked against reuse."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, ModelProfile], tuple[ChatMessage, EncodedMessage]] = {}

    def encode(self, message: ChatMessage, profile: ModelProfile) -> EncodedMessage:
        key = (id(message), profile)
        item = self._items.get(key)
        if item is None or item[0] is not message:
            item = (message, encode_message(message, profile))
            self._items[key] = item
        return item[1]


@functools.lru_cache(maxsize=64)
def _reencode(profile: ModelProfile, message_json: str) -> list[int]:
    # Diagnosis reads back a few blocks after token lists were released; shared system
    # prompts make the same message come back often, hence the cache.
    return encode_message(json.loads(message_json), profile).tokens


class MessageTokens:
    """Each message of one transcript encoded once for one profile; lengths always stay.

    Token lists cost ~36 bytes a token as Python ints, and holding a whole transcript's
    evicts them from the CPU caches. In the manual flow a message is hashed once, so its
    tokens are dropped as soon as they are consumed; once requests stop extending each other
    (a window, a trim) `retain` is set and tokens are kept: re-encoding at most once each."""

    def __init__(
        self, messages: list[ChatMessage], profile: ModelProfile, cache: EncodingCache | None = None
    ) -> None:
        self.messages = messages
        self.profile = profile
        self._cache = cache
        self._tokens: list[list[int] | None] = [None] * len(messages)
        self._length = [-1] * len(messages)
        self._body = [0] * len(messages)
        self._unknown = [0] * len(messages)
        self.retain = False
        self._released = False

    def _encode(self, index: int) -> list[int]:
        message = self.messages[index]
        if self._released:  # diagnosis reading back after the analysis: a small LRU
            return _reencode(self.profile, json.dumps(message, sort_keys=True, default=str))
        if self._cache is not None:
            encoded = self._cache.encode(message, self.profile)
        else:
            encoded = encode_message(message, self.profile)
        self._length[index] = len(encoded.tokens)
        self._body[index] = encoded.body
        self._unknown[index] = encoded.unknown_images
        self._tokens[index] = encoded.tokens
        return encoded.tokens

    def tokens(self, index: int) -> list[int]:
        tokens = self._tokens[index]
        return tokens if tokens is not None else self._encode(index)

    def length(self, index: int) -> int:
        if self._length[index] < 0:
            self._encode(index)
        return self._length[index]

    def body(self, index: int) -> int:
        self.length(index)
        return self._body[index]

    def unknown_images(self, index: int) -> int:
        self.length(index)
        return self._unknown[index]

    def consumed(self, index: int) -> None:
        if not self.retain:
            self._tokens[index] = None

    def release(self) -> None:
        self._tokens = [None] * len(self.messages)
        self._released = True


class BlockView(Sequence[int]):
    """A call's block hashes: the first `count` hashes of its chain (shared, never copied)
    plus the block(s) closed by its reply priming."""

    __slots__ = ("_base", "_count", "_length", "_tail")

    def __init__(self, base: list[int], count: int, tail: tuple[int, ...]) -> None:
        self._base = base
        self._count = count
        self._tail = tail
        self._length = count + len(tail)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            start, stop, stride = index.indices(self._length)
            if stride != 1:
                return [self[i] for i in range(start, stop, stride)]
            head = self._base[start : min(stop, self._count)]
            return [*head, *self._tail[max(0, start - self._count) : max(0, stop - self._count)]]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._base[index] if index < self._count else self._tail[index - self._count]

    def __iter__(self) -> Iterator[int]:
        return chain_iter(islice(self._base, self._count), self._tail)


@dataclass(slots=True)
class _Chain:
    """The token stream of the latest request: header, then messages in request order."""

    header_key: str
    header: list[int]
    indices: list[int]
    offsets: list[int]  # token offset where each message starts
    length: int
    hashes: list[int]  # chained hashes of every full block so far
    pending: list[int]  # tokens after the last full block (fewer than one block)
    unknown: int  # images of unknown size in the messages so far

    def append(self, index: int, tokens: list[int], unknown: int, step: int) -> None:
        self.indices.append(index)
        self.offsets.append(self.length)
        self.unknown += unknown
        self.feed(tokens, step)

    def feed(self, tokens: list[int], step: int) -> None:
        """Add tokens to the stream, hashing every block they complete (without copying
        them into the stream: only the open block's few tokens are carried over)."""
        self.length += len(tokens)
        need = step - len(self.pending)  # tokens that close the open block
        if len(tokens) < need:
            self.pending = self.pending + tokens
            return
        hashes = self.hashes
        parent = hashes[-1] if hashes else ROOT_HASH
        parent = hash_blocks_into([*self.pending, *tokens[:need]], step, parent, hashes)
        hash_blocks_into(tokens, step, parent, hashes, start=need)
        self.pending = tokens[len(tokens) - (len(tokens) - need) % step :]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    if len(a) <= len(b) and b[: len(a)] == a:  # the manual flow: C-speed comparison
        return len(a)
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


class RenderedRequest:
    """One call's prompt: its length (= count_request), its block hashes (a CachePrompt) and
    a way to read its tokens back and map a token to its message (a TokenSource, for
    diagnosis). One small object per call: it shares its chain's append-only lists."""

    __slots__ = (
        "_count",
        "_end",
        "_full",
        "_hashes",
        "_header",
        "_indices",
        "_messages",
        "_offsets",
        "_priming",
        "_tail",
        "length",
        "unknown_images",
    )

    def __init__(
        self, messages: MessageTokens, chain: _Chain, priming: list[int], tail: tuple[int, ...]
    ) -> None:
        self._messages = messages
        self._header = chain.header
        self._indices = chain.indices  # only the first `_count` belong to this request
        self._offsets = chain.offsets
        self._count = len(chain.indices)
        self._end = chain.length  # where reply priming starts
        self._priming = priming
        self._hashes = chain.hashes  # only the first `_full` belong to this request
        self._full = len(chain.hashes)
        self._tail = tail  # the block(s) closed by reply priming
        self.length = chain.length + len(priming)
        self.unknown_images = chain.unknown

    @property
    def blocks(self) -> BlockView:
        return BlockView(self._hashes, self._full, self._tail)

    @property
    def source(self) -> RenderedRequest:
        return self

    def message_at(self, index: int) -> int | None:
        position = bisect.bisect_right(self._offsets, index, 0, self._count) - 1
        if position < 0 or index >= self._end:
            return None  # tools/response-format header, or reply priming
        return self._indices[position]

    def tokens(self, start: int, end: int) -> Sequence[int]:
        out: list[int] = list(self._header[start:end])
        first = max(0, bisect.bisect_right(self._offsets, start, 0, self._count) - 1)
        for position in range(first, self._count):
            offset = self._offsets[position]
            if offset >= end:
                break
            tokens = self._messages.tokens(self._indices[position])
            out += tokens[max(0, start - offset) : max(0, end - offset)]
        out += self._priming[max(0, start - self._end) : max(0, end - self._end)]
        return out


class TranscriptRenderer:
    """Renders the calls of one transcript for one model profile, in order."""

    def __init__(
        self,
        messages: list[ChatMessage],
        profile: ModelProfile,
        *,
        step: int = STEP,
        cache: EncodingCache | None = None,
    ) -> None:
        self.messages = MessageTokens(messages, profile, cache)
        self.profile = profile
        self.step = step
        self._priming = priming_tokens(profile)
        self._headers: dict[str, list[int]] = {"": []}
        # One chain per tools/format header, so calls that alternate tool sets keep theirs.
        self._chains: dict[str, _Chain] = {}

    def _header(
        self, tools: list[dict[str, Any]] | None, response_format: dict[str, Any] | None
    ) -> tuple[str, list[int]]:
        if not tools and not response_format:
            return "", []
        key = json.dumps([tools, response_format], sort_keys=True, default=str)
        if key not in self._headers:
            header = encode_tools(tools, self.profile)
            self._headers[key] = header + encode_response_format(response_format, self.profile)
        return key, self._headers[key]

    def _read(self, chain: _Chain, start: int, end: int) -> list[int]:
        return list(RenderedRequest(self.messages, chain, [], ()).tokens(start, end))

    def _fork(self, chain: _Chain, keep: int) -> _Chain:
        """A new chain sharing the first `keep` messages: their full blocks are reused, only
        the open partial block is read back."""
        length = chain.offsets[keep] if keep < len(chain.indices) else chain.length
        full = length // self.step
        return _Chain(
            header_key=chain.header_key,
            header=chain.header,
            indices=chain.indices[:keep],
            offsets=chain.offsets[:keep],
            length=length,
            hashes=chain.hashes[:full],
            pending=self._read(chain, full * self.step, length),
            unknown=sum(self.messages.unknown_images(i) for i in chain.indices[:keep]),
        )

    def render(
        self,
        request: Sequence[int],
        *,
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> RenderedRequest:
        key, header = self._header(tools, response_format)
        chain = self._chains.get(key)
        if chain is None:
            chain = _Chain(key, header, [], [], 0, [], [], 0)
            chain.feed(header, self.step)
        keep = _common_prefix(chain.indices, request)
        if keep < len(chain.indices):
            self.messages.retain = True  # requests no longer just grow: messages come back
            chain = self._fork(chain, keep)
        for index in request[keep:]:
            chain.append(
                index, self.messages.tokens(index), self.messages.unknown_images(index), self.step
            )
            self.messages.consumed(index)
        self._chains[key] = chain
        return self._snapshot(chain)

    def _snapshot(self, chain: _Chain) -> RenderedRequest:
        parent = chain.hashes[-1] if chain.hashes else ROOT_HASH
        tail: list[int] = []
        hash_blocks_into([*chain.pending, *self._priming], self.step, parent, tail)
        return RenderedRequest(self.messages, chain, self._priming, tuple(tail))

    def release(self) -> None:
        """Drop token lists (lengths and hashes stay); diagnosis re-encodes on demand."""
        self.messages.release()


def render_tokens(
    messages: list[ChatMessage],
    *,
    profile: ModelProfile,
    tools: list[dict[str, Any]] | None = None,
    response_format: dict[str, Any] | None = None,
) -> list[int]:
    """The full token sequence of one request (len == count_request)."""
    rendered = TranscriptRenderer(messages, profile).render(
        list(range(len(messages))), tools=tools, response_format=response_format
    )
    return list(rendered.source.tokens(0, rendered.length))
