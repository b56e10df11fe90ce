"""A failure limit kept in the cache (Redis in a deployment): after `failures` failed attempts
for one subject (a username, an address, later an API key) within about `window` seconds,
further attempts are refused until the window has passed.

Failures are counted in fixed windows, and a subject is refused while its count in the
current window plus the previous one reaches the limit: so no more than `failures` over any
span of one window (plus guesses already in flight), and a lock lasts one to two windows.
Counters are created with add and bumped with incr, both atomic in Redis, so parallel
guesses are all counted."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.core.cache import cache


@dataclass(frozen=True)
class Limit:
    name: str
    failures: int
    window: int  # seconds


def now() -> float:
    # One place to read the clock, so tests can move it instead of sleeping.
    return time.time()


def _keys(limit: Limit, subject: str, at: float) -> tuple[str, str]:
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    current = int(at // limit.window)
    return (
        f"throttle:{limit.name}:{digest}:{current}",
        f"throttle:{limit.name}:{digest}:{current - 1}",
    )


def retry_after(*, limit: Limit, subject: str) -> int:
    """Seconds until the subject may try again; 0 when it may now."""
    at = now()
    current_key, previous_key = _keys(limit, subject, at)
    counts = cache.get_many([current_key, previous_key])
    current, previous = counts.get(current_key, 0), counts.get(previous_key, 0)
    if current + previous < limit.failures:
        return 0
    # The previous window's failures drop out at the next boundary, the current ones a
    # window later.
    to_boundary = limit.window - at % limit.window
    wait = to_boundary if current < limit.failures else to_boundary + limit.window
    return max(1, math.ceil(wait))


def failure_record(*, limit: Limit, subject: str) -> None:
    current_key, _ = _keys(limit, subject, now())
    # Kept for two windows: it is read as "the previous window" during the second.
    keep = 2 * limit.window
    cache.add(current_key, 0, timeout=keep)
    try:
        cache.incr(current_key)
    except ValueError:  # expired between add and incr: count it afresh
        cache.add(current_key, 1, timeout=keep)
    # Redis's INCR keeps the expiry, but the file cache's incr rewrites it with its default.
    cache.touch(current_key, timeout=keep)


def failures_clear(*, limit: Limit, subject: str) -> None:
    cache.delete_many(list(_keys(limit, subject, now())))
