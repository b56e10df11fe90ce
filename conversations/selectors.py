"""Read paths. Every query starts from an organization the caller is a member of, and
aggregates in the database: pages never loop over usage rows in Python."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Avg, Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.http import Http404

from .engine.calibration import ModelCalibration, Pair, calibrate
from .engine.types import Call, Transcript
from .models import (
    Conversation,
    ImportJob,
    Membership,
    Organization,
    Turn,
    UsageRecord,
    UsageSource,
)

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
    date_from: date | None = None
    date_to: date | None = None
    model: str = ""

    def apply(self, records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        if self.date_from:
            records = records.filter(occurred_at__date__gte=self.date_from)
        if self.date_to:
            records = records.filter(occurred_at__date__lte=self.date_to)
        if self.model:
            records = records.filter(model=self.model)
        return records


def billing_records(organization: Organization, filters: UsageFilter) -> QuerySet[UsageRecord]:
    """The usage that counts: one record per turn, reported when the API reported it."""
    return filters.apply(UsageRecord.objects.filter(organization=organization, is_billing=True))


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


def org_totals(organization: Organization, filters: UsageFilter) -> OrgTotals:
    records = billing_records(organization, filters)
    agg = records.aggregate(
        calls=Count("id"),
        priced_calls=Count("id", filter=Q(cost_total__isnull=False)),
        cost=Sum("cost_total"),
        cost_uncached=Sum("cost_uncached", filter=Q(cost_total__isnull=False)),
        prompt=Coalesce(Sum("prompt_tokens"), 0),
        cached=Coalesce(Sum("input_cached"), 0),
        completion=Coalesce(Sum("completion_tokens"), 0),
        eligible=Count("id", filter=Q(cache_eligible=True)),
        # A hit is an eligible call that read cached tokens (design.md 2.8).
        hits=Count("id", filter=Q(input_cached__gt=0, cache_eligible=True)),
        conversations=Count("conversation", distinct=True),
        latency_hit=Avg("turn__latency_ms", filter=Q(input_cached__gt=0)),
        latency_miss=Avg("turn__latency_ms", filter=Q(input_cached=0, cache_eligible=True)),
    )
    unpriced = list(
        records.filter(cost_total__isnull=True)
        .values("model")
        .annotate(calls=Count("id"))
        .order_by("-calls", "model")
        .values_list("model", "calls")
    )
    return OrgTotals(
        calls=agg["calls"],
        priced_calls=agg["priced_calls"],
        cost=agg["cost"],
        cost_uncached=agg["cost_uncached"],
        prompt_tokens=agg["prompt"],
        cached_tokens=agg["cached"],
        completion_tokens=agg["completion"],
        eligible_calls=agg["eligible"],
        hit_calls=agg["hits"],
        unpriced_models=[(m or "(no model)", n) for m, n in unpriced],
        conversations=agg["conversations"],
        latency_hit_ms=agg["latency_hit"],
        latency_miss_ms=agg["latency_miss"],
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
        billing_records(organization, filters)
        .values("model")
        .annotate(
            cost=Sum("cost_total"),
            calls=Count("id"),
            tokens=Sum("total_tokens"),
            unpriced=Count("id", filter=Q(cost_total__isnull=True)),
        )
        .order_by(F("cost").desc(nulls_last=True), "model")
    )
    return [ModelCost(**row) for row in rows]


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
        billing_records(organization, filters)
        .annotate(day=TruncDate("occurred_at"))
        .values("day")
        .annotate(
            cost=Sum("cost_total"),
            cached=Sum("cost_input_cached"),
            # Cache writes are uncached input too (where the API reports them).
            uncached=Coalesce(Sum("cost_input_uncached"), Decimal(0))
            + Coalesce(Sum("cost_input_cache_write"), Decimal(0)),
            output=Sum("cost_output"),
            calls=Count("id"),
            prompt=Sum("prompt_tokens"),
            cached_tokens=Sum("input_cached"),
            eligible=Count("id", filter=Q(cache_eligible=True)),
            hits=Count("id", filter=Q(input_cached__gt=0, cache_eligible=True)),
        )
        .order_by("day")
    )
    return [DayCost(**row) for row in rows]


def models_used(organization: Organization) -> list[str]:
    return list(
        UsageRecord.objects.filter(organization=organization, is_billing=True)
        .values_list("model", flat=True)
        .distinct()
        .order_by("model")
    )


CONVERSATION_SORTS = {
    "cost": F("cost").asc(nulls_first=True),
    "-cost": F("cost").desc(nulls_last=True),
    "turns": F("turn_count").asc(),
    "-turns": F("turn_count").desc(),
    "tokens": F("tokens").asc(nulls_first=True),
    "-tokens": F("tokens").desc(nulls_last=True),
    "created": F("created").asc(),
    "-created": F("created").desc(),
    "title": F("title").asc(),
    "-title": F("title").desc(),
}


@dataclass(frozen=True)
class ConversationRow:
    """One row of the overview's conversation table: usage sums over the filter. The token
    sums are never NULL: a listed conversation has at least one record in the filter."""

    code: UUID
    title: str
    model: str
    created: datetime
    cost: Decimal | None  # None when none of its calls is priced
    tokens: int
    turn_count: int
    cached: int
    prompt: int
    unpriced: int


def conversation_list(
    organization: Organization, filters: UsageFilter, *, sort: str = "-cost", limit: int = 200
) -> list[ConversationRow]:
    usage = Q(usage_records__is_billing=True)
    if filters.date_from:
        usage &= Q(usage_records__occurred_at__date__gte=filters.date_from)
    if filters.date_to:
        usage &= Q(usage_records__occurred_at__date__lte=filters.date_to)
    if filters.model:
        usage &= Q(usage_records__model=filters.model)
    conversations = (
        Conversation.objects.filter(organization=organization)
        .annotate(
            cost=Sum("usage_records__cost_total", filter=usage),
            tokens=Sum("usage_records__total_tokens", filter=usage),
            turn_count=Count("usage_records", filter=usage),
            cached=Sum("usage_records__input_cached", filter=usage),
            prompt=Sum("usage_records__prompt_tokens", filter=usage),
            unpriced=Count(
                "usage_records", filter=usage & Q(usage_records__cost_total__isnull=True)
            ),
        )
        .filter(turn_count__gt=0)
        .order_by(CONVERSATION_SORTS.get(sort, CONVERSATION_SORTS["-cost"]), "id")
        .values(*(field.name for field in fields(ConversationRow)))
    )
    return [ConversationRow(**row) for row in conversations[:limit]]


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


@dataclass(frozen=True)
class ConversationSummary:
    cost: Decimal | None
    unpriced: int
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
        cost=sum(priced, Decimal(0)) if priced else None,
        unpriced=len(billing) - len(priced),
        prompt_tokens=sum(r.prompt_tokens for r in billing),
        cached_tokens=sum(r.input_cached for r in billing),
        completion_tokens=sum(r.completion_tokens for r in billing),
        reported_turns=len(reported),
        estimated_prompt_of_reported=sum(est.prompt_tokens for _, est in reported),
        reported_prompt=sum(rep.prompt_tokens for rep, _ in reported),
    )


def conversation_transcript(conversation: Conversation) -> Transcript:
    """Rebuild the engine's view of a stored conversation: messages once, calls by index."""
    messages = list(conversation.messages.order_by("index").values_list("data", flat=True))
    calls = [
        Call(
            request=turn.request_indexes(),
            response=turn.response.index if turn.response else None,
            model=turn.model or None,
            tools=turn.tools,
            response_format=turn.response_format,
            tool_choice=turn.tool_choice,
            prompt_cache_key=turn.prompt_cache_key or None,
            cache_retention=turn.cache_retention or None,
            cache_options=turn.cache_options,
            service_tier=turn.service_tier or None,
            started_at=turn.started_at,
            latency_ms=turn.latency_ms,
            max_output_tokens=turn.max_output_tokens,
            batch=turn.is_batch,
        )
        for turn in conversation.turns.select_related("response").order_by("index")
    ]
    return Transcript(
        messages=messages, calls=calls, title=conversation.title, model=conversation.model or None
    )


# The calibration table reads at most this many recent reported calls: enough for stable
# shares and percentiles, bounded whatever the organization's size.
CALIBRATION_SAMPLE = 20_000


def calibration(organization: Organization, filters: UsageFilter) -> list[ModelCalibration]:
    """Per model, how far costlab's estimates and cache simulation were from what the API
    reported, over the organization's calls that have both (issue 10 item 8)."""
    rows = (
        billing_records(organization, filters)
        .filter(source=UsageSource.REPORTED)
        .order_by("-occurred_at")
        .values_list(
            "model",
            "turn__estimated_prompt_tokens",
            "prompt_tokens",
            "turn__simulated_cached_tokens",
            "input_cached",
        )[:CALIBRATION_SAMPLE]
    )
    return calibrate(Pair(*row) for row in rows)
