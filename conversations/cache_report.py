"""Reads for an organization's cache page (issue 14): what cache misses cost, per reason,
over time and by model; which calls could hit at all; seed 002's metrics against their
targets; and the prefix breakers, the places where prompts stop matching.

Kept apart from selectors.py (the overview) and from breakdowns.py (grouping by any
dimension), whose slice and money expressions it reuses. The summary and the money lost by
reason, day and model read the CacheDay rollup (services/rollups.py) when the slice is whole
days of the organization with at most a model filter, and otherwise one GROUP BY over the
slice's billing records (the raw_* functions, which the tests hold the rollup reads to). Only the side-by-side of two requests and the naming of a breaker's cause read
messages, for the few groups shown, through the engine (engine/divergence.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Avg, Count, F, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay

from pricing.book import PriceBook

from .breakdowns import (
    LOST,
    MISSED_TOKENS,
    OTHER_KEY,
    Slice,
    cache_days,
    days_only,
    none_billed,
    same_days,
)
from .engine.divergence import Divergence, RequestView, compare_requests
from .engine.metrics import (
    COST_REDUCTION_TARGET,
    HIT_RATE_TARGET,
    LATENCY_REDUCTION_TARGET,
    latency_gap,
)
from .models import BreakerDay, CacheDay, MissReason, Organization, Turn, UsageRecord

NOT_ELIGIBLE = (MissReason.NOT_SUPPORTED, MissReason.BELOW_MINIMUM, MissReason.BATCH)
# A call the simulator found no cause of a miss for that lost tokens all the same: the API
# reported fewer cached tokens than the simulator had the cache hold (breakdowns.CACHEABLE).
NO_REASON = "partial"


def reason_label(reason: str) -> str:
    if reason in MissReason.values:
        return str(MissReason(reason).label)
    return "Cached less than predicted" if reason in ("", NO_REASON) else reason


def band_place(value: float | None, band: tuple[float, float]) -> str | None:
    """Where a reduction stands against the seed's reference band: "below", "inside" or
    "above" (better than the band: it said "outside", read as a failure). None: no value."""
    if value is None:
        return None
    if value < band[0]:
        return "below"
    return "inside" if value <= band[1] else "above"


@dataclass(frozen=True)
class CacheSummary:
    calls: int
    eligible: int
    below_minimum: int
    not_supported: int
    batch: int
    hits: int
    prompt_tokens: int
    cached_tokens: int
    cost: Decimal | None
    cost_uncached: Decimal | None
    lost: Decimal | None
    missed_tokens: int
    unpriced: int
    latency_hit_ms: float | None
    latency_miss_ms: float | None

    hit_rate_target = HIT_RATE_TARGET
    cost_target = COST_REDUCTION_TARGET
    latency_target = LATENCY_REDUCTION_TARGET

    @property
    def not_eligible(self) -> int:
        return self.calls - self.eligible

    @property
    def hit_rate_requests(self) -> float | None:
        return self.hits / self.eligible if self.eligible else None

    @property
    def hit_rate_tokens(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None

    @property
    def cost_reduction(self) -> float | None:
        if not self.cost_uncached or self.cost is None:
            return None
        return float(1 - self.cost / self.cost_uncached)

    @property
    def latency_reduction(self) -> float | None:
        if self.latency_hit_ms is None or not self.latency_miss_ms:
            return None
        return 1 - self.latency_hit_ms / self.latency_miss_ms

    @property
    def latency_gap(self) -> str | None:
        return latency_gap(self.latency_hit_ms, self.latency_miss_ms)

    @property
    def cached_per_request(self) -> float | None:
        return self.cached_tokens / self.calls if self.calls else None

    @property
    def hit_rate_met(self) -> bool | None:
        rate = self.hit_rate_requests
        return None if rate is None else rate >= HIT_RATE_TARGET

    @property
    def cost_band(self) -> str | None:
        return band_place(self.cost_reduction, COST_REDUCTION_TARGET)

    @property
    def latency_band(self) -> str | None:
        return band_place(self.latency_reduction, LATENCY_REDUCTION_TARGET)


# Rollup reads --------------------------------------------------------------------------------

SUMMARY_SUMS = {
    "calls": Coalesce(Sum("calls"), 0),
    "eligible": Coalesce(Sum("eligible_calls"), 0),
    "hits": Coalesce(Sum("hit_calls"), 0),
    "priced": Coalesce(Sum("priced_calls"), 0),
    "prompt": Coalesce(Sum("prompt_tokens"), 0),
    "cached_tokens": Coalesce(Sum("input_cached"), 0),
    "cost": Sum("cost_total"),
    "cost_uncached": Sum("cost_uncached"),
    "lost": Sum("lost"),
    "missed_tokens": Coalesce(Sum("missed_tokens"), 0),
    "hit_ms": Coalesce(Sum("latency_hit_ms"), 0),
    "hit_timed": Coalesce(Sum("latency_hit_calls"), 0),
    "miss_ms": Coalesce(Sum("latency_miss_ms"), 0),
    "miss_timed": Coalesce(Sum("latency_miss_calls"), 0),
}


def _summary_from(days: QuerySet[CacheDay]) -> CacheSummary:
    agg = days.aggregate(**SUMMARY_SUMS)
    not_eligible = {
        row["miss_reason"]: row["n"]
        for row in days.filter(miss_reason__in=NOT_ELIGIBLE)
        .values("miss_reason")
        .annotate(n=Sum(F("calls") - F("eligible_calls")))
        .order_by()
    }
    figures = {
        "calls": agg["calls"],
        "eligible": agg["eligible"],
        "below_minimum": not_eligible.get(MissReason.BELOW_MINIMUM, 0),
        "not_supported": not_eligible.get(MissReason.NOT_SUPPORTED, 0),
        "batch": not_eligible.get(MissReason.BATCH, 0),
        "hits": agg["hits"],
        "prompt_tokens": agg["prompt"],
        "cached_tokens": agg["cached_tokens"],
        "cost": agg["cost"],
        "cost_uncached": agg["cost_uncached"],
        "lost": agg["lost"],
        "missed_tokens": agg["missed_tokens"],
        "unpriced": agg["calls"] - agg["priced"],
        "latency_hit_ms": agg["hit_ms"] / agg["hit_timed"] if agg["hit_timed"] else None,
        "latency_miss_ms": agg["miss_ms"] / agg["miss_timed"] if agg["miss_timed"] else None,
    }
    return CacheSummary(**none_billed(figures))


def _lost_from(days: QuerySet[CacheDay], *group: str) -> list[dict[str, Any]]:
    """The raw FIGURES from the rollup: calls, missed tokens and money of the calls that
    missed (named apart from the rollup's own columns, then renamed as the raw rows are)."""
    rows = (
        days.filter(missed_calls__gt=0)
        .annotate(reason=F("miss_reason"))
        .values(*group, "reason")
        .annotate(n=Sum("missed_calls"), tokens=Sum("missed_tokens"), money=Sum("missed_lost"))
        .order_by(
            *(F("money").desc(nulls_last=True), "reason") if not group else (*group, "reason")
        )
    )
    return [
        {**{k: row[k] for k in (*group, "reason")}, "calls": row["n"],
         "missed_tokens": row["tokens"], "lost": row["money"]}
        for row in rows
    ]  # fmt: skip


def cache_summary(organization: Organization, slice_: Slice) -> CacheSummary:
    days = cache_days(organization, slice_)
    if days is not None:
        return _summary_from(days)
    return raw_cache_summary(organization, slice_)


def raw_cache_summary(organization: Organization, slice_: Slice) -> CacheSummary:
    records = slice_.records(organization)
    not_eligible = Q(cache_eligible=False)
    agg = records.aggregate(
        calls=Count("id"),
        eligible=Count("id", filter=Q(cache_eligible=True)),
        below_minimum=Count("id", filter=not_eligible & Q(turn__miss_reason="below_minimum")),
        not_supported=Count("id", filter=not_eligible & Q(turn__miss_reason="not_supported")),
        batch=Count("id", filter=not_eligible & Q(turn__miss_reason="batch")),
        hits=Count("id", filter=Q(cache_eligible=True, input_cached__gt=0)),
        prompt=Coalesce(Sum("prompt_tokens"), 0),  # not prompt_tokens: LOST reads that
        cached_tokens=Coalesce(Sum("input_cached"), 0),
        cost=Sum("cost_total"),
        cost_uncached=Sum("cost_uncached", filter=Q(cost_total__isnull=False)),
        lost=Sum(LOST),
        missed_tokens=Coalesce(Sum(MISSED_TOKENS), 0),
        unpriced=Count("id", filter=Q(cost_total__isnull=True)),
        latency_hit_ms=Avg("turn__latency_ms", filter=Q(input_cached__gt=0)),
        latency_miss_ms=Avg("turn__latency_ms", filter=Q(input_cached=0, cache_eligible=True)),
    )
    agg["prompt_tokens"] = agg.pop("prompt")
    return CacheSummary(**none_billed(agg))


@dataclass(frozen=True)
class LostRow:
    """Money lost to one miss reason (within one day or model when grouped so)."""

    reason: str
    calls: int
    missed_tokens: int
    lost: Decimal | None
    day: date | None = None
    model: str | None = None

    @property
    def label(self) -> str:
        if self.reason == MissReason.COLD:
            # The only cold misses that lose money (breakdowns.CACHEABLE): a first sight
            # loses nothing, so "First sight" above money lost read as a contradiction.
            return "Cold: prefix cached under another prompt_cache_key"
        return reason_label(self.reason)


def _missed(organization: Organization, slice_: Slice) -> Any:
    """Eligible calls that got less than their cacheable prefix: the misses that cost."""
    return (
        slice_.records(organization)
        .filter(cache_eligible=True)
        .annotate(missed=MISSED_TOKENS, reason=F("turn__miss_reason"))
        .filter(missed__gt=0)
    )


def _lost_rows(rows: Any, **extra: str) -> list[LostRow]:
    out = []
    for row in rows:
        more = {name: row[column] for name, column in extra.items()}
        if isinstance(more.get("day"), datetime):
            more["day"] = more["day"].date()
        out.append(
            LostRow(
                reason=row["reason"] or NO_REASON,
                calls=row["calls"],
                missed_tokens=row["missed_tokens"],
                lost=row["lost"],
                **more,
            )
        )
    return out


FIGURES = {"calls": Count("id"), "missed_tokens": Sum("missed"), "lost": Sum(LOST)}


REASON_ORDER = (F("lost").desc(nulls_last=True), "reason")


def lost_by_reason(organization: Organization, slice_: Slice) -> list[LostRow]:
    days = cache_days(organization, slice_)
    if days is not None:
        return _lost_rows(_lost_from(days))
    return raw_lost_by_reason(organization, slice_)


def raw_lost_by_reason(organization: Organization, slice_: Slice) -> list[LostRow]:
    rows = (
        _missed(organization, slice_).values("reason").annotate(**FIGURES).order_by(*REASON_ORDER)
    )
    return _lost_rows(rows)


def lost_by_day(organization: Organization, slice_: Slice) -> list[LostRow]:
    """By day of the slice's zone: from the rollup where those are the organization's days."""
    days = cache_days(organization, slice_) if same_days(organization, slice_) else None
    if days is not None:
        return _lost_rows(_lost_from(days, "day"), day="day")
    return raw_lost_by_day(organization, slice_)


def raw_lost_by_day(organization: Organization, slice_: Slice) -> list[LostRow]:
    rows = (
        _missed(organization, slice_)
        .annotate(day=TruncDay("occurred_at", tzinfo=ZoneInfo(slice_.zone)))
        .values("day", "reason")
        .annotate(**FIGURES)
        .order_by("day", "reason")
    )
    return _lost_rows(rows, day="day")


def lost_by_model(organization: Organization, slice_: Slice) -> list[LostRow]:
    days = cache_days(organization, slice_)
    if days is not None:
        return _lost_rows(_lost_from(days, "model"), model="model")
    return raw_lost_by_model(organization, slice_)


def raw_lost_by_model(organization: Organization, slice_: Slice) -> list[LostRow]:
    rows = (
        _missed(organization, slice_)
        .values("model", "reason")
        .annotate(**FIGURES)
        .order_by("model", "reason")
    )
    return _lost_rows(rows, model="model")


# Prefix breakers --------------------------------------------------------------------------

BLOCK = 128  # breakers diverging inside the same 128-token block are one place
# BreakerDay's message for a prefix that changed in the tools or the response format (the
# turn's miss_message is NULL there; a key column cannot be).
TOOLS_MESSAGE = -1


@dataclass(frozen=True)
class Breaker:
    """A place where prompts stop matching: the same model, message position and token
    block. `first`/`second` are two of its calls, for the side-by-side."""

    model: str
    message: int | None  # None: in the tools or the response format
    block: int
    first_token: int
    last_token: int
    calls: int
    conversations: int
    lost: Decimal | None
    first: int  # turn ids
    second: int
    divergence: Divergence | None = None

    @property
    def where(self) -> str:
        place = f"message {self.message}" if self.message is not None else "tools/format"
        tokens = (
            f"token {self.first_token:,}"
            if self.first_token == self.last_token
            else f"tokens {self.first_token:,}-{self.last_token:,}"
        )
        return f"{place}, {tokens}"


BREAKER_ORDER = (F("lost").desc(nulls_last=True), F("calls").desc(), "model", "block")


def prefix_breakers(
    organization: Organization, slice_: Slice, *, limit: int = 10, explain: int = 5
) -> list[Breaker]:
    """The places where prefixes diverge, costliest first; the first `explain` of them
    with a side-by-side of two requests and the named cause. From the BreakerDay rollup
    where the slice is whole days with at most a model filter, else from the raw rows."""
    breakers = _rollup_breakers(organization, slice_, limit)
    if breakers is None:
        breakers = raw_prefix_breakers(organization, slice_, limit=limit)
    book = PriceBook.for_organization(organization)
    return [
        _explained(organization, breaker, book) if n < explain else breaker
        for n, breaker in enumerate(breakers)
    ]


def _rollup_breakers(organization: Organization, slice_: Slice, limit: int) -> list[Breaker] | None:
    where = days_only(organization, slice_)  # None: the slice is not the rollup's to answer
    if where is None:
        return None
    rows = (
        BreakerDay.objects.filter(where, organization=organization)
        .values("model", "message", "block")
        .annotate(
            first_token=Min("first_token"),
            last_token=Max("last_token"),
            calls=Sum("calls"),
            conversations=Count("conversation", distinct=True),
            lost=Sum("lost"),
            first=Min("first_turn"),
            second=Max("last_turn"),
        )
        .order_by(*BREAKER_ORDER)[:limit]
    )
    return [
        Breaker(**{**row, "message": None if row["message"] == TOOLS_MESSAGE else row["message"]})
        for row in rows
    ]


def raw_prefix_breakers(
    organization: Organization, slice_: Slice, *, limit: int = 10
) -> list[Breaker]:
    """prefix_breakers' groups from the raw rows, without the side-by-side."""
    rows = (
        slice_.records(organization)
        .filter(turn__miss_reason=MissReason.PREFIX_CHANGED, turn__miss_token__isnull=False)
        .annotate(block=F("turn__miss_token") / BLOCK, message=F("turn__miss_message"))
        .values("model", "message", "block")
        .annotate(
            first_token=Min("turn__miss_token"),
            last_token=Max("turn__miss_token"),
            calls=Count("id"),
            conversations=Count("conversation", distinct=True),
            lost=Sum(LOST),
            first=Min("turn_id"),
            second=Max("turn_id"),
        )
        .order_by(*BREAKER_ORDER)[:limit]
    )
    return [Breaker(**row) for row in rows]


def _request_view(turn: Turn) -> RequestView:
    indexes = turn.request_indexes()
    data = dict(turn.conversation.messages.filter(index__in=indexes).values_list("index", "data"))
    return RequestView(
        messages=[data[i] for i in indexes if i in data],
        tools=turn.tools,
        response_format=turn.response_format,
        prompt_cache_key=turn.prompt_cache_key or None,
        responses_api=turn.responses_api,
    )


def _other_turn(organization: Organization, turn: Turn) -> Turn | None:
    """A call to compare a lone breaker with: the latest earlier call of the same model
    from another conversation (the prefix it found in the cache came from one)."""
    record = (
        UsageRecord.objects.filter(
            organization=organization,
            is_billing=True,
            model=turn.model,
            id__lt=turn.usage_records.filter(is_billing=True).values("id")[:1],
        )
        .exclude(conversation_id=turn.conversation_id)
        .order_by("-id")
        .select_related("turn__conversation")
        .first()
    )
    return record.turn if record else None


def _explained(organization: Organization, breaker: Breaker, book: PriceBook) -> Breaker:
    turns = Turn.objects.select_related("conversation").filter(
        conversation__organization=organization, id__in=(breaker.first, breaker.second)
    )
    by_id = {t.id: t for t in turns}
    first = by_id.get(breaker.first)
    second = by_id.get(breaker.second) if breaker.second != breaker.first else None
    if first is None:
        return breaker
    if second is None:
        second = _other_turn(organization, first)
    if second is None:
        return breaker
    divergence = compare_requests(
        _request_view(second), _request_view(first), profile=book.profile(first.model or None)
    )
    return Breaker(**{**breaker.__dict__, "divergence": divergence})


# Key problems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyProblem:
    name: str  # "changing_key" or "missing_key"
    label: str
    calls: int
    lost: Decimal | None


def key_problems(organization: Organization, slice_: Slice) -> list[KeyProblem]:
    """Misses a prompt_cache_key caused or could have avoided: a cold miss on a prefix the
    cache held under another key (the key changed), and misses of calls sent without one."""
    days = cache_days(organization, slice_)
    if days is not None:
        sums = days.aggregate(
            changing_calls=Coalesce(Sum("other_key_calls"), 0),
            changing_lost=Sum("other_key_lost"),
            missing_calls=Coalesce(Sum("no_key_calls"), 0),
            missing_lost=Sum("no_key_lost"),
        )
        changing = {"calls": sums["changing_calls"], "lost": sums["changing_lost"]}
        missing = {"calls": sums["missing_calls"], "lost": sums["missing_lost"]}
    else:
        changing, missing = _raw_key_problems(organization, slice_)
    return _problems(changing, missing)


def raw_key_problems(organization: Organization, slice_: Slice) -> list[KeyProblem]:
    changing, missing = _raw_key_problems(organization, slice_)
    return _problems(changing, missing)


def _problems(changing: dict[str, Any], missing: dict[str, Any]) -> list[KeyProblem]:
    problems = [
        KeyProblem("changing_key", "prompt_cache_key changes: the prefix was cached under another key",
                   changing["calls"], changing["lost"]),
        # Not a cause: these calls missed for their own reasons (the table above), and a key
        # would not have avoided all of them (a conversation's key levers say how many).
        KeyProblem("missing_key", "misses of calls sent without a prompt_cache_key (for any "
                   "reason: a key would not have avoided all of them)",
                   missing["calls"], missing["lost"]),
    ]  # fmt: skip
    return [p for p in problems if p.calls]


def _raw_key_problems(
    organization: Organization, slice_: Slice
) -> tuple[dict[str, Any], dict[str, Any]]:
    missed = _missed(organization, slice_)
    changing = missed.filter(reason="cold", turn__miss_detail__startswith=OTHER_KEY).aggregate(
        calls=Count("id"), lost=Sum(LOST)
    )
    missing = missed.filter(turn__prompt_cache_key="").aggregate(calls=Count("id"), lost=Sum(LOST))
    return changing, missing
