"""Usage buckets and the money maths (design.md 2.1 and 2.2).

Owns: usage buckets, Rates, and every money computation.

The API's counters overlap (prompt_tokens includes cached_tokens, completion_tokens includes
reasoning_tokens); every peer has shipped a double count at least once. Here usage is split
into non-overlapping buckets first, and only buckets are ever priced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .types import Usage

# Stored costs keep 12 decimal places: one gpt-4.1-nano cached token costs $0.000000025.
COST_PLACES = Decimal("0.000000000001")


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def usage_from_dict(raw: dict[str, Any]) -> Usage:
    """Flatten an API `usage` object; missing detail fields count as zero."""
    prompt = _int(raw.get("prompt_tokens"))
    completion = _int(raw.get("completion_tokens"))
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    # GPT-5.6 reports newly written prefixes; some logs carry the older spelling.
    cache_write = prompt_details.get("cache_write_tokens")
    if cache_write is None:
        cache_write = prompt_details.get("cache_creation_tokens")
    total = raw.get("total_tokens")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int(total) if total is not None else prompt + completion,
        cached_tokens=_int(prompt_details.get("cached_tokens")),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
        cache_write_tokens=_int(cache_write) if cache_write is not None else None,
        prompt_audio_tokens=_int(prompt_details.get("audio_tokens")),
        completion_audio_tokens=_int(completion_details.get("audio_tokens")),
        raw=raw,
    )


# Buckets and Cost are values, never changed once built. They are not frozen only because a
# frozen dataclass's __init__ pays an object.__setattr__ call per field, and an analysis
# builds several per call (it doubled the time spent pricing).
@dataclass(slots=True)
class Buckets:
    """Non-overlapping token buckets: their sum is exactly prompt + completion tokens.
    `reasoning` is NOT a bucket of its own: it is the part of `output` spent reasoning;
    likewise `audio_input` is part of `input_uncached` and `audio_output` part of `output`."""

    input_uncached: int
    input_cached: int
    input_cache_write: int
    output: int
    reasoning: int = 0
    audio_input: int = 0
    audio_output: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_uncached + self.input_cached + self.input_cache_write

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output

    def without_cache(self) -> Buckets:
        """The same call with no prompt caching at all: the base of "cost reduction"
        (design.md 2.8). Nothing is read from a cache and nothing is written to one, so
        cached and written tokens are plain input."""
        return Buckets(
            input_uncached=self.input_uncached + self.input_cached + self.input_cache_write,
            input_cached=0,
            input_cache_write=0,
            output=self.output,
            reasoning=self.reasoning,
            audio_input=self.audio_input,
            audio_output=self.audio_output,
        )


def buckets_from_usage(usage: Usage) -> Buckets:
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    write = min(usage.cache_write_tokens or 0, usage.prompt_tokens - cached)
    uncached = usage.prompt_tokens - cached - write
    # Clamped as buckets_from_counts does: a report with more reasoning than output gave a
    # negative audio output, and a negative output price where audio has a rate.
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
    return Buckets(
        input_uncached=uncached,
        input_cached=cached,
        input_cache_write=write,
        output=usage.completion_tokens,
        reasoning=reasoning,
        audio_input=min(usage.prompt_audio_tokens, uncached),
        audio_output=max(
            0, min(usage.completion_audio_tokens, usage.completion_tokens - reasoning)
        ),
    )


def buckets_from_counts(
    *,
    prompt_tokens: int,
    cached_tokens: int,
    completion_tokens: int,
    write_tokens: int = 0,
    reasoning_tokens: int = 0,
    audio_output_tokens: int = 0,
) -> Buckets:
    cached = min(cached_tokens, prompt_tokens)
    write = min(write_tokens, prompt_tokens - cached)
    reasoning = min(reasoning_tokens, completion_tokens)
    return Buckets(
        prompt_tokens - cached - write,
        cached,
        write,
        completion_tokens,
        reasoning=reasoning,
        audio_output=min(audio_output_tokens, completion_tokens - reasoning),
    )


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1M tokens for one call, already chosen for its service tier and context tier.
    cached_input None means "no caching discount" (the Batch API): cached tokens pay `input`."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    audio_input: Decimal | None = None  # None: audio tokens pay the text rate
    audio_output: Decimal | None = None


@dataclass(slots=True)
class Cost:
    input_uncached: Decimal
    input_cached: Decimal
    input_cache_write: Decimal
    output: Decimal
    # Sums computed once: totals, running costs and metrics read them for every call.
    input: Decimal = field(init=False, compare=False)
    total: Decimal = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self.input = self.input_uncached + self.input_cached + self.input_cache_write
        self.total = self.input + self.output


_ZERO = Decimal(0).quantize(COST_PLACES)


def _money(tokens: int, rate: Decimal) -> Decimal:
    # tokens * rate is exact and scaleb(-6) only moves the exponent: the same value as
    # dividing by a million, without Decimal's long division. Rounded once, to 12 places.
    if not tokens:
        return _ZERO
    return (rate * tokens).scaleb(-6).quantize(COST_PLACES)


def _price_uncached(tokens: int, audio: int, rates: Rates) -> Decimal:
    """Uncached input: its audio part pays the audio rate where the row has one."""
    if rates.audio_input is None:
        return _money(tokens, rates.input)
    return _money(audio, rates.audio_input) + _money(tokens - audio, rates.input)


def price_buckets(buckets: Buckets, rates: Rates) -> Cost:
    cached_rate = rates.cached_input if rates.cached_input is not None else rates.input
    write_rate = rates.cache_write if rates.cache_write is not None else rates.input
    # Special parts of a bucket (reasoning, audio) pay their own rate where the row has one.
    text_output, output = buckets.output, _ZERO
    if rates.reasoning is not None:
        text_output -= buckets.reasoning
        output += _money(buckets.reasoning, rates.reasoning)
    if rates.audio_output is not None:
        text_output -= buckets.audio_output
        output += _money(buckets.audio_output, rates.audio_output)
    output += _money(max(text_output, 0), rates.output)
    return Cost(
        input_uncached=_price_uncached(buckets.input_uncached, buckets.audio_input, rates),
        input_cached=_money(buckets.input_cached, cached_rate),
        input_cache_write=_money(buckets.input_cache_write, write_rate),
        output=output,
    )


def price_without_cache(buckets: Buckets, rates: Rates, cost: Cost) -> Cost:
    """`price_buckets(buckets.without_cache(), rates)`, reusing `cost` (the same buckets'
    price) for what caching does not change: the output."""
    if not buckets.input_cached and not buckets.input_cache_write:
        return cost
    uncached = buckets.input_uncached + buckets.input_cached + buckets.input_cache_write
    return Cost(
        input_uncached=_price_uncached(uncached, buckets.audio_input, rates),
        input_cached=_ZERO,
        input_cache_write=_ZERO,
        output=cost.output,
    )
