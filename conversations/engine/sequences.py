"""Token sequences: the ids they hold and their packed form (design.md 2.4).

Owns: the id space of a rendered prompt (real ids, negative placeholders) and packed int32 bytes.

Chat-format tokens that are not text (<|start|>, <|message|>, <|end|>, tool-block framing)
become negative placeholder ids: they can never collide with a real token, and they make
`len(tokens)` the cookbook count. A message renders as
  START role [name] MESSAGE body END...  (one END per extra overhead token)
and reply priming as START "assistant" MESSAGE, which is exactly how the next assistant
message starts: the previous prompt is then a true prefix of the next one, as on the API.
Every placeholder range is allocated here, so that no two can overlap.
"""

from __future__ import annotations

import functools
import hashlib
from array import array
from collections.abc import Iterable
from typing import Final

# Not -1: hash(-1) == hash(-2) in CPython, and block hashes hash token tuples.
START = -5
MESSAGE = -6
CHANNEL = -7  # <|channel|>: reasoning models' assistant messages (profiles.harmony)
END = -10  # -10, -11, ...: trailing per-message overhead
PRIMING = -200  # priming, when it cannot be the start of an assistant message
FORCED = -300  # framing of a reply addressed to a forced function (render.forced_call_tokens)
STRUCTURED = -400  # earlier structured replies' marks (render.structured_reply_tokens)
RESULTS = -500  # Responses API tool results' marks (render.responses_result_tokens)
TOOL = -1_000  # tool-definition framing (the text itself is real tokens)
# Images and synthetic messages: hashed runs far below the framing ids.
_HASHED_BASE = -(10**6)
_HASHED_SPAN = 2**30


@functools.cache
def fillers(base: int, count: int) -> tuple[int, ...]:
    return tuple(base - i for i in range(count))


def filler(base: int, count: int) -> list[int]:
    return list(fillers(base, count))


def hashed_run(seed: str, count: int) -> list[int]:
    """`count` placeholder ids derived from `seed`: equal seeds give equal runs."""
    start = int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "big")
    return [_HASHED_BASE - (start + i) % _HASHED_SPAN for i in range(count)]


def with_overhead(base: int, overhead: int, tokens: list[int], *, after: bool = False) -> list[int]:
    """Framing placeholders around text tokens; a negative overhead (the cookbook's enum_init,
    0301's per-name -1) eats into the text so the length stays the documented count."""
    if overhead < 0:
        return tokens[: max(0, len(tokens) + overhead)]
    run = filler(base, overhead)
    return tokens + run if after else run + tokens


# The engine keeps token sequences as bytes of native int32 ("packed"), not as lists of Python
# ints: a list costs ~36 bytes and one object allocation per token, a packed sequence 4 bytes
# and none. Blocks are then hashed straight from byte slices, and retained messages stay small.
# Every id fits: real ids are < 2**31 and the placeholders above are > -2**31.
PACKED: Final = "i"
TOKEN_BYTES = array(PACKED).itemsize
if TOKEN_BYTES != 4:  # pragma: no cover - every platform CPython supports has a 4-byte int
    raise ImportError("costlab needs a 4-byte C int for packed token sequences")


def pack(tokens: Iterable[int]) -> bytes:
    return array(PACKED, tokens).tobytes()


def unpack(packed: bytes) -> list[int]:
    return memoryview(packed).cast(PACKED).tolist()
