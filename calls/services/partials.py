"""A streamed reply's text so far, written while the worker still receives it, so that the
chat page can show the reply as it streams (calls.selectors.reply_partial reads it).

It lives in Django's cache, not in the database: it is thrown away once the turn is recorded
with the whole reply, and a row rewritten four times a second per streaming call would cost
the database more than the call. The cache is one both processes see (Redis, or files under
var/ in development; settings.CACHES), and an entry outlives a worker that dies mid-stream by
PARTIAL_SECONDS at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from django.core.cache import cache

from ..selectors import reply_partial_key

logger = logging.getLogger(__name__)

PARTIAL_SECONDS = 300
# Often enough for the page's poll (every 500 ms while text streams in), seldom enough that a
# reply of hundreds of chunks is a few writes a second.
PUBLISH_EVERY_SECONDS = 0.25


class ReplyPartial:
    """Called with a streaming attempt's parts after each chunk: writes their text once the
    stream has run PUBLISH_EVERY_SECONDS, then at most that often (joined only then: joining
    on every chunk would be quadratic in the reply). A reply that streams in less time, as
    the built-in endpoint's do, costs the cache nothing. A retried attempt starts again:
    the text of the one before is replaced at its first chunk."""

    def __init__(self, call_id: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.key = reply_partial_key(call_id)
        self.clock = clock
        self.since: float | None = None  # the attempt's first chunk, then the last write
        self.parts_seen = 0
        self.published = False

    def __call__(self, parts: Sequence[str]) -> None:
        now = self.clock()
        restarted = len(parts) < self.parts_seen  # a new attempt's list
        self.parts_seen = len(parts)
        if self.since is None or (restarted and not self.published):
            self.since = now
            return
        if not restarted and now - self.since < PUBLISH_EVERY_SECONDS:
            return
        self.since, self.published = now, True
        try:
            cache.set(self.key, "".join(parts), PARTIAL_SECONDS)
        except Exception:  # the page only waits longer; the call itself must not fail
            logger.warning("could not write a streamed reply's text so far", exc_info=True)

    def clear(self) -> None:
        try:
            cache.delete(self.key)
        except Exception:  # it expires anyway
            logger.warning("could not clear a streamed reply's text", exc_info=True)
