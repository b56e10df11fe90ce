"""Prompt-cache simulator (design.md 2.6, seed 002).

Owns: prompts as chained block hashes, and the simulated cache that answers hit or miss.

Prompts are compared as chained hashes of 128-token blocks: block i's hash covers every token
up to the end of block i, so one dict lookup answers "is this whole prefix cached?" and the
longest cached prefix is a binary search, O(log blocks) per request instead of O(tokens).
A prompt that extends its store's latest one (a conversation's next call, the usual case)
skips even that: the segment holding the latest prompt's last block tells what is cached.

Rules simulated: per-organization scope; routing by the first 256 tokens plus
`prompt_cache_key`; no hit below 1024 tokens; hits in 128-token steps; entries expire after
`retention_seconds` idle (a hit refreshes them); above ~15 requests per minute on one
(prefix, key) the extra requests overflow to a cold machine. Every miss says why.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from .sequences import TOKEN_BYTES, pack

STEP = 128
ROOT_HASH = 0x5EED  # the parent of block 0
RATE_WINDOW_SECONDS = 60.0
# Times a route keeps before the old ones are let go in bulk (_Rate._forget).
_RATE_BOUND = 32

MissKind = Literal[
    "not_supported", "below_minimum", "cold", "prefix_changed", "expired", "overflow", "batch"
]


def hash_blocks_into(packed: bytes, step: int, parent: int, out: list[int], start: int = 0) -> int:
    """Append the chained hash of every full block of a packed token sequence (from token
    `start` on) to `out`; return the last. A block's hash is Python's 64-bit hash of (parent,
    the block's bytes): a byte slice hashes in C without one object per token. Bytes hashes
    are salted per process, so hashes are compared within one process, never stored;
    collisions are negligible for a simulator."""
    size = step * TOKEN_BYTES
    for begin in range(start * TOKEN_BYTES, len(packed) - size + 1, size):
        parent = hash((parent, packed[begin : begin + size]))
        out.append(parent)
    return parent


def block_hashes(tokens: Sequence[int], *, step: int = STEP, parent: int = ROOT_HASH) -> list[int]:
    """Hashes of every full block of `tokens`; a trailing partial block is never cached."""
    hashes: list[int] = []
    hash_blocks_into(pack(tokens), step, parent, hashes)
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

    def block_list(self) -> list[int]:
        """The block hashes as a list the simulator may keep (segments do): its owner may
        append to it later, never change what is in it. It may be the renderer's own list,
        not a copy: no caller may sort, truncate or append to it, or a stored segment's
        blocks would change under it."""
        ...

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

    def block_list(self) -> list[int]:
        return list(self.blocks)

    @classmethod
    def from_tokens(
        cls, tokens: Sequence[int], *, boundaries: Sequence[int] = (), step: int = STEP
    ) -> PromptBlocks:
        return cls(len(tokens), block_hashes(tokens, step=step), ListSource(tokens, boundaries))


def _duration(seconds: float) -> str:
    whole = round(seconds)  # (a name of its own: compiled, a variable keeps one type)
    hours, rest = divmod(whole, 3600)
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
    model: str | None = None  # not_supported

    def describe(self) -> str:
        if self.kind == "not_supported":
            return f"{self.model or 'this model'} has no prompt caching"
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


@dataclass(slots=True)  # a value, but built per request: a frozen init costs a setattr per field
class CacheResult:
    cached_tokens: int
    reason: MissReason | None = None
    write_tokens: int = 0  # breakpoints policies: newly written prefix, billed as a write
    missing_key: bool = False  # the policy needs prompt_cache_key and the request had none

    @property
    def hit(self) -> bool:
        return self.cached_tokens > 0


def parse_retention(text: str) -> int:
    """Seconds of a retention scenario: "5m", "10m", "1h", "24h", "90s" or plain seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise ValueError(f"retention {text!r}: expected e.g. 5m, 10m, 1h, 24h")
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return int(match[1]) * factor


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def to_seconds(at: datetime | float | None) -> float | None:
    """Seconds since the epoch. Naive timestamps are taken as UTC: only differences matter."""
    if at is None or isinstance(at, (float, int)):  # a tuple checks faster than a union
        return at
    return (at - (_EPOCH if at.tzinfo else _NAIVE_EPOCH)).total_seconds()


@dataclass(slots=True, eq=False)
class _Segment:
    """A run of cached blocks that are always used together, sharing one last-use time.

    A hit refreshes its whole prefix; with one time per block that costs O(blocks) per
    request, O(n^2) over a conversation. A conversation that keeps extending its prompt grows
    one segment in place instead, so a refresh walks a handful of segments. A prompt that
    ends or branches inside a segment splits it first: a segment only ever continues at its
    end, which makes every segment on a prompt's path wholly part of that prefix."""

    time: float | None  # last use; None when requests had no timestamps
    ttl: float  # idle lifetime granted by the request that used it last
    parent: int  # hash of the block just before the segment (ROOT_HASH for the first)
    end: int  # depth just past its last block
    hashes: list[int]  # a block list holding the segment's blocks at their depths
    source: TokenSource | None  # that list's prompt, to read its tokens back (diagnosis)
    branched: bool = False  # something continues at `end`: it can no longer grow in place
    sourced_in: int = 0  # the simulator's generation that last gave it `source`

    def continuation(self, depth: int) -> int:
        return self.hashes[depth]


@dataclass(slots=True)
class _Store:
    """One organization's cache for one prompt_cache_key (all machines of its routes).

    Routing by the first 256 tokens never changes which entries can match: a hit needs a
    common prefix of >= 1024 tokens, which includes those first 256."""

    blocks: dict[int, _Segment] = field(default_factory=dict)
    # block hash -> the latest segment starting right after it (ROOT_HASH: at the start)
    branches: dict[int, _Segment] = field(default_factory=dict)
    # The segment holding the last block of the latest prompt stored here.
    tip: _Segment | None = None
    # Every block of every segment is in `blocks` but the tip's from this depth on: the
    # shortcut for a conversation's next call grows the tip without storing its new blocks
    # (1.8k of the simulator's 15.9k instructions a call in the endpoint bench: valgrind);
    # only a request searched for reads them, and it calls index_tip first. None
    # of them is a segment's parent: only a request searched for makes a branch.
    indexed: int = 0

    def index_tip(self) -> None:
        """Put the blocks the tip grew by unindexed in `blocks`: before anything reads it."""
        tip = self.tip
        if tip is not None:
            blocks = self.blocks
            for block in tip.hashes[self.indexed : tip.end]:
                blocks[block] = tip
            self.indexed = tip.end

    def next_after(self, blocks: list[int], depth: int) -> _Segment | None:
        """The cached segment holding the block that follows blocks[:depth], if any."""
        parent = blocks[depth - 1] if depth else ROOT_HASH
        segment = self.blocks.get(parent) if depth else None
        if segment is not None and segment.end > depth:
            return segment  # the prefix continues inside the same segment
        return self.branches.get(parent)

    def parent(self, segment: _Segment) -> _Segment | None:
        """The segment holding the block just before `segment` (None at the prompt start)."""
        return self.blocks.get(segment.parent) if segment.parent != ROOT_HASH else None


@dataclass(slots=True)
class _Rate:
    """Requests on one (prefix, key) route over the last minute. The cache machine serves up
    to the limit; the rest overflow, so only served requests count against the limit.
    Times are kept sorted and counted in the minute up to `now`, so a call older than
    ones already seen (a later chunk of a file: analysis.analyze_chunked) counts right.
    Times older than the minute are only memory: every count bisects its window, so they
    are let go in bulk, once `seen` outgrows `bound`, not one by one as they age out."""

    seen: list[float] = field(default_factory=list)
    served: list[float] = field(default_factory=list)
    latest: float = float("-inf")
    bound: int = _RATE_BOUND

    def admit(self, now: float, limit: int) -> bool:
        if now >= self.latest:  # in time order (the usual): both lists end before `now`
            self.latest = now
            seen, served = self.seen, self.served
            seen.append(now)
            if len(seen) > self.bound:
                self._forget(now - RATE_WINDOW_SECONDS)
            # Served in the minute up to `now`: at least `limit` when the limit-th latest is.
            count = len(served)
            if count >= limit and (limit < 1 or served[count - limit] > now - RATE_WINDOW_SECONDS):
                return False
            served.append(now)
            return True
        self.latest = max(self.latest, now)
        for times in (self.seen, self.served):  # older than any window still to come
            del times[: bisect.bisect_right(times, self.latest - RATE_WINDOW_SECONDS)]
        bisect.insort(self.seen, now)
        if _in_window(self.served, now) >= limit:
            return False
        bisect.insort(self.served, now)
        return True

    def _forget(self, cut: float) -> None:
        """Let go of the times up to `cut`, a minute before the latest call: no count reads
        them again (a call older than the latest drops them first). A burst keeps many in
        the minute: the bound doubles past them, so they are not walked again each call."""
        for times in (self.seen, self.served):
            del times[: bisect.bisect_right(times, cut)]
        self.bound = max(_RATE_BOUND, 2 * len(self.seen))

    def rpm(self, now: float) -> int:
        """Requests seen on the route in the minute up to `now`."""
        return _in_window(self.seen, now)


def _in_window(times: list[float], now: float) -> int:
    return bisect.bisect_right(times, now) - bisect.bisect_right(times, now - RATE_WINDOW_SECONDS)


def _cached_prefix(blocks: list[int], cached: dict[int, _Segment]) -> int:
    """How many leading blocks are cached. A chained hash is only ever stored with its whole
    prefix, so presence is monotone along the prompt. A growing conversation adds a few
    blocks at its end: gallop back from the end, then bisect the bracket, O(log new)."""
    high, stride = len(blocks), 1  # blocks[high] is absent (or high is the end)
    low = 0
    while high - stride >= 0:
        probe = high - stride
        if blocks[probe] in cached:
            low = probe + 1
            break
        high, stride = probe, stride * 2
    while low < high:  # the first absent block lies in [low, high]
        middle = (low + high) // 2
        if blocks[middle] in cached:
            low = middle + 1
        else:
            high = middle
    return low


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


class CacheSimulator:
    """One simulated prompt cache for any number of organizations. Feed it requests in time
    order; each gets the tokens it would have had cached and, short of a full hit, why."""

    # The shortcut for a prompt that extends its store's latest one (off: every prompt is
    # searched for, as the tests compare).
    fast = True

    def __init__(
        self,
        retention_seconds: int,
        rpm_limit: int = 15,
        routing_tokens: int = 256,
        minimum: int = 1024,
        step: int = STEP,
        hit_step: int | None = None,
    ) -> None:
        if minimum % step or routing_tokens % step or routing_tokens > minimum:
            raise ValueError("minimum and routing_tokens must be multiples of step, routing <= min")
        hit_step = hit_step or step
        if hit_step % step:
            raise ValueError(f"hits in steps of {hit_step}: must be a multiple of {step}")
        self.retention_seconds = retention_seconds
        self.rpm_limit = rpm_limit
        self.minimum = minimum
        self.step = step
        self.hit_step = hit_step
        self._routing_block = routing_tokens // step - 1
        self._stores: dict[tuple[str, str | None], _Store] = {}
        self._rates: dict[tuple[str, str | None, int], _Rate] = {}
        # Segments given a prompt's tokens, by generation (forget_sources).
        self._generation = 0
        self._sourced: list[_Segment] = []
        self._sourced_before: list[_Segment] = []
        self._route_keys: dict[tuple[str, int], str | None] = {}
        # Set when a request came without a timestamp: no expiry and no rate judgment for it.
        self.timestamps_missing = False
        # The latest request that got past the rate: (org, key, route, its rate, its store).
        self._latest: tuple[str, str | None, int, _Rate | None, _Store] | None = None

    def process(
        self,
        prompt: CachePrompt,
        *,
        org: str = "default",
        prompt_cache_key: str | None = None,
        at: datetime | float | None = None,
        ttl_seconds: float | None = None,
    ) -> CacheResult:
        """Simulate one request: how many tokens hit, and why the rest did not. Entries it
        uses or writes live `ttl_seconds` idle (default: the simulator's retention)."""
        if prompt.length < self.minimum:
            short = MissReason("below_minimum", prompt_tokens=prompt.length, minimum=self.minimum)
            return CacheResult(0, short)
        now = at if at is None or type(at) is float else to_seconds(at)  # (the usual: no call)
        blocks = prompt.block_list()
        route = blocks[self._routing_block]
        # The usual next call of a conversation: the latest request's route (its rate and
        # store without building the keys and looking them up, its key already noted for
        # the route), a time, and the store's latest prompt extended. That prompt's last
        # block ends a segment nothing continues (not branched), so exactly its blocks are
        # cached here, nothing past them to have diverged from: no search. When all of them
        # are live, the hit is the whole of them. Anything else (nothing has been changed
        # yet, the rate included) is searched for.
        latest = self._latest
        if latest is None or not (
            latest[2] == route and latest[0] == org and latest[1] == prompt_cache_key
        ):
            return self._search(prompt, blocks, route, org, prompt_cache_key, now, ttl_seconds)
        rate, store = latest[3], latest[4]
        tip = store.tip
        if (
            rate is None  # (the latest had no time)
            or now is None
            or tip is None
            or tip.branched
            or (end := tip.end) > len(blocks)
            or tip.hashes[end - 1] != blocks[end - 1]
        ):
            return self._search(
                prompt, blocks, route, org, prompt_cache_key, now, ttl_seconds, latest
            )
        cached_blocks = store.blocks
        segment: _Segment | None = tip
        while segment is not None:  # toward the prompt's start: a handful of segments
            time = segment.time  # (_live and _Store.parent inline)
            if time is not None and not 0 <= now - time <= segment.ttl:
                return self._search(
                    prompt, blocks, route, org, prompt_cache_key, now, ttl_seconds, latest
                )
            parent = segment.parent
            segment = cached_blocks.get(parent) if parent != ROOT_HASH else None
        cached = end * self.step // self.hit_step * self.hit_step
        if cached < self.minimum:
            return self._search(
                prompt, blocks, route, org, prompt_cache_key, now, ttl_seconds, latest
            )
        if not rate.admit(now, self.rpm_limit):  # a cold overflow machine; nothing stored
            return CacheResult(0, MissReason("overflow", rpm=rate.rpm(now)))
        # What _remember does for it: refresh the prefix, and the tip grows in place.
        ttl = self.retention_seconds if ttl_seconds is None else ttl_seconds
        segment = tip
        while segment is not None:
            segment.time, segment.ttl = now, ttl
            parent = segment.parent
            segment = cached_blocks.get(parent) if parent != ROOT_HASH else None
        if end < len(blocks):
            source = prompt.source
            if source is not None and (tip.source is None or tip.sourced_in != self._generation):
                self._sourced.append(tip)  # listed once a generation
                tip.sourced_in = self._generation
            # Its new blocks are left out of cached_blocks until a request is searched for
            # (_Store.indexed): in a conversation's run of calls, none is.
            tip.end, tip.hashes, tip.source = len(blocks), blocks, source
        return CacheResult(cached, None)

    def _search(
        self,
        prompt: CachePrompt,
        blocks: list[int],
        route: int,
        org: str,
        prompt_cache_key: str | None,
        now: float | None,
        ttl_seconds: float | None,
        latest: tuple[str, str | None, int, _Rate | None, _Store] | None = None,
    ) -> CacheResult:
        """process for any other request: `latest` the latest request's route when it is
        this one's (or None). The cached prefix is searched for, unless the prompt extends
        its store's latest one."""
        self.timestamps_missing |= now is None
        rate: _Rate | None = None
        if now is not None:
            rate = latest[3] if latest is not None else None
            if rate is None:
                rate = self._rates.get((org, prompt_cache_key, route))
                if rate is None:
                    rate = self._rates[(org, prompt_cache_key, route)] = _Rate()
            if not rate.admit(now, self.rpm_limit):  # a cold overflow machine; nothing stored
                return CacheResult(0, MissReason("overflow", rpm=rate.rpm(now)))
        store = latest[4] if latest is not None else self._stores.get((org, prompt_cache_key))
        if store is None:
            store = self._stores[(org, prompt_cache_key)] = _Store()
        tip = store.tip
        if tip is not None and store.indexed < tip.end:  # grown by the shortcut
            store.index_tip()
        # The store's latest prompt, extended (not by the latest request's route, or past
        # an expired block): as above, no search for what is cached.
        end = tip.end if tip is not None and not tip.branched and self.fast else 0
        if (
            end
            and end <= len(blocks)
            and tip is not None
            and tip.hashes[end - 1] == blocks[end - 1]
        ):
            present = end
            live = self._live_prefix(store, blocks, present, now, tip)
            cached = live * self.step // self.hit_step * self.hit_step
            cached = cached if cached >= self.minimum else 0
            if live == present and cached:
                reason = None
            else:
                reason = self._reason(store, prompt, blocks, present, live, cached, now)
        else:
            tip = None
            present = _cached_prefix(blocks, store.blocks)
            live = self._live_prefix(store, blocks, present, now)
            cached = live * self.step // self.hit_step * self.hit_step
            cached = cached if cached >= self.minimum else 0
            if (
                live == present
                and cached
                and (present == len(blocks) or store.next_after(blocks, present) is None)
            ):  # the usual: a live hit, and nothing cached past it to have diverged from
                reason = None
            else:
                reason = self._reason(store, prompt, blocks, present, live, cached, now)
        if reason is not None and reason.kind == "cold":
            reason = self._cold(org, prompt_cache_key, route)
        ttl = self.retention_seconds if ttl_seconds is None else ttl_seconds
        store.tip = tip = self._remember(store, blocks, prompt.source, present, now, ttl, tip)
        store.indexed = tip.end if tip is not None else 0  # (_remember indexes its blocks)
        if latest is None:
            self._route_keys[(org, route)] = prompt_cache_key
            if self.fast:  # (off: every request is searched for)
                self._latest = (org, prompt_cache_key, route, rate, store)
        elif latest[3] is not rate:  # (the latest had no timestamp, this one has)
            self._latest = (org, prompt_cache_key, route, rate, store)
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

    def _live_prefix(
        self,
        store: _Store,
        blocks: list[int],
        present: int,
        now: float | None,
        tip: _Segment | None = None,
    ) -> int:
        """How many of the `present` blocks are still within retention. Blocks share their
        segment's time, so the usual answer (all of them) takes one look per segment."""
        if not present or now is None:
            return present
        cached_blocks = store.blocks
        segment: _Segment | None = tip if tip is not None else cached_blocks[blocks[present - 1]]
        while segment is not None:  # toward the prompt's start: a handful of segments
            time = segment.time  # _live and _Store.parent inline: once or twice a request
            if time is not None and not 0 <= now - time <= segment.ttl:
                break
            parent = segment.parent
            segment = cached_blocks.get(parent) if parent != ROOT_HASH else None
        else:
            return present
        return _longest(lambda j: _live(cached_blocks[blocks[j]], now), present)

    def _reason(
        self,
        store: _Store,
        prompt: CachePrompt,
        blocks: list[int],
        present: int,
        live: int,
        cached: int,
        now: float | None,
    ) -> MissReason | None:
        if live < present and now is not None:
            idle = now - (store.blocks[blocks[live]].time or now)
            if idle >= 0:
                return MissReason("expired", idle_seconds=idle)
            # Written by a later call (a later chunk's calls can be older): not there yet.
            return MissReason("cold")
        if present < len(blocks):
            other = store.next_after(blocks, present)
            if other is not None and other.continuation(present) != blocks[present]:
                token, approximate = self._divergence(prompt.source, other.source, present)
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
        self,
        store: _Store,
        blocks: list[int],
        source: TokenSource | None,
        present: int,
        now: float | None,
        ttl: float,
        tip: _Segment | None = None,
    ) -> _Segment | None:
        """Cache every full block of the prompt: refresh the `present` ones, add the rest.
        `tip`: the segment holding block present - 1, when known. The segment holding the
        prompt's last block."""
        if present:
            if tip is None:
                tip = store.blocks[blocks[present - 1]]
            if tip.end > present:  # the prompt ends or branches inside: split there
                tail = _split(store, tip, present)
                if tail.source is not None:
                    self._sourced.append(tail)  # as old as the segment it was cut from
                    tail.sourced_in = tip.sourced_in
            segment: _Segment | None = tip
            cached_blocks = store.blocks
            while segment is not None:  # toward the prompt's start: a hit refreshes it all
                segment.time, segment.ttl = now, ttl
                parent = segment.parent
                segment = cached_blocks.get(parent) if parent != ROOT_HASH else None
        if present == len(blocks):
            return tip
        if tip is not None and tip.end == present and not tip.branched:
            grow = tip  # the manual flow: the same segment keeps growing
        else:
            parent = blocks[present - 1] if present else ROOT_HASH
            grow = store.branches[parent] = _Segment(now, ttl, parent, present, blocks, None)
            if tip is not None:
                tip.branched = True
        if source is not None and (grow.source is None or grow.sourced_in != self._generation):
            self._sourced.append(grow)  # listed once a generation
            grow.sourced_in = self._generation
        grow.end, grow.hashes, grow.source, grow.time = len(blocks), blocks, source, now
        grow.ttl = ttl
        # One store a block: cheaper than update(zip(blocks, repeat(grow))), whose zip and
        # repeat cost more to build than the one or two blocks a call adds cost to store,
        # and no dearer on long runs (timeit, best of 7, this machine: 2 blocks 0.2-0.25
        # against 0.6-1.0 us, 200 blocks 6.3-6.4 against 7.4-7.6 us).
        cached_blocks = store.blocks
        for block in blocks[present:]:
            cached_blocks[block] = grow
        return grow

    def forget_sources(self) -> None:
        """End a generation (an import's chunk): let go of the tokens of prompts not
        extended since the generation before. They are kept to name where a later prompt
        diverged, and the prompt a new one is compared with is nearly always a recent one
        (the latest branch at that point): while a chunk is simulated, its own prompts'
        tokens and the previous chunk's are there, so those names stay exact while memory
        stays bounded. The blocks stay, so
        hits and misses are unchanged; a divergence from an older prompt is named at its
        128-token block. An import calls this after each chunk (analysis.CacheState): kept
        for a whole file, they held every conversation's tokens (1.3 GB at 500 MB)."""
        for segment in self._sourced_before:
            if segment.sourced_in < self._generation:  # not given tokens again since
                segment.source = None
        self._sourced_before, self._sourced = self._sourced, []
        self._generation += 1


def _split(store: _Store, segment: _Segment, depth: int) -> _Segment:
    """Cut `segment` at `depth`: its blocks from there on become a segment of their own."""
    parent = segment.hashes[depth - 1]
    tail = _Segment(segment.time, segment.ttl, parent, segment.end, segment.hashes, segment.source)
    tail.branched = segment.branched
    blocks = store.blocks
    for block in segment.hashes[depth : segment.end]:  # (not update(zip(...)): see _remember)
        blocks[block] = tail
    store.branches.setdefault(parent, tail)  # a newer branch, if any, stays the latest
    segment.end, segment.branched = depth, True
    return tail


def _live(segment: _Segment, now: float | None) -> bool:
    """Within retention at `now`. A segment last used after `now` counts as not written yet:
    a call older than ones already simulated (a later chunk of a file) must not hit what
    they wrote. It writes the segment again at its own time (a segment keeps one time), so
    its conversation's next calls hit it; a call after the later use may then find it
    expired where it was not: out of order, the simulation errs toward misses, never hits."""
    if segment.time is None or now is None:
        return True
    return 0 <= now - segment.time <= segment.ttl
