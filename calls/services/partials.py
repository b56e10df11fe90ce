"""A streamed reply's text so far, written while the worker still receives it, so that the
chat page can show the reply as it streams (calls.selectors.reply_partial reads it).

It lives in Django's cache, not in the database: it is thrown away once the turn is recorded
with the whole reply, and a row rewritten four times a second per streaming call would cost
the database more than the call. The cache is one that the web server and the workers both
see (Redis when CACHE_URL names it, else files under var/; settings.CACHES), keyed by the
call's public code (two installations sharing a Redis without a key prefix never read each
other's), and an entry outlives a worker that dies mid-stream by PARTIAL_SECONDS at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from uuid import UUID

from django.core.cache import cache

from ..selectors import reply_partial_key

logger = logging.getLogger(__name__)

PARTIAL_SECONDS = 300
# Often enough for the page's poll (every 500 ms while text streams in), seldom enough that a
# reply of hundreds of chunks is a few writes a second.
PUBLISH_EVERY_SECONDS = 0.25


class ReplyPartial:
    """Told a streaming attempt's parts after each chunk (calling.Progress), and [] when an
    attempt ends without a reply. Writes their text once the attempt's text has streamed
    for PUBLISH_EVERY_SECONDS, then at most that often (joined only then: joining on every
    chunk would be quadratic in the reply). A reply that streams faster, as the built-in
    endpoint's do, costs the cache nothing. [] removes what was written: the page does not
    show a failed attempt's text while the call waits to retry."""

    def __init__(self, code: UUID, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.key = reply_partial_key(code)
        self.clock = clock
        self.since: float | None = None  # the attempt's first text, then the last write
        self.published = False
        # After a failed write (the cache is down), none more for this call: each would wait
        # for the cache inside the stream, and add to the latency costlab records.
        self.broken = False

    def __call__(self, parts: Sequence[str]) -> None:
        if self.broken:
            return
        if not parts:  # the attempt failed: its text is not the reply
            self.since = None
            if self.published:
                self.clear()
            return
        now = self.clock()
        if self.since is None:
            self.since = now
            return
        if now - self.since < PUBLISH_EVERY_SECONDS:
            return
        self.since = now
        try:
            cache.set(self.key, "".join(parts), PARTIAL_SECONDS)
        except Exception:  # the page only waits longer; the call itself must not fail
            self.broken = True
            logger.warning("could not write a streamed reply's text so far", exc_info=True)
        else:
            self.published = True

    def clear(self) -> None:
        """Remove the text written (by this run, or by an earlier delivery of the same call
        that a killed worker left behind)."""
        self.published = False
        try:
            cache.delete(self.key)
        except Exception:  # it expires anyway
            logger.warning("could not clear a streamed reply's text", exc_info=True)
