"""Prompt caching at breakpoints, GPT-5.6 and later (design.md 2.6, `breakpoints` policy).

Owns: the simulation of caches that store prefixes ending at breakpoints, with exact lengths
and written prefixes reported (and billed) as cache writes.

Rules simulated (public descriptions of the 2026 rules; a replay against the real API is the
arbiter): a prefix is cached where it ends at a breakpoint, explicit (a content part marked
`prompt_cache_breakpoint`, at most `max_breakpoints` per request) or implicit (the end of the
latest user or tool message); with `prompt_cache_options.mode = "explicit"` only marked
prefixes are written. A request reads the longest live cached prefix of itself, at least
`min_tokens` long, with no rounding; what it writes beyond that is its cache_write_tokens.
Entries live `ttl` seconds idle (the request's `prompt_cache_options.ttl`, else the policy's,
24 h with extended retention). Scope is per organization and model; requests without
`prompt_cache_key` are flagged because the improved matching needs one.

A prompt offers its candidate cut points (end of each message, with the exact hash of the
prefix up to there), so a lookup is a dictionary probe per cut, newest first: in the manual
flow the previous request's breakpoint is one of the last cuts, which keeps it linear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from .cache import CacheResult, MissReason, _Rate, to_seconds
from .cache_policy import CachePolicy

CutKind = Literal["implicit", "explicit", "other"]


@dataclass(frozen=True, slots=True)
class Cut:
    """A place a cached prefix could end: after `length` tokens, whose prefix hashes to
    `hash`. `implicit`: a user or tool message ends here; `explicit`: a marked part does."""

    length: int
    hash: int
    kind: CutKind


class BreakpointPrompt(Protocol):
    @property
    def length(self) -> int: ...

    def block_list(self) -> list[int]:
        """The block hashes, possibly the renderer's own list (not a copy): read it, never
        sort, truncate or append to it (cache.CachePrompt.block_list says why)."""
        ...

    def cut_points(self) -> Sequence[Cut]: ...


@dataclass(slots=True)
class _Entry:
    length: int
    time: float | None
    ttl: float


@dataclass(slots=True)
class _Store:
    entries: dict[int, _Entry] = field(default_factory=dict)


def breakpoints_to_write(cuts: Sequence[Cut], *, explicit_only: bool, limit: int) -> list[Cut]:
    """The cuts a request writes: its explicit ones (the last `limit`), and in implicit mode
    also the end of the latest user or tool message."""
    written = [c for c in cuts if c.kind == "explicit"][-limit:] if limit else []
    if not explicit_only:
        implicit = [c for c in cuts if c.kind == "implicit"]
        if implicit and implicit[-1] not in written:
            written.append(implicit[-1])
    return written


class BreakpointSimulator:
    """One simulated breakpoint cache for any number of organizations and models; feed it
    requests in time order."""

    def __init__(self, policy: CachePolicy, *, ttl_seconds: int | None = None) -> None:
        self.policy = policy
        self.ttl_seconds = ttl_seconds if ttl_seconds is not None else policy.ttl_seconds
        self._stores: dict[tuple[str, str | None, str | None], _Store] = {}
        self._rates: dict[tuple[str, str | None, str | None, int], _Rate] = {}
        self._routing_block = max(policy.routing_tokens // 128 - 1, 0)
        self.timestamps_missing = False

    def process(
        self,
        prompt: BreakpointPrompt,
        *,
        org: str = "default",
        model: str | None = None,
        prompt_cache_key: str | None = None,
        at: datetime | float | None = None,
        explicit_only: bool = False,
        ttl_seconds: float | None = None,
    ) -> CacheResult:
        policy = self.policy
        if prompt.length < policy.min_tokens:
            short = MissReason(
                "below_minimum", prompt_tokens=prompt.length, minimum=policy.min_tokens
            )
            return CacheResult(0, short, missing_key=self._missing_key(prompt_cache_key))
        now = to_seconds(at)
        self.timestamps_missing |= now is None
        blocks = prompt.block_list()
        if now is not None and blocks:
            route = blocks[min(self._routing_block, len(blocks) - 1)]
            rate = self._rates.setdefault((org, model, prompt_cache_key, route), _Rate())
            if not rate.admit(now, policy.overflow_rpm):
                overflow = MissReason("overflow", rpm=rate.rpm(now))
                return CacheResult(0, overflow, missing_key=self._missing_key(prompt_cache_key))
        store = self._stores.setdefault((org, model, prompt_cache_key), _Store())
        ttl = ttl_seconds if ttl_seconds is not None else self.ttl_seconds
        cuts = prompt.cut_points()
        cached, expired_idle = self._read(store, cuts, now)
        written = 0
        for cut in breakpoints_to_write(
            cuts, explicit_only=explicit_only, limit=policy.max_breakpoints
        ):
            if cut.length < policy.min_tokens or cut.length <= cached:
                continue
            store.entries[cut.hash] = _Entry(cut.length, now, ttl)
            written = max(written, cut.length)
        reason: MissReason | None = None
        if cached == 0:
            reason = (
                MissReason("expired", idle_seconds=expired_idle)
                if expired_idle is not None
                else MissReason("cold")
            )
        write_tokens = written - cached if written and policy.writes_billed else 0
        return CacheResult(
            cached,
            reason,
            write_tokens=write_tokens,
            missing_key=self._missing_key(prompt_cache_key),
        )

    def _missing_key(self, key: str | None) -> bool:
        return self.policy.requires_cache_key and not key

    def _read(
        self, store: _Store, cuts: Sequence[Cut], now: float | None
    ) -> tuple[int, float | None]:
        """The longest live cached prefix among the cuts (refreshed), and, when none is
        live, how long the longest expired one had been idle."""
        expired: float | None = None
        for cut in reversed(cuts):
            if cut.length < self.policy.min_tokens:
                break
            entry = store.entries.get(cut.hash)
            if entry is None or entry.length != cut.length:
                continue
            if now is not None and entry.time is not None and now < entry.time:
                continue  # written by a later call (a later chunk's calls can be older)
            if now is not None and entry.time is not None and now - entry.time > entry.ttl:
                if expired is None:
                    expired = now - entry.time
                continue
            entry.time = now if now is not None else entry.time
            return cut.length, None
        return 0, expired
