"""The money maths: every fast path gives exactly the plain formula's Decimal."""

from __future__ import annotations

import itertools
from decimal import Decimal

from conversations.engine.pricing import (
    COST_PLACES,
    Buckets,
    Cost,
    Rates,
    buckets_from_usage,
    price_buckets,
    price_without_cache,
    usage_from_dict,
)


def _plain(tokens: int, rate: Decimal) -> Decimal:
    return (Decimal(tokens) * rate / Decimal(1_000_000)).quantize(COST_PLACES)


RATES = [
    Rates(input=Decimal("2.50"), cached_input=Decimal("1.25"), output=Decimal("10")),
    Rates(input=Decimal("0.10"), cached_input=Decimal("0.025"), output=Decimal("0.40")),
    Rates(input=Decimal("0.15"), output=Decimal("0.6")),  # batch: no cache discount
    Rates(
        input=Decimal("2.5"),
        cached_input=Decimal("1.25"),
        output=Decimal("10"),
        cache_write=Decimal("3.125"),
        reasoning=Decimal("12"),
        audio_input=Decimal("40"),
        audio_output=Decimal("80"),
    ),
]
BUCKETS = [
    Buckets(0, 0, 0, 0),
    Buckets(1, 0, 0, 1),
    Buckets(82, 1920, 0, 7),
    Buckets(123_457, 1_000_064, 2_048, 33_333, reasoning=1_000, audio_input=77, audio_output=5),
]


def test_it_prices_a_bucket_exactly_like_tokens_times_rate_over_a_million() -> None:
    rates = RATES[0]
    cost = price_buckets(Buckets(82, 1920, 0, 7), rates)
    assert cost.input_uncached == _plain(82, rates.input) == Decimal("0.000205000000")
    assert cost.input_cached == _plain(1920, Decimal("1.25")) == Decimal("0.002400000000")
    assert cost.output == Decimal("0.000070000000")
    assert cost.total == cost.input + cost.output == Decimal("0.002675000000")
    # one gpt-4.1-nano cached token: the smallest amount the 12 places must hold
    assert price_buckets(Buckets(0, 1, 0, 0), RATES[1]).total == Decimal("0.000000025000")


def test_it_prices_the_no_cache_counterfactual_like_pricing_it_from_scratch() -> None:
    for buckets, rates in itertools.product(BUCKETS, RATES):
        cost = price_buckets(buckets, rates)
        fast = price_without_cache(buckets, rates, cost)
        slow = price_buckets(buckets.without_cache(), rates)
        assert fast == slow
        assert (fast.input, fast.total) == (slow.input, slow.total)
        assert str(fast.total) == str(slow.total)  # same exponent, not only the same value
        assert fast.total >= cost.total


def test_it_keeps_cost_sums_consistent_with_their_parts() -> None:
    cost = Cost(Decimal("1.5"), Decimal("0.25"), Decimal("0"), Decimal("2"))
    assert (cost.input, cost.total) == (Decimal("1.75"), Decimal("3.75"))


def test_it_reads_both_spellings_of_cache_writes_into_the_write_bucket() -> None:
    for spelling in ("cache_write_tokens", "cache_creation_tokens"):
        usage = usage_from_dict(
            {
                "prompt_tokens": 3000,
                "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 1200, spelling: 1500},
            }
        )
        buckets = buckets_from_usage(usage)
        assert (buckets.input_uncached, buckets.input_cached, buckets.input_cache_write) == (
            300,
            1200,
            1500,
        )
        # Never a double count: the buckets add up to what the API reported.
        assert buckets.total_tokens == 3010


def test_it_prices_the_no_cache_counterfactual_with_writes_as_plain_input() -> None:
    rates = Rates(
        input=Decimal("4"),
        output=Decimal("20"),
        cached_input=Decimal("0.4"),
        cache_write=Decimal("5"),
    )
    buckets = Buckets(input_uncached=1000, input_cached=2000, input_cache_write=3000, output=0)
    cost = price_buckets(buckets, rates)
    assert cost.input_cache_write == Decimal("0.015")  # 3000 x $5 / 1M, the write rate
    without = price_without_cache(buckets, rates, cost)
    assert without.total == Decimal("0.024")  # 6000 x $4 / 1M: no reads, no writes
    assert without == price_buckets(buckets.without_cache(), rates)


def test_a_report_with_more_reasoning_than_output_prices_no_negative_audio() -> None:
    """Clamped as buckets_from_counts clamps: reasoning at most the output, audio at most
    what is left of it (a malformed report gave -50 audio tokens and a negative price)."""
    from conversations.engine.pricing import buckets_from_counts, buckets_from_usage
    from conversations.engine.types import Usage

    usage = Usage(
        prompt_tokens=10,
        completion_tokens=100,
        total_tokens=110,
        reasoning_tokens=150,
        completion_audio_tokens=20,
    )
    buckets = buckets_from_usage(usage)
    assert (buckets.reasoning, buckets.audio_output) == (100, 0)
    counted = buckets_from_counts(
        prompt_tokens=10,
        cached_tokens=0,
        completion_tokens=100,
        reasoning_tokens=150,
        audio_output_tokens=20,
    )
    assert (counted.reasoning, counted.audio_output) == (buckets.reasoning, buckets.audio_output)
