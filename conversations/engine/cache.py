"""Prompt-cache simulator (design.md 2.6, seed 002).

Prompts are compared as chained hashes of 128-token blocks: block i's hash covers every token
up to the end of block i, so one dict lookup answers "is this whole prefix cached?" and the
longest cached prefix is a binary search, O(log blocks) per request instead of O(tokens).

Rules simulated: per-organization scope; routing by the first 256 tokens plus
`prompt_cache_key`; no hit below 1024 tokens; hits in 128-token steps; entries expire after
`retention_seconds` idle (a hit refreshes them); above ~15 requests per minute on one
(prefix, key) the extra requests overflow to a cold machine. Every miss says why.
"""

from __future__ import annotations

import bisect
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Literal, Protocol

STEP = 128
ROOT_HASH = 0x5EED  # the parent of block 0
RATE_WINDOW_SECONDS = 60.0

MissKind = Literal["below_minimum", "cold", "prefix_changed", "expired", "overflow", "batch"]


def hash_block(parent: int, tokens: Sequence[int]) -> int:
    """Chained hash of one block. Python's tuple hash is 64-bit and deterministic for ints:
    collisions are negligible for a simulator, and it is the fastest hash available."""
    return hash((parent, tuple(tokens)))


def block_hashes(tokens: Sequence[int], *, step: int = STEP, parent: int = ROOT_HASH) -> list[int]:
    """Hashes of every full block of `tokens`; a trailing partial block is never cached."""
    hashes: list[int] = []
    for start in range(0, len(tokens) - step + 1, step):
        parent = hash_block(parent, tokens[start : start + step])
        hashes.append(parent)
    return hashes


class TokenSource(Protocol):
    """Where a prompt's tokens can be read back, to pinpoint a divergence."""

    def tokens(self, start: int, end: int) -> Sequence[int]: ...

    def message_at(self, index: int) -> int | None: ...


class CachePrompt(Protocol):
    @property
    def length(self) -> int: ...

    @property
    def blocks(self) -> Sequence[int]: ...

    @property
    def source(self) -> TokenSource | None: ...


@dataclass(frozen=True, slots=True)
class ListSource:
    """A token list with optional message start offsets (token index of each message)."""

    token_list: Sequence[int]
    boundaries: Sequence[int] = ()

    def tokens(self, start: int, end: int) -> Sequence[int]:
        return self.token_list[start:end]

    def message_at(self, index: int) -> int | None:
        position = bisect.bisect_right(self.boundaries, index) - 1
        return position if position >= 0 else None


@dataclass(frozen=True, slots=True)
class PromptBlocks:
    """A prompt as the simulator sees it: its length and the hashes of its full blocks."""

    length: int
    blocks: Sequence[int]
    source: TokenSource | None = None

    @classmethod
    def from_tokens(
        cls, tokens: Sequence[int], *, boundaries: Sequence[int] = (), step: int = STEP
    ) -> PromptBlocks:
        return cls(len(tokens), block_hashes(tokens, step=step), ListSource(tokens, boundaries))


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True, slots=True)
class MissReason:
    """Why a prompt got less than its full cacheable prefix. Only the fields of its kind are
    set. A partial hit can carry a reason too (prefix_changed or expired past the hit)."""

    kind: MissKind
    token: int | None = None  # prefix_changed: index of the first differing token
    message: int | None = None  # prefix_changed: transcript index of the message holding it
    approximate: bool = False  # prefix_changed: token known only to its 128-token block
    idle_seconds: float | None = None  # expired
    rpm: int | None = None  # overflow
    prompt_tokens: int | None = None  # below_minimum
    minimum: int | None = None  # below_minimum
    other_key: str | None = None  # cold: the same prefix was last seen under this key
    other_key_seen: bool = False

    def describe(self) -> str:
        if self.kind == "below_minimum":
            return f"prompt of {self.prompt_tokens:,} tokens is below the {self.minimum:,} minimum"
        if self.kind == "cold":
            if self.other_key_seen:
                return f"cold: this prefix was cached under prompt_cache_key {self.other_key!r}"
            return "cold: first sight of this prefix"
        if self.kind == "prefix_changed":
            where = f"message {self.message}" if self.message is not None else "tools/format"
            about = "about " if self.approximate else ""
            return f"prefix changed at {about}token {self.token:,} ({where})"
        if self.kind == "expired":
            return f"expired after {_duration(self.idle_seconds or 0)} idle"
        if self.kind == "overflow":
            return f"overflow: {self.rpm} requests/minute on this prefix and key"
        return "Batch API: no caching discount"

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, "text": self.describe()}
        for name in ("token", "message", "idle_seconds", "rpm"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


@dataclass(frozen=True, slots=True)
class CacheResult:
    cached_tokens: int
    reason: MissReason | None = None

    @property
    def hit(self) -> bool:
        return self.cached_tokens > 0


def parse_retention(text: str) -> int:
    """"5m", "10m", "1h", "24h", "90s" or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise ValueError(f"retention {text!r}: expected e.g. 5m, 10m, 1h, 24h")
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return int(match[1]) * factor


def to_seconds(at: datetime | float | None) -> float | None:
    if at is None or isinstance(at, float | int):
        return at
    # Naive timestamps are taken as UTC; only differences matter here.
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


@dataclass(slots=True)
class _Store:
    """One organization's cache for one prompt_cache_key (all machines of its routes).

    Routing by the first 256 tokens never changes which entries can match: a hit needs a
    common prefix of >= 1024 tokens, which includes those first 256."""

    last_used: dict[int, float | None] = field(default_factory=dict)
    # parent block hash -> (latest child block hash, its prompt's tokens): for diagnosis
    children: dict[int, tuple[int, TokenSource | None]] = field(default_factory=dict)


def _longest(predicate: Callable[[int], bool], upper: int) -> int:
    """Largest n <= upper with predicate(j) true for every j < n (predicate is monotone)."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if predicate(middle - 1):
            low = middle
        else:
            high = middle - 1
    return low


def _iter_blocks(blocks: Sequence[int]) -> Iterator[int]:
    fast = getattr(blocks, "iter_fast", None)  # render.BlockView iterates in C
    return fast() if fast is not None else iter(blocks)


class CacheSimulator:
    def __init__(
        self,
        retention_seconds: int,
        rpm_limit: int = 15,
        routing_tokens: int = 256,
        minimum: int = 1024,
        step: int = STEP,
    ) -> None:
        if minimum % step or routing_tokens % step or routing_tokens > minimum:
            raise ValueError("minimum and routing_tokens must be multiples of step, routing <= min")
        self.retention_seconds = retention_seconds
        self.rpm_limit = rpm_limit
        self.minimum = minimum
        self.step = step
        self._routing_block = routing_tokens // step - 1
        self._stores: dict[tuple[str, str | None], _Store] = {}
        self._rates: dict[tuple[str, str | None, int], deque[float]] = {}
        self._route_keys: dict[tuple[str, int], str | None] = {}
        # Set when a request came without a timestamp: no expiry and no rate judgment for it.
        self.timestamps_missing = False

    def process(
        self,
        prompt: CachePrompt,
        *,
        org: str = "default",
        prompt_cache_key: str | None = None,
        at: datetime | float | None = None,
    ) -> CacheResult:
        """Simulate one request: how many tokens hit, and why the rest did not."""
        if prompt.length < self.minimum:
            reason = MissReason("below_minimum", prompt_tokens=prompt.length, minimum=self.minimum)
            return CacheResult(0, reason)
        now = to_seconds(at)
        self.timestamps_missing |= now is None
        blocks = prompt.blocks
        route = blocks[self._routing_block]
        if now is not None:
            rpm = self._rate((org, prompt_cache_key, route), now)
            if rpm > self.rpm_limit:  # served by an overflow machine: cold, stores nothing here
                return CacheResult(0, MissReason("overflow", rpm=rpm))
        store = self._stores.setdefault((org, prompt_cache_key), _Store())
        last_used = store.last_used
        present = _longest(lambda j: blocks[j] in last_used, len(blocks))
        live = _longest(lambda j: self._live(last_used[blocks[j]], now), present)
        cached = live * self.step if live * self.step >= self.minimum else 0
        reason = self._reason(store, prompt, present, live, cached, now)
        if cached == 0 and reason is not None and reason.kind == "cold":
            reason = self._cold(org, prompt_cache_key, route)
        self._remember(store, prompt, present, now)
        self._route_keys[(org, route)] = prompt_cache_key
        return CacheResult(cached, reason)

    def process_tokens(
        self,
        tokens: Sequence[int],
        *,
        boundaries: Sequence[int] = (),
        org: str = "default",
        prompt_cache_key: str | None = None,
        at: datetime | float | None = None,
    ) -> CacheResult:
        prompt = PromptBlocks.from_tokens(tokens, boundaries=boundaries, step=self.step)
        return self.process(prompt, org=org, prompt_cache_key=prompt_cache_key, at=at)

    def _live(self, last_used: float | None, now: float | None) -> bool:
        if last_used is None or now is None:
            return True
        return now - last_used <= self.retention_seconds

    def _rate(self, route: tuple[str, str | None, int], now: float) -> int:
        times = self._rates.setdefault(route, deque())
        while times and times[0] <= now - RATE_WINDOW_SECONDS:
            times.popleft()
        times.append(now)
        return len(times)

    def _reason(
        self,
        store: _Store,
        prompt: CachePrompt,
        present: int,
        live: int,
        cached: int,
        now: float | None,
    ) -> MissReason | None:
        blocks = prompt.blocks
        if live < present and now is not None:
            idle = now - (store.last_used[blocks[live]] or now)
            return MissReason("expired", idle_seconds=idle)
        if present < len(blocks):
            parent = blocks[present - 1] if present else ROOT_HASH
            child = store.children.get(parent)
            if child is not None and child[0] != blocks[present]:
                token, approximate = self._divergence(prompt.source, child[1], present)
                if token > 0:
                    message = prompt.source.message_at(token) if prompt.source else None
                    return MissReason(
                        "prefix_changed", token=token, message=message, approximate=approximate
                    )
        return MissReason("cold") if cached == 0 else None

    def _divergence(
        self, mine: TokenSource | None, theirs: TokenSource | None, block: int
    ) -> tuple[int, bool]:
        """First differing token inside `block`; only the block when a side has no tokens."""
        start = block * self.step
        if mine is None or theirs is None:
            return start, True
        ours = mine.tokens(start, start + self.step)
        other = theirs.tokens(start, start + self.step)
        for offset, (a, b) in enumerate(zip(ours, other, strict=False)):
            if a != b:
                return start + offset, False
        return start + min(len(ours), len(other)), False

    def _cold(self, org: str, key: str | None, route: int) -> MissReason:
        if (org, route) in self._route_keys and self._route_keys[(org, route)] != key:
            return MissReason("cold", other_key=self._route_keys[(org, route)], other_key_seen=True)
        return MissReason("cold")

    def _remember(
        self, store: _Store, prompt: CachePrompt, present: int, now: float | None
    ) -> None:
        """Store (or refresh) every full block of the prompt. Refreshing is a C-level dict
        update; only blocks new to the store get a Python-level children entry."""
        blocks = prompt.blocks
        store.last_used.update(zip(_iter_blocks(blocks), repeat(now)))
        children = store.children
        for j in range(present, len(blocks)):
            children[blocks[j - 1] if j else ROOT_HASH] = (blocks[j], prompt.source)

