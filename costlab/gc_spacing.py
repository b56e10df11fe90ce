"""Fewer cyclic garbage collections while a bulk job allocates many short-lived objects.

CPython starts a collection each time 700 more container objects (dicts, lists, tuples) are
alive than at the last one. An import builds about 100,000 row dicts a chunk, alive until
the chunk is written, and freed by reference counting after, not by the collector: a
collection every 700 of them found next to nothing to free, and took 0.35-0.43 s of a 50 MB
import's 6 s (issue 13: some 570 collections, 5 of them over every object in the process).
With a larger first threshold the collector still runs when cyclic garbage piles up, later.

Thresholds are the process's: the first caller in sets them, the last one out puts back
what it found (imports may run in threads of one process)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Net container allocations between collections of the youngest generation (CPython: 700).
SPACED_THRESHOLD = 50_000

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def spaced_collections() -> Iterator[None]:
    """Run the block with the first collection threshold at least SPACED_THRESHOLD."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            first, *older = _saved
            gc.set_threshold(max(first, SPACED_THRESHOLD), *older)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
