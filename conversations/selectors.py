"""Read paths. Every query starts from an organization the caller is a member of, and
aggregates in the database: pages never loop over usage rows in Python."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connections, router
from django.db.models import Case, F, FilteredRelation, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce
from django.http import Http404

from .engine.calibration import ModelCalibration
from .engine.metrics import latency_gap
from .engine.types import Call, ReportedOutput, Transcript
from .models import (
    CalibrationGap,
    Conversation,
    ConversationDay,
    ConversationSource,
    ConversationTotals,
    DimensionDay,
    ImportJob,
    Membership,
    Organization,
    Turn,
    UsageDay,
    UsageRecord,
    UsageSource,
)
from .ranges import request_indexes

RollupT = TypeVar("RollupT", UsageDay, ConversationDay, CalibrationGap, DimensionDay)

AnyUser = AbstractBaseUser | AnonymousUser


def user_organizations(user: AnyUser) -> list[Organization]:
    if not user.is_authenticated:
        return []
    return list(Organization.objects.filter(memberships__user_id=user.pk).order_by("name"))


def membership_get(*, user: AnyUser, slug: str) -> Membership:
    """The user's membership of the organization, or 404: a non-member must not even
    learn that the organization exists."""
    if not user.is_authenticated:
        raise Http404
    try:
        return Membership.objects.select_related("organization").get(
            user_id=user.pk, organization__slug=slug
        )
    except Membership.DoesNotExist:
        raise Http404 from None


def members(organization: Organization) -> list[Membership]:
    return list(
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .order_by("user__username")
    )


def member_get(*, organization: Organization, code: UUID) -> Membership:
    try:
        return Membership.objects.select_related("user", "organization").get(
            organization=organization, code=code
        )
    except Membership.DoesNotExist:
        raise Http404 from None


def conversation_get(*, organization: Organization, code: UUID) -> Conversation:
    try:
        return Conversation.objects.get(organization=organization, code=code)
    except Conversation.DoesNotExist:
        raise Http404 from None


def import_job_get(*, organization: Organization, code: UUID) -> ImportJob:
    try:
        return ImportJob.objects.get(organization=organization, code=code)
    except ImportJob.DoesNotExist:
        raise Http404 from None


@dataclass(frozen=True)
class UsageFilter:
    """Days are the organization's (Organization.time_zone), both ends included."""

    date_from: date | None = None
    date_to: date | None = None
    model: str = ""

    def apply(
        self, records: QuerySet[UsageRecord], organization: Organization
    ) -> QuerySet[UsageRecord]:
        """Raw usage: the days as a half-open range of instants, which the (organization,
        time) index serves; a cast of each row's time to a date would read them all."""
        zone = ZoneInfo(organization.time_zone)
        if self.date_from:
            records = records.filter(occurred_at__gte=_day_start(self.date_from, zone))
        if self.date_to:
            records = records.filter(
                occurred_at__lt=_day_start(self.date_to + timedelta(days=1), zone)
            )
        if self.model:
            records = records.filter(model=self.model)
        return records

    def apply_days(self, rows: QuerySet[RollupT]) -> QuerySet[RollupT]:
        """Rollups are kept per day of the organization: the days filter them as they are."""
        if self.date_from:
            rows = rows.filter(day__gte=self.date_from)
        if self.date_to:
            rows = rows.filter(day__lte=self.date_to)
        if self.model:
            rows = rows.filter(model=self.model)
        return rows

    @property
    def is_empty(self) -> bool:
        return not (self.date_from or self.date_to or self.model)


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone)


def billing_records(organization: Organization, filters: UsageFilter) -> QuerySet[UsageRecord]:
    """The usage that counts: one record per turn, reported when the API reported it."""
    return filters.apply(
        UsageRecord.objects.filter(organization=organization, is_billing=True), organization
    )


def usage_days(organization: Organization, filters: UsageFilter) -> QuerySet[UsageDay]:
    """The organization's daily rollups under the filter (services/rollups.py keeps them)."""
    return filters.apply_days(UsageDay.objects.filter(organization=organization))


@dataclass(frozen=True)
class OrgTotals:
    calls: int
    priced_calls: int
    cost: Decimal | None
    cost_uncached: Decimal | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    eligible_calls: int
    hit_calls: int
    unpriced_models: list[tuple[str, int]]
    conversations: int
    latency_hit_ms: float | None = None
    latency_miss_ms: float | None = None

    @property
    def latency_reduction(self) -> float | None:
        if self.latency_hit_ms is None or not self.latency_miss_ms:
            return None
        return 1 - self.latency_hit_ms / self.latency_miss_ms

    @property
    def latency_gap(self) -> str | None:
        return latency_gap(self.latency_hit_ms, self.latency_miss_ms)

    @property
    def priced_coverage(self) -> float | None:
        return self.priced_calls / self.calls if self.calls else None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def hit_rate_requests(self) -> float | None:
        return self.hit_calls / self.eligible_calls if self.eligible_calls else None

    @property
    def hit_rate_tokens(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None

    @property
    def cost_reduction(self) -> float | None:
        if not self.cost_uncached or self.cost is None:
            return None
        return float(1 - self.cost / self.cost_uncached)


def unpriced_since(organization: Organization, models: list[str]) -> dict[str, date]:
    """The day (in the organization's zone) of each model's first unpriced call, from the
    rollup: where a price row must start to price them all (the overview's link)."""
    rows = (
        UsageDay.objects.filter(
            organization=organization, model__in=models, priced_calls__lt=F("calls")
        )
        .values("model")
        .annotate(first=Min("day"))
        .order_by()
    )
    return {row["model"]: row["first"] for row in rows}


def _average(total: int | None, count: int | None) -> float | None:
    return total / count if total is not None and count else None


def org_totals(organization: Organization, filters: UsageFilter) -> OrgTotals:
    days = usage_days(organization, filters)
    agg = days.aggregate(
        calls=Coalesce(Sum("calls"), 0),
        priced_calls=Coalesce(Sum("priced_calls"), 0),
        cost=Sum("cost_total"),
        cost_uncached=Sum("cost_uncached"),
        prompt=Coalesce(Sum("prompt_tokens"), 0),
        cached=Coalesce(Sum("input_cached"), 0),
        completion=Coalesce(Sum("completion_tokens"), 0),
        eligible=Coalesce(Sum("eligible_calls"), 0),
        hits=Coalesce(Sum("hit_calls"), 0),
        latency_hit=Sum("latency_hit_ms"),
        latency_hit_calls=Sum("latency_hit_calls"),
        latency_miss=Sum("latency_miss_ms"),
        latency_miss_calls=Sum("latency_miss_calls"),
    )
    unpriced = list(
        days.values("model")
        .annotate(unpriced=Sum("calls") - Sum("priced_calls"))
        .filter(unpriced__gt=0)
        .order_by("-unpriced", "model")
        .values_list("model", "unpriced")
    )
    return OrgTotals(
        calls=agg["calls"],
        priced_calls=agg["priced_calls"],
        # No call under the filter costs nothing; calls none of which is priced: unknown.
        cost=agg["cost"] if agg["calls"] else Decimal(0),
        cost_uncached=agg["cost_uncached"],
        prompt_tokens=agg["prompt"],
        cached_tokens=agg["cached"],
        completion_tokens=agg["completion"],
        eligible_calls=agg["eligible"],
        hit_calls=agg["hits"],
        unpriced_models=[(m or "(no model)", n) for m, n in unpriced],
        conversations=conversation_count(organization, filters),
        latency_hit_ms=_average(agg["latency_hit"], agg["latency_hit_calls"]),
        latency_miss_ms=_average(agg["latency_miss"], agg["latency_miss_calls"]),
    )


def conversation_count(organization: Organization, filters: UsageFilter) -> int:
    """Conversations with billing usage under the filter."""
    if filters.is_empty:
        return ConversationTotals.objects.filter(organization=organization).count()
    return (
        filters.apply_days(ConversationDay.objects.filter(organization=organization))
        .values("conversation_id")
        .distinct()
        .count()
    )


@dataclass(frozen=True)
class ModelCost:
    """One bar of the cost-by-model chart: a model's billing usage over the filter. Token
    sums are never NULL: a group has at least one record and token columns are NOT NULL."""

    model: str
    cost: Decimal | None  # None when every call of the model is unpriced
    calls: int
    tokens: int
    unpriced: int


def cost_by_model(organization: Organization, filters: UsageFilter) -> list[ModelCost]:
    rows = (
        usage_days(organization, filters)
        .values("model")
        .annotate(
            cost=Sum("cost_total"),
            # Renamed and cast back: an annotation may not take a field's name.
            n=Sum("calls"),
            tokens=Sum("total_tokens"),
            unpriced=Sum("calls") - Sum("priced_calls"),
        )
        .order_by(F("cost").desc(nulls_last=True), "model")
    )
    return [
        ModelCost(
            model=row["model"],
            cost=row["cost"],
            calls=row["n"],
            tokens=row["tokens"],
            unpriced=row["unpriced"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class DayCost:
    """One day of billing usage: its cost split by bucket and its cache hits."""

    day: date
    cost: Decimal | None
    cached: Decimal | None
    uncached: Decimal
    output: Decimal | None
    calls: int
    prompt: int
    cached_tokens: int
    eligible: int
    hits: int


def cost_by_day(organization: Organization, filters: UsageFilter) -> list[DayCost]:
    rows = (
        usage_days(organization, filters)
        .values("day")
        .annotate(
            cost=Sum("cost_total"),
            cached=Sum("cost_input_cached"),
            # Cache writes are uncached input too (where the API reports them).
            uncached=Coalesce(Sum("cost_input_uncached"), Decimal(0))
            + Coalesce(Sum("cost_input_cache_write"), Decimal(0)),
            output=Sum("cost_output"),
            n=Sum("calls"),
            prompt=Sum("prompt_tokens"),
            cached_tokens=Sum("input_cached"),
            eligible=Sum("eligible_calls"),
            hits=Sum("hit_calls"),
        )
        .order_by("day")
    )
    return [DayCost(calls=row.pop("n"), **row) for row in rows]


def models_used(organization: Organization) -> list[str]:
    return list(
        UsageDay.objects.filter(organization=organization)
        .values_list("model", flat=True)
        .distinct()
        .order_by("model")
    )


# Each sort with its tie-breaker in the same direction, so that a descending sort walks the
# ascending index backwards (ConversationTotals.Meta.indexes). Unpriced conversations (cost
# NULL) come before every priced one in ascending order and after them in descending order.
CONVERSATION_SORTS: dict[str, tuple[str, ...]] = {
    "cost": ("is_priced", "cost", "conversation_id"),
    "-cost": ("-is_priced", "-cost", "-conversation_id"),
    # Money lost to cache misses (breakdowns.LOST): NULL exactly when nothing is priced.
    "lost": ("is_priced", "missed", "conversation_id"),
    "-lost": ("-is_priced", "-missed", "-conversation_id"),
    "turns": ("turn_count", "conversation_id"),
    "-turns": ("-turn_count", "-conversation_id"),
    "tokens": ("tokens", "conversation_id"),
    "-tokens": ("-tokens", "-conversation_id"),
    "created": ("conversation__created", "conversation_id"),
    "-created": ("-conversation__created", "-conversation_id"),
    "title": ("conversation__title", "conversation_id"),
    "-title": ("-conversation__title", "-conversation_id"),
}


@dataclass(frozen=True)
class ConversationRow:
    """One row of the overview's conversation table: usage sums over the filter. The token
    sums are never NULL: a listed conversation has at least one record in the filter."""

    code: UUID
    title: str
    model: str
    created: datetime
    started_at: datetime | None  # its first call, when the file said (not when it was added)
    cost: Decimal | None  # None when none of its calls is priced
    lost: Decimal | None  # lost to cache misses (breakdowns.LOST); None as cost
    tokens: int
    turn_count: int
    cached: int
    prompt: int
    unpriced: int


# ConversationRow's sums and the rollup columns they come from.
CONVERSATION_SUMS = {
    "cost": "cost_total",
    "missed": "lost",  # (a sum may not take the name of the rollup's column)
    "tokens": "total_tokens",
    "turn_count": "calls",
    "cached": "input_cached",
    "prompt": "prompt_tokens",
}


def conversation_list(
    organization: Organization, filters: UsageFilter, *, sort: str = "-cost", limit: int = 200
) -> list[ConversationRow]:
    """The top conversations by a sort, with their usage under the filter. Unfiltered, the
    rows come off ConversationTotals' index for the sort; filtered, from the organization's
    ConversationDay rows in the filter (about one per conversation), summed per
    conversation. Either way the query reads only this organization's rows."""
    order = CONVERSATION_SORTS.get(sort, CONVERSATION_SORTS["-cost"])
    if filters.is_empty and order[0].lstrip("-").startswith("conversation__"):
        return _conversation_list_by_own_columns(organization, order, limit)
    rows: QuerySet[Any]
    if filters.is_empty:
        rows = ConversationTotals.objects.filter(organization=organization).annotate(
            **{name: F(column) for name, column in CONVERSATION_SUMS.items()},
            unpriced=F("calls") - F("priced_calls"),
        )
    else:
        rows = (
            filters.apply_days(ConversationDay.objects.filter(organization=organization))
            .values("conversation_id")
            .annotate(
                **{name: Sum(column) for name, column in CONVERSATION_SUMS.items()},
                unpriced=Sum("calls") - Sum("priced_calls"),
                priced=Sum("priced_calls"),
            )
            .annotate(is_priced=Case(When(priced__gt=0, then=Value(True)), default=Value(False)))
        )
    if order[0].lstrip("-").startswith("conversation__"):
        # Filtered and sorted by the conversation's own columns: the conversation's index
        # leads.
        rows = rows.filter(conversation__organization=organization)
    top = list(
        rows.order_by(*order).values("conversation_id", *CONVERSATION_SUMS, "unpriced")[:limit]
    )
    conversations = {
        c["pk"]: c
        for c in Conversation.objects.filter(
            organization=organization, pk__in=[row["conversation_id"] for row in top]
        ).values(*_CONVERSATION_COLUMNS)
    }
    return [_conversation_row(conversations[row["conversation_id"]], row) for row in top]


_CONVERSATION_COLUMNS = ("pk", "code", "title", "model", "created", "started_at")


def _conversation_row(conversation: dict[str, Any], sums: dict[str, Any]) -> ConversationRow:
    return ConversationRow(
        code=conversation["code"],
        title=conversation["title"],
        model=conversation["model"],
        created=conversation["created"],
        started_at=conversation["started_at"],
        cost=sums["cost"],
        lost=sums["missed"],
        tokens=sums["tokens"],
        turn_count=sums["turn_count"],
        cached=sums["cached"],
        prompt=sums["prompt"],
        unpriced=sums["unpriced"],
    )


def _conversation_list_by_own_columns(
    organization: Organization, order: tuple[str, ...], limit: int
) -> list[ConversationRow]:
    """The unfiltered list sorted by the conversation's own columns (created, title): the
    organization's conversations off their index for the sort, then their totals by id, a
    batch at a time until `limit` have usage. Two plain lookups, not a join, whose plan
    on a small table could read the organization's totals once per conversation."""
    own = [
        f"{'-' if term.startswith('-') else ''}"
        f"{term.lstrip('-').removeprefix('conversation__').replace('conversation_id', 'id')}"
        for term in order
    ]
    conversations = (
        Conversation.objects.filter(organization=organization)
        .order_by(*own)
        .values(*_CONVERSATION_COLUMNS)
    )
    found: list[ConversationRow] = []
    offset, batch = 0, limit
    while len(found) < limit:
        page = list(conversations[offset : offset + batch])
        if not page:
            break
        sums = {
            row["conversation_id"]: row
            for row in ConversationTotals.objects.filter(
                organization=organization, conversation_id__in=[c["pk"] for c in page]
            )
            .annotate(
                **{name: F(column) for name, column in CONVERSATION_SUMS.items()},
                unpriced=F("calls") - F("priced_calls"),
            )
            .values("conversation_id", *CONVERSATION_SUMS, "unpriced")
        }
        found += [_conversation_row(c, sums[c["pk"]]) for c in page if c["pk"] in sums]
        offset, batch = offset + batch, batch * 2  # conversations without usage: rare
    return found[:limit]


@dataclass(frozen=True)
class TurnRow:
    """One turn (API call) with its usage records: `reported` (absent when the API gave no
    usage) and `estimated` (costlab's own count)."""

    turn: Turn
    reported: UsageRecord | None
    estimated: UsageRecord | None

    @property
    def shown(self) -> UsageRecord | None:
        """What the turn table displays: the reported usage when there is one."""
        return self.reported or self.estimated

    @property
    def billing(self) -> UsageRecord | None:
        """The record that counts; None for a request that got no reply (not billed)."""
        shown = self.shown
        return shown if shown is not None and shown.is_billing else None

    @property
    def cached_short(self) -> int:
        """Tokens the API cached short of the simulator's hit, on a call the simulator
        found no miss for: what the cache page counts lost as "Cached less than
        predicted" (breakdowns.CACHEABLE). 0 elsewhere."""
        reported = self.reported
        if reported is None or not reported.cache_eligible or self.turn.miss_reason:
            return 0
        return max(self.turn.simulated_cached_tokens - reported.input_cached, 0)


def conversation_turns(conversation: Conversation) -> list[TurnRow]:
    turns = (
        conversation.turns.select_related("response")
        .prefetch_related("usage_records")
        .order_by("index")
    )
    rows = []
    for turn in turns:
        by_source = {r.source: r for r in turn.usage_records.all()}
        rows.append(
            TurnRow(
                turn=turn,
                reported=by_source.get(UsageSource.REPORTED),
                estimated=by_source.get(UsageSource.ESTIMATED),
            )
        )
    return rows


def import_jobs(organization: Organization, *, limit: int = 20) -> list[ImportJob]:
    return list(organization.import_jobs.order_by("-created")[:limit])


def imported_without_job(organization: Organization) -> int:
    """Conversations read as imported that no import job brought (`manage.py seed_demo`'s
    demo data): the imports page says where they came from, beside an empty list."""
    imported = (ConversationSource.IMPORT, ConversationSource.API_LOG, ConversationSource.BATCH)
    return organization.conversations.filter(source__in=imported, import_job__isnull=True).count()


@dataclass(frozen=True)
class ConversationSummary:
    cost: Decimal | None
    unpriced: int
    billed_turns: int  # turns that got a reply (a request with none was not billed)
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reported_turns: int
    estimated_prompt_of_reported: int
    reported_prompt: int

    @property
    def hit_rate_tokens(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None

    @property
    def estimate_gap(self) -> float | None:
        """How far costlab's prompt estimate is from what the API reported (+ = over)."""
        if not self.reported_prompt:
            return None
        return (self.estimated_prompt_of_reported - self.reported_prompt) / self.reported_prompt


def conversation_summary(turns: list[TurnRow]) -> ConversationSummary:
    """Totals over turns already loaded by conversation_turns (no extra query)."""
    billing = [t.billing for t in turns if t.billing is not None]
    # Pending turns (no reply) have no billing record and stay out of every figure.
    priced = [r.cost_total for r in billing if r.cost_total is not None]
    reported = [
        (t.reported, t.estimated)
        for t in turns
        if t.reported is not None and t.estimated is not None
    ]
    return ConversationSummary(
        # Nothing billed yet costs nothing; billed turns none of which is priced: unknown.
        cost=sum(priced, Decimal(0)) if priced or not billing else None,
        unpriced=len(billing) - len(priced),
        billed_turns=len(billing),
        prompt_tokens=sum(r.prompt_tokens for r in billing),
        cached_tokens=sum(r.input_cached for r in billing),
        completion_tokens=sum(r.completion_tokens for r in billing),
        reported_turns=len(reported),
        estimated_prompt_of_reported=sum(est.prompt_tokens for _, est in reported),
        reported_prompt=sum(rep.prompt_tokens for rep, _ in reported),
    )


_TRANSCRIPT_TURN_COLUMNS = (
    "request_ranges", "response__index", "model", "tools", "response_format", "tool_choice",
    "prompt_cache_key", "cache_retention", "cache_options", "service_tier", "started_at",
    "latency_ms", "max_output_tokens", "is_batch", "responses_api",
)  # fmt: skip


def _transcript_turns(conversation_id: int, first: int = 0) -> QuerySet[Any]:
    return (
        Turn.objects.filter(conversation_id=conversation_id, index__gte=first)
        .order_by("index")
        .values_list(*_TRANSCRIPT_TURN_COLUMNS)
    )


# Stand-ins for the conversation id and the first turn: the query is compiled once per
# process and database with them, then run with the real values in their places (compiling
# it with the ORM cost as much as running it, every turn of every live chat).
_CONVERSATION_STAND_IN = -(2**61) + 13
_FIRST_STAND_IN = 2**31 - 11


@dataclass(frozen=True)
class _CompiledRows:
    sql: str
    params: tuple[Any, ...]
    slot: int
    first_slot: int
    compiler: Any
    converters: dict[int, Any]


_transcript_reads: dict[str, _CompiledRows | None] = {}


def _compiled_turns(alias: str) -> _CompiledRows | None:
    """None unless each stand-in is one parameter and nowhere in the SQL text."""
    queryset = _transcript_turns(_CONVERSATION_STAND_IN, _FIRST_STAND_IN)
    compiler = queryset.query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    slots = [i for i, v in enumerate(params) if type(v) is int and v == _CONVERSATION_STAND_IN]
    firsts = [i for i, v in enumerate(params) if isinstance(v, int) and v == _FIRST_STAND_IN]
    if (
        len(slots) != 1
        or len(firsts) != 1
        or str(_CONVERSATION_STAND_IN)[1:10] in sql
        or str(_FIRST_STAND_IN) in sql
    ):
        return None
    columns = [c[0] for c in compiler.select[: compiler.col_count]]
    converters = compiler.get_converters(columns)
    return _CompiledRows(sql, tuple(params), slots[0], firsts[0], compiler, converters)


def _transcript_turn_rows(conversation_id: int, first: int = 0) -> list[tuple[Any, ...]]:
    """The turns' columns (_TRANSCRIPT_TURN_COLUMNS) in index order from turn `first` on,
    converted as the ORM's values_list converts them (JSON decoded)."""
    alias = router.db_for_read(Turn)
    if alias not in _transcript_reads:
        _transcript_reads[alias] = _compiled_turns(alias)
    read = _transcript_reads[alias]
    if read is None:
        return list(_transcript_turns(conversation_id, first))
    params = list(read.params)
    params[read.slot] = conversation_id
    # (the index may come wrapped in its column's type, psycopg's Int4: kept so)
    params[read.first_slot] = type(params[read.first_slot])(first)
    with connections[alias].cursor() as cursor:
        cursor.execute(read.sql, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    if read.converters:
        rows = [tuple(row) for row in read.compiler.apply_converters(rows, read.converters)]
    return rows


def _calls_of(rows: list[tuple[Any, ...]]) -> list[Call]:
    return [
        Call(
            request=request_indexes(ranges),
            response=response,
            model=model or None,
            tools=tools,
            response_format=response_format,
            tool_choice=tool_choice,
            prompt_cache_key=prompt_cache_key or None,
            cache_retention=cache_retention or None,
            cache_options=cache_options,
            service_tier=service_tier or None,
            started_at=started_at,
            latency_ms=latency_ms,
            max_output_tokens=max_output_tokens,
            batch=batch,
            responses_api=responses_api,
        )
        for (
            ranges, response, model, tools, response_format, tool_choice, prompt_cache_key,
            cache_retention, cache_options, service_tier, started_at, latency_ms,
            max_output_tokens, batch, responses_api,
        ) in rows
    ]  # fmt: skip


def conversation_calls_from(conversation: Conversation, first: int) -> list[Call]:
    """The engine's view of the conversation's calls `first` on, in index order (as
    conversation_transcript's calls[first:], without reading the turns before): what a
    live chat's worker has not analysed yet, whatever the chat's length."""
    return _calls_of(_transcript_turn_rows(conversation.pk, first))


def conversation_transcript(
    conversation: Conversation,
    *,
    messages: list[Any] | None = None,
    reported_output: bool = False,
) -> Transcript:
    """Rebuild the engine's view of a stored conversation: messages once, calls by index.
    A caller that has just read the messages (in index order, from 0) passes them in.
    `reported_output`: each call whose usage the API reported carries its reply's output
    (types.ReportedOutput), for what-ifs that simulate the requests and keep the replies;
    the reported usage itself is never set (the engine would take it as the call's)."""
    if messages is None:
        messages = list(conversation.messages.order_by("index").values_list("data", flat=True))
    # The turns' columns alone, the response by its index: loading each Turn and its response
    # Message (whose JSON was decoded only to be dropped) was most of a live chat's estimate
    # per turn, since the chat reads its whole conversation again every turn.
    calls = _calls_of(_transcript_turn_rows(conversation.pk))
    if reported_output:
        _reported_outputs_set(conversation.pk, calls)
    return Transcript(
        messages=messages, calls=calls, title=conversation.title, model=conversation.model or None
    )


def _reported_outputs_set(conversation_id: int, calls: list[Call]) -> None:
    """Sets each reported call's output from its reported usage record (calls in turn
    order): one query, a row per turn (at most one reported record each, by constraint)."""
    reported = FilteredRelation(
        "usage_records", condition=Q(usage_records__source=UsageSource.REPORTED)
    )
    rows = (
        Turn.objects.filter(conversation_id=conversation_id)
        .annotate(reported=reported)
        .order_by("index")
        .values_list("reported__completion_tokens", "reported__reasoning_tokens")
    )
    for call, (completion, reasoning) in zip(calls, rows, strict=True):
        call.output = ReportedOutput(completion, reasoning) if completion is not None else None


def calibration(organization: Organization, filters: UsageFilter) -> list[ModelCalibration]:
    """Per model, how far costlab's estimates and cache simulation were from what the API
    reported, over the organization's calls that have both (issue 10 item 8), from the daily
    rollups: the shares and sums exactly, the 95th percentile of the gap from its histogram
    (to the 0.1 % the page shows)."""
    sums = (
        usage_days(organization, filters)
        .filter(reported_calls__gt=0)
        .values("model")
        .annotate(
            n=Sum("reported_calls"),
            exact=Sum("estimate_exact_calls"),
            gap_sum=Sum("estimate_gap_sum"),
            gaps=Sum("estimate_gap_calls"),
            cached_exact=Sum("cached_exact_calls"),
            agree=Sum("hit_agreement_calls"),
            simulated=Sum("simulated_cached"),
            reported=Sum("reported_cached"),
        )
        .order_by()
    )
    histogram: dict[str, list[tuple[int, int]]] = {}
    gaps = (
        filters.apply_days(CalibrationGap.objects.filter(organization=organization))
        .values("model", "gap_permille")
        .annotate(n=Sum("calls"))
        .order_by("model", "gap_permille")
    )
    for row in gaps:
        histogram.setdefault(row["model"], []).append((row["gap_permille"], row["n"]))
    rows = [
        ModelCalibration(
            model=row["model"] or "(no model)",
            calls=row["n"],
            exact_share=row["exact"] / row["n"],
            mean_gap=float(row["gap_sum"]) / row["gaps"] if row["gaps"] else 0.0,
            p95_abs_gap=_percentile_of(histogram.get(row["model"], []), 0.95),
            cached_exact_share=row["cached_exact"] / row["n"],
            hit_agreement=row["agree"] / row["n"],
            simulated_cached=row["simulated"],
            reported_cached=row["reported"],
        )
        for row in sums
    ]
    return sorted(rows, key=lambda r: (-r.calls, r.model))


def _percentile_of(histogram: list[tuple[int, int]], share: float) -> float:
    """Nearest-rank percentile (engine/calibration.py's) of a sorted histogram of
    thousandths."""
    total = sum(count for _, count in histogram)
    if not total:
        return 0.0
    rank = max(math.ceil(share * total) - 1, 0)
    seen = 0
    for permille, count in histogram:
        seen += count
        if seen > rank:
            return permille / 1000
    return histogram[-1][0] / 1000


@dataclass(frozen=True)
class SourceShare:
    calls: int
    cost: Decimal | None  # None: none of them priced


def replay_share(organization: Organization, filters: UsageFilter) -> SourceShare:
    """What experiments' replays add to the totals under the filter: real calls, paid for,
    but not the team's own traffic. Read from the rollups by source (DimensionDay)."""
    rows = filters.apply_days(
        DimensionDay.objects.filter(
            organization=organization, kind="source", value=ConversationSource.REPLAY
        )
    )
    agg = rows.aggregate(calls=Coalesce(Sum("calls"), 0), cost=Sum("cost_total"))
    return SourceShare(calls=agg["calls"], cost=agg["cost"])


def calibration_replayed_calls(organization: Organization, filters: UsageFilter) -> int:
    """How many of the calibrated calls were made by experiments (replays): there the
    prediction was made before the call, on the team's own conversations. Read from the
    conversation-day rollups: every billed call of a replay carries the usage it reported."""
    # The conversations' organization named too: their index on (organization, source)
    # then finds the replays without reading another organization's conversations.
    replayed = filters.apply_days(
        ConversationDay.objects.filter(
            organization=organization,
            conversation__organization=organization,
            conversation__source=ConversationSource.REPLAY,
        )
    ).aggregate(n=Sum("calls"))["n"]
    return int(replayed or 0)
