"""Usage records of one turn: costlab's estimate always, the API's report when there is
one. Reported usage wins: it is the billing record and the estimate stays beside it
(design.md 2.1, 2.4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pricing.book import PriceBook, Priced, is_extended

from ..engine.analysis import CallAnalysis
from ..engine.pricing import Buckets, buckets_from_counts, buckets_from_usage
from ..models import Conversation, Turn, UsageRecord, UsageSource


def usage_record_fields(
    *,
    model: str,
    source: str,
    cache_source: str,
    raw: Any,
    buckets: Buckets,
    prompt: int,
    completion: int,
    total: int,
    priced: Priced,
    at: datetime,
    billing: bool,
    cache_eligible: bool,
    cache_ceiling: int | None = None,
) -> dict[str, Any]:
    """A record's columns by attribute name, less its turn, conversation and organization:
    the import writes them as plain rows (services/bulk.py), other writers as instances."""
    return {
        "occurred_at": at,
        "model": model,
        "source": source,
        "cache_source": cache_source,
        "is_billing": billing,
        "raw": raw,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "reasoning_tokens": buckets.reasoning,
        "input_uncached": buckets.input_uncached,
        "input_cached": buckets.input_cached,
        "input_cache_write": buckets.input_cache_write,
        "output": buckets.output,
        # A call that read cached tokens was eligible, whatever the policy says.
        "cache_eligible": cache_eligible or buckets.input_cached > 0,
        "cache_ceiling": cache_ceiling,
        **priced.cost_fields(),
    }


# Causes of a miss a fix could remove (breakdowns.CACHEABLE): the call's prompt to the
# policy's step counts as cacheable. Any other call could read what the simulator had the
# cache hold, no more: the rest of its prompt had never been sent.
AVOIDABLE_KINDS = ("prefix_changed", "expired", "overflow")


def cache_ceiling(result: CallAnalysis) -> int | None:
    """A record's cache_ceiling: None where a cause a fix could remove cost the call a
    hit, else the tokens the simulator had the cache serve it."""
    reason = result.miss_reason
    if reason is not None and (
        reason.kind in AVOIDABLE_KINDS or (reason.kind == "cold" and reason.other_key_seen)
    ):
        return None
    return result.simulated_cached_tokens


def turn_usage_fields(
    *,
    model: str,
    result: CallAnalysis,
    book: PriceBook,
    at: datetime,
    analysed_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The columns of a turn's records (turn_usage_records says which and why).

    `analysed_at`: the time the analysis priced the call at when the call has none (its
    `book.call_rates` `now`). Given, the record whose buckets the analysis priced takes the
    analysis's cost when it is provably the same price: the same row (looked up as
    call_rates looked it up) and the same buckets, so matrix.rates got the same arguments."""
    call = result.call
    analysed_row = (
        book.resolve(call.model, call.started_at or analysed_at)
        if analysed_at is not None and result.cost is not None
        else None
    )

    def priced(buckets: Buckets) -> Priced:
        if (
            analysed_row is not None
            and buckets == result.buckets
            and book.resolve(model, at) is analysed_row
        ):
            assert result.cost is not None and result.cost_no_cache is not None
            return Priced(
                row=analysed_row, cost=result.cost, cost_uncached=result.cost_no_cache.total
            )
        return book.price(
            model=model,
            at=at,
            buckets=buckets,
            service_tier=call.service_tier,
            batch=call.batch,
            extended_retention=is_extended(call.cache_retention),
        )

    ceiling = cache_ceiling(result)
    estimated_buckets = buckets_from_counts(
        prompt_tokens=result.estimated_prompt_tokens,
        cached_tokens=result.simulated_cached_tokens,
        completion_tokens=result.estimated_completion_tokens,
        write_tokens=result.simulated_write_tokens,
    )
    reported = call.usage
    estimated = usage_record_fields(
        model=model,
        source=UsageSource.ESTIMATED,
        cache_source=UsageSource.SIMULATED,
        raw=None,
        buckets=estimated_buckets,
        prompt=result.estimated_prompt_tokens,
        completion=result.estimated_completion_tokens,
        total=result.estimated_prompt_tokens + result.estimated_completion_tokens,
        priced=priced(estimated_buckets),
        at=at,
        billing=reported is None and not result.pending,
        cache_eligible=result.cache_eligible,
        cache_ceiling=ceiling,
    )
    if reported is None:
        return [estimated]
    buckets = buckets_from_usage(reported)
    record = usage_record_fields(
        model=model,
        source=UsageSource.REPORTED,
        cache_source=UsageSource.REPORTED,
        raw=reported.raw,
        buckets=buckets,
        prompt=reported.prompt_tokens,
        completion=reported.completion_tokens,
        total=reported.total_tokens,
        priced=priced(buckets),
        at=at,
        billing=True,
        cache_eligible=result.cache_eligible,
        cache_ceiling=ceiling,
    )
    return [estimated, record]


def turn_usage_records(
    *,
    turn: Turn,
    conversation: Conversation,
    result: CallAnalysis,
    book: PriceBook,
    at: datetime,
) -> list[UsageRecord]:
    """Unsaved records of a turn (callers write them in bulk): the estimated one, then the
    reported one when the API reported usage. At most one of them is billing: a request
    that got no reply (an error, or a transcript's trailing message) was not billed, so
    its estimate stays for what-ifs but counts in no total."""
    return [
        UsageRecord(
            turn=turn,
            organization_id=conversation.organization_id,
            conversation=conversation,
            **fields,
        )
        for fields in turn_usage_fields(model=turn.model, result=result, book=book, at=at)
    ]
