"""Read paths that slice an organization's billing usage by any dimension (issue 14):
breakdowns, the money a cache miss lost, and the row streams behind the CSV exports.

A module of its own, beside selectors.py (the overview). Every read here has the same shape
(an organization, a half-open time range, optional filters, one GROUP BY), so each breakdown
reads a rollup where one holds its slice and grouping (CacheDay, DimensionDay,
ConversationDay: `rollup_breakdown`) and one GROUP BY over the raw rows otherwise
(`raw_breakdown`, which the tests hold the rollup reads to).

Every query starts from the organization and filters `occurred_at` with a half-open range
[start, end), which the partial index usage_org_billing_time serves; nothing loops over
usage rows in Python, and the export streams read through a server-side cursor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from django.db.models import (
    Case,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    Func,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    TextField,
    Value,
    When,
)
from django.db.models.functions import (
    Cast,
    Coalesce,
    Greatest,
    NullIf,
    Round,
    TruncDay,
    TruncMonth,
    TruncWeek,
)

from .models import (
    CacheDay,
    ConversationDay,
    ConversationSource,
    ConversationTotals,
    DimensionDay,
    Organization,
    UsageRecord,
)

MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=24, decimal_places=12)
# A price row without a cache policy caches in 128-token steps (design.md 2.6, prefix_128).
DEFAULT_STEP = 128


def day_start(day: date, zone: str = "UTC") -> datetime:
    """The moment a day starts where `zone` says (an IANA name)."""
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(zone))


@dataclass(frozen=True)
class Slice:
    """Which billing records a figure covers: a half-open period [start, end) and filters
    that combine (all must match). Empty strings and None mean 'any'. `zone` is where its
    days start: grouping by day, week or month cuts there (the organization's time zone,
    which the rollups' days follow)."""

    start: datetime | None = None
    end: datetime | None = None
    model: str = ""
    source: str = ""
    prompt_cache_key: str | None = None  # "" selects calls sent without a key
    end_user: str | None = None
    tag_key: str = ""
    tag_value: str = ""
    conversation: UUID | None = None
    zone: str = "UTC"

    @classmethod
    def of_dates(
        cls, date_from: date | None, date_to: date | None, *, zone: str = "UTC", **filters: Any
    ) -> Slice:
        """Days as people say them, in `zone`: both ends inclusive, turned into
        [from 00:00, to+1 00:00)."""
        return cls(
            start=day_start(date_from, zone) if date_from else None,
            end=day_start(date_to + timedelta(days=1), zone) if date_to else None,
            zone=zone,
            **filters,
        )

    def previous(self) -> Slice | None:
        """The period of the same length just before this one, same filters: what a
        comparison sets beside it (as many whole days, when it is whole days: a daylight
        saving change keeps it on midnights). None when the period is open at either end."""
        if self.start is None or self.end is None:
            return None
        zone = ZoneInfo(self.zone)
        first, after = _local_day(self.start, zone), _local_day(self.end, zone)
        if first is not None and after is not None:
            before = first - (after - first)
            return replace(self, start=day_start(before, self.zone), end=self.start)
        length = self.end - self.start
        return replace(self, start=self.start - length, end=self.start)

    def records(self, organization: Organization) -> QuerySet[UsageRecord]:
        """The usage that counts (one billing record per turn) in this slice."""
        records = UsageRecord.objects.filter(organization=organization, is_billing=True)
        if self.start is not None:
            records = records.filter(occurred_at__gte=self.start)
        if self.end is not None:
            records = records.filter(occurred_at__lt=self.end)
        if self.model:
            records = records.filter(model=self.model)
        if self.source:
            records = records.filter(conversation__source=self.source)
        if self.prompt_cache_key is not None:
            records = records.filter(turn__prompt_cache_key=self.prompt_cache_key)
        if self.end_user is not None:
            records = records.filter(turn__end_user=self.end_user)
        if self.tag_key:
            # The tag's text, not a JSON containment: SQLite (make run) has no `contains`.
            records = records.alias(tag_filter=Cast(tag_text(self.tag_key), TextField())).filter(
                tag_filter=self.tag_value
            )
        if self.conversation is not None:
            records = records.filter(conversation__code=self.conversation)
        return records


# MissReason.describe() of a cold miss whose prefix the cache held under another key.
OTHER_KEY = "cold: this prefix was cached under prompt_cache_key"

# The tokens of a call that the cache could have served, for eligible calls only (below the
# minimum or on a model without caching nothing is cacheable, so nothing is lost):
# - where the simulator found a cause that cost it a hit (its prefix changed, expired or
#   overflowed, or was cached under another prompt_cache_key): its prompt down to the
#   policy's step, what a kept prefix would have let it read at most (its own new tokens
#   included: an upper bound);
# - anywhere else (no miss reason, a cold first sight of its prefix, a prompt the simulator
#   put below the minimum, a model or a Batch call without caching): what the simulator had
#   the cache hold for it (Turn.simulated_cached_tokens). The rest of its prompt had never
#   been sent (a turn's new message and the last reply), so no cache could have held it:
#   counting it lost put money on every partial hit of a well-cached chat (a turn of 2,077
#   tokens reading the 1,920 the turn before had left). A reported call that read less
#   than the simulator's hit loses the difference.
# A breakpoint model caches exact lengths; its step of 1 in the policy row keeps that exact.
# The record's cache_ceiling holds which (NULL: the first; services/usage.py writes it).
_STEP = Coalesce(F("price__cache_policy__step_tokens"), Value(DEFAULT_STEP))
CACHEABLE = Case(
    When(cache_eligible=False, then=Value(0)),
    When(cache_ceiling__isnull=True, then=F("prompt_tokens") / _STEP * _STEP),
    default=F("cache_ceiling"),
    output_field=IntegerField(),
)
MISSED_TOKENS = Greatest(CACHEABLE - F("input_cached"), Value(0), output_field=IntegerField())
# The call's own input rate per token (its tier and context band included), from what its
# uncached input cost; the row's base rates where no input went uncached.
_INPUT_RATE = Coalesce(
    ExpressionWrapper(
        F("cost_input_uncached") / NullIf(F("input_uncached"), 0), output_field=MONEY
    ),
    ExpressionWrapper(F("price__input_per_1m") / Value(Decimal(1_000_000)), output_field=MONEY),
)
# Share of the input rate a cached token saves: 1 - cached / input. NULL (nothing to lose)
# for a row without a cached rate: that model has no caching.
_SAVED_SHARE = ExpressionWrapper(
    Value(Decimal(1))
    - Cast(F("price__cached_input_per_1m"), MONEY) / NullIf(F("price__input_per_1m"), 0),
    output_field=MONEY,
)
# What a miss cost: its cacheable tokens that were not cached x (input rate - cached rate).
# NULL for an unpriced call (unknown, never 0). Rounded to the records' 12 places per call,
# so that the daily sums the rollups keep (services/rollups.py, CacheDay) add up to exactly
# the sum over the raw rows.
LOST = Case(
    When(cost_total__isnull=True, then=Value(None, output_field=MONEY)),
    When(cache_eligible=False, then=Value(Decimal(0), output_field=MONEY)),
    default=Round(
        ExpressionWrapper(MISSED_TOKENS * _INPUT_RATE * _SAVED_SHARE, output_field=MONEY),
        12,
        output_field=MONEY,
    ),
    output_field=MONEY,
)

# Figures every breakdown row carries, aggregated in the database.
FIGURES: dict[str, Any] = {
    "calls": Count("id"),
    "cost": Sum("cost_total"),
    "cost_uncached": Sum("cost_uncached", filter=Q(cost_total__isnull=False)),
    # Not named prompt_tokens: LOST reads that column, and an alias would shadow it.
    "prompt": Coalesce(Sum("prompt_tokens"), 0),
    "cached_tokens": Coalesce(Sum("input_cached"), 0),
    "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    "eligible": Count("id", filter=Q(cache_eligible=True)),
    "hits": Count("id", filter=Q(cache_eligible=True, input_cached__gt=0)),
    "unpriced": Count("id", filter=Q(cost_total__isnull=True)),
    "lost": Sum(LOST),
}


# Zone names whose days are UTC's: only there do the rollup's local days group as
# lost_by_day's UTC days do.
UTC_ZONES = frozenset(
    {"UTC", "Etc/UTC", "UCT", "Etc/UCT", "GMT", "Etc/GMT", "GMT0", "Etc/GMT0", "GMT+0",
     "GMT-0", "Etc/GMT+0", "Etc/GMT-0", "Greenwich", "Etc/Greenwich", "Universal",
     "Etc/Universal", "Zulu", "Etc/Zulu"}
)  # fmt: skip


def _local_day(moment: datetime, zone: ZoneInfo) -> date | None:
    """The organization's day starting at `moment`; None when it is not a local midnight."""
    local = moment.astimezone(zone)
    return local.date() if local.time() == time.min else None


def same_days(organization: Organization, slice_: Slice) -> bool:
    """Whether the slice's days are the organization's, which the rollups' days are."""
    zone = organization.time_zone
    return slice_.zone == zone or (slice_.zone in UTC_ZONES and zone in UTC_ZONES)


def _day_filter(organization: Organization, slice_: Slice) -> Q | None:
    """The slice's period and model as a filter on a rollup's `day` and `model`, or None
    when a bound falls inside one of the organization's days."""
    zone = ZoneInfo(organization.time_zone)
    where = Q()
    if slice_.start is not None:
        first = _local_day(slice_.start, zone)
        if first is None:
            return None
        where &= Q(day__gte=first)
    if slice_.end is not None:
        after = _local_day(slice_.end, zone)
        if after is None:
            return None
        where &= Q(day__lt=after)
    if slice_.model:
        where &= Q(model=slice_.model)
    return where


def _other_filters(slice_: Slice) -> list[tuple[str, str]] | None:
    """The slice's filters besides period and model, as DimensionDay (kind, value) pairs;
    None when one has no rollup (a single conversation)."""
    if slice_.conversation is not None:
        return None
    pairs = []
    if slice_.source:
        pairs.append(("source", slice_.source))
    if slice_.prompt_cache_key is not None:
        pairs.append(("key", slice_.prompt_cache_key))
    if slice_.end_user is not None:
        pairs.append((DIMENSION_KINDS["user"], slice_.end_user))
    if slice_.tag_key:
        pairs.append((f"{TAG_PREFIX}{slice_.tag_key}", slice_.tag_value))
    return pairs


def days_only(organization: Organization, slice_: Slice) -> Q | None:
    """The slice as a filter on an organization-day-model rollup (CacheDay, BreakerDay,
    ConversationDay), or None when it filters by more than whole days and a model."""
    if _other_filters(slice_) != []:
        return None
    return _day_filter(organization, slice_)


def cache_days(organization: Organization, slice_: Slice) -> QuerySet[CacheDay] | None:
    """The CacheDay rows that sum exactly to the slice's records, or None when they cannot
    (a filter the rollup has no column for, or a bound inside an organization's day): the
    caller then reads the raw rows."""
    where = days_only(organization, slice_)
    if where is None:
        return None
    return CacheDay.objects.filter(where, organization=organization)


def dimension_days(
    organization: Organization, slice_: Slice, kind: str | None = None
) -> QuerySet[DimensionDay] | None:
    """The DimensionDay rows of `kind` (the filter's own kind when None) that sum exactly
    to the slice's records, or None when they cannot: more than one filter besides period
    and model, a filter of another kind than `kind`, or a bound inside a day."""
    pairs = _other_filters(slice_)
    if pairs is None or len(pairs) > 1:
        return None
    if kind is None:
        if not pairs:
            return None
        kind = pairs[0][0]
    where = _day_filter(organization, slice_)
    if where is None:
        return None
    rows = DimensionDay.objects.filter(where, organization=organization, kind=kind)
    if pairs:
        filter_kind, value = pairs[0]
        if filter_kind != kind:
            return None
        rows = rows.filter(value=value)
    return rows


@dataclass(frozen=True)
class Dimension:
    """One way to group usage: the expression that names a group and how to show it."""

    name: str
    label: str
    expression: Any
    title: Any = None  # a second value shown beside the key (a conversation's title)
    period: Any = None  # TruncDay, TruncWeek, TruncMonth: cut in the slice's time zone

    def expression_in(self, zone: str) -> Any:
        if self.period is not None:
            return self.period("occurred_at", tzinfo=ZoneInfo(zone))
        return self.expression


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("model", "Model", F("model")),
        Dimension("day", "Day", TruncDay("occurred_at", tzinfo=UTC), period=TruncDay),
        Dimension("week", "Week", TruncWeek("occurred_at", tzinfo=UTC), period=TruncWeek),
        Dimension("month", "Month", TruncMonth("occurred_at", tzinfo=UTC), period=TruncMonth),
        Dimension(
            "conversation", "Conversation", F("conversation__code"), F("conversation__title")
        ),
        Dimension("source", "Source", F("conversation__source")),
        Dimension("key", "prompt_cache_key", F("turn__prompt_cache_key")),
        Dimension("user", "End user", F("turn__end_user")),
        Dimension("api_key", "API key", F("turn__api_key")),
        Dimension("project", "Project", F("turn__project")),
    )
}
TAG_PREFIX = "tag:"
BREAKDOWN_LIMIT = 200  # groups a breakdown page shows


class _MemberText(Func):
    """A JSON object's member, by name, as text. Django's key transforms read a name that
    looks like an integer ("1", "-1") as an array index: PostgreSQL then gives NULL for
    an object, and SQLite refuses the path `$[-1]` (an import failed on a tag named -1)."""

    output_field = TextField()

    def __init__(self, key: str, field: str) -> None:
        super().__init__(F(field))
        self.key = key

    def as_postgresql(
        self, compiler: Any, connection: Any, **extra: Any
    ) -> tuple[str, tuple[Any, ...]]:
        lhs, params = compiler.compile(self.get_source_expressions()[0])
        return f"({lhs} ->> %s::text)", (*params, self.key)

    def as_sql(
        self, compiler: Any, connection: Any, *args: Any, **extra: Any
    ) -> tuple[str, tuple[Any, ...]]:
        # SQLite: a quoted label in the path is always a member's name.
        lhs, params = compiler.compile(self.get_source_expressions()[0])
        return f"json_extract({lhs}, %s)", (*params, "$." + json.dumps(self.key))


def tag_text(key: str) -> Any:
    """The value of the conversation's tag `key`, as text (NULL when it has none)."""
    return _MemberText(key, "conversation__tags")


def dimension_get(name: str) -> Dimension | None:
    """A dimension by name; `tag:<key>` groups by the value of that tag."""
    if name.startswith(TAG_PREFIX) and len(name) > len(TAG_PREFIX):
        key = name[len(TAG_PREFIX) :]
        return Dimension(name, f"Tag {key}", tag_text(key))
    return DIMENSIONS.get(name)


@dataclass(frozen=True)
class BreakdownRow:
    """One group of a breakdown. Token sums are never NULL (a group has a record); money
    is None when no call of the group is priced."""

    key: Any
    title: str | None
    calls: int
    cost: Decimal | None
    cost_uncached: Decimal | None
    prompt: int
    cached_tokens: int
    completion_tokens: int
    eligible: int
    hits: int
    unpriced: int
    lost: Decimal | None

    @property
    def costlier(self) -> bool:
        """Caching cost more than it saved (paid writes not read back enough)."""
        return self.cost_reduction is not None and self.cost_reduction < 0

    @property
    def label(self) -> str:
        if isinstance(self.key, datetime):
            return self.key.date().isoformat()
        if self.key is None or self.key == "":
            return "(none)"
        if self.key in ConversationSource.values:
            return str(ConversationSource(self.key).label)
        return str(self.key)

    def label_by(self, dimension: str) -> str:
        """The label as a page shows it: a month as "Jan 2026" (as the overview's charts
        name it), not the date of its first day; anything else as `label`."""
        if dimension == "month" and isinstance(self.key, datetime):
            return self.key.strftime("%b %Y")
        return self.label

    @property
    def hit_rate_requests(self) -> float | None:
        return self.hits / self.eligible if self.eligible else None

    @property
    def hit_rate_tokens(self) -> float | None:
        return self.cached_tokens / self.prompt if self.prompt else None

    @property
    def cost_reduction(self) -> float | None:
        if not self.cost_uncached or self.cost is None:
            return None
        return float(1 - self.cost / self.cost_uncached)


SORTS = {
    "cost": F("cost").desc(nulls_last=True),
    "calls": F("calls").desc(),
    "lost": F("lost").desc(nulls_last=True),
    # NULLS LAST said, not left to the database: SQLite puts NULLs first, PostgreSQL last,
    # and the rollup path (its "(none)" group is added in Python) orders as PostgreSQL does.
    "key": F("key").asc(nulls_last=True),
}


def breakdown_query(
    organization: Organization, slice_: Slice, dimension: Dimension, *, sort: str = "cost"
) -> QuerySet[UsageRecord, dict[str, Any]]:
    records = slice_.records(organization).annotate(key=dimension.expression_in(slice_.zone))
    names = ["key"]
    if dimension.title is not None:
        records = records.annotate(title=dimension.title)
        names.append("title")
    order = SORTS["key"] if dimension.name in ("day", "week", "month") else SORTS[sort]
    # Ties by key, NULLs last there too: SQLite put the untagged group first among equals,
    # where the rollup path (and PostgreSQL) put it last.
    return records.values(*names).annotate(**FIGURES).order_by(order, SORTS["key"])


def breakdown_rows(
    organization: Organization, slice_: Slice, dimension: Dimension, *, sort: str = "cost"
) -> Iterator[BreakdownRow]:
    """Every group, read through a server-side cursor (an export by conversation may be
    hundreds of thousands of groups)."""
    for row in breakdown_query(organization, slice_, dimension, sort=sort).iterator(
        chunk_size=2000
    ):
        yield BreakdownRow(title=row.pop("title", None), **row)


# The FIGURES as sums of rollup rows (CacheDay, DimensionDay and ConversationDay name these
# columns alike), named apart from the columns (an annotation may not reuse a field's name).
ROLLUP_FIGURES: dict[str, Any] = {
    "calls": Sum("calls"),
    "cost": Sum("cost_total"),
    "cost_uncached": Sum("cost_uncached"),
    "prompt": Sum("prompt_tokens"),
    "cached_tokens": Sum("input_cached"),
    "completion_tokens": Sum("completion_tokens"),
    "eligible": Sum("eligible_calls"),
    "hits": Sum("hit_calls"),
    "priced": Sum("priced_calls"),
    "lost": Sum("lost"),
}
_R_FIGURES = {f"r_{name}": value for name, value in ROLLUP_FIGURES.items()}
# The same figures as the columns they sum, which one ConversationTotals row holds.
_TOTALS_FIGURES: dict[str, str] = {
    name: value.source_expressions[0].name for name, value in ROLLUP_FIGURES.items()
}
PERIOD_KEYS: dict[str, Any] = {
    "day": F("day"),
    "week": TruncWeek("day"),
    "month": TruncMonth("day"),
}
# DimensionDay's kind for each dimension it holds (tags: `tag:<name>`, the dimension's
# name). Every other kind sorts before "tag:", so that tag_keys' walk ends at the last tag.
DIMENSION_KINDS = {
    "source": "source",
    "key": "key",
    "user": "end_user",
    "api_key": "api_key",
    "project": "project",
}
MONEY_FIGURES = ("cost", "cost_uncached", "lost")


def dimension_kind(dimension: Dimension) -> str | None:
    if dimension.name.startswith(TAG_PREFIX):
        return dimension.name
    return DIMENSION_KINDS.get(dimension.name)


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    figures = {name: row[f"r_{name}"] or 0 for name in ROLLUP_FIGURES if name != "priced"}
    for name in MONEY_FIGURES:  # NULL when no call is priced, as the raw sums
        figures[name] = row[f"r_{name}"]
    figures["unpriced"] = (row["r_calls"] or 0) - (row["r_priced"] or 0)
    return figures


@dataclass(frozen=True)
class _Rollup:
    """Where a breakdown's groups come from: rollup rows, the expression naming a group
    (and its title), and whether it needs the group of calls without a tag added."""

    rows: QuerySet[Any]
    key: Any
    title: Any = None
    untagged: bool = False


def _rollup_source(
    organization: Organization, slice_: Slice, dimension: Dimension
) -> _Rollup | None:
    name = dimension.name
    if name == "model" or name in PERIOD_KEYS:
        if name in PERIOD_KEYS and not same_days(organization, slice_):
            return None
        days: QuerySet[Any] | None = cache_days(organization, slice_)
        if days is None:
            days = dimension_days(organization, slice_)
        if days is None:
            return None
        return _Rollup(days, F("model") if name == "model" else PERIOD_KEYS[name])
    if name == "conversation":
        where = days_only(organization, slice_)
        if where is None:
            return None
        # The conversation's organization too, though it can only be this one: it lets the
        # join read this organization's conversations off their index instead of hashing
        # every organization's (the small organization's 30-day breakdown read the big one's).
        return _Rollup(
            ConversationDay.objects.filter(
                where, organization=organization, conversation__organization=organization
            ),
            F("conversation__code"),
            F("conversation__title"),
        )
    kind = dimension_kind(dimension)
    if kind is None:
        return None
    dims = dimension_days(organization, slice_, kind)
    if dims is None:
        return None
    untagged = kind.startswith(TAG_PREFIX) and not _other_filters(slice_)
    return _Rollup(dims, F("value"), untagged=untagged)


def _untagged(
    organization: Organization, slice_: Slice, tagged: QuerySet[Any]
) -> BreakdownRow | None:
    """The group of calls whose conversation lacks the tag (key None, as the raw rows
    group it): the slice's totals less the tagged rows'. Money is NULL when none of its
    calls is priced, as SUM gives it."""
    days = cache_days(organization, slice_)
    if days is None:
        return None
    total, part = days.aggregate(**_R_FIGURES), tagged.aggregate(**_R_FIGURES)
    rest = {name: (total[name] or 0) - (part[name] or 0) for name in _R_FIGURES}
    if not rest["r_calls"]:
        return None
    if not rest["r_priced"]:
        for name in MONEY_FIGURES:
            rest[f"r_{name}"] = None
    return BreakdownRow(key=None, title=None, **_figures(rest))


def _python_order(sort: str) -> Any:
    """The SQL sort's first term, in Python (ties keep the order they come in)."""
    if sort == "calls":
        return lambda row: -row.calls
    if sort == "key":
        return lambda row: (row.key is None, row.key if row.key is not None else "")
    figure = sort if sort in ("cost", "lost") else "cost"
    return lambda row: (getattr(row, figure) is None, -(getattr(row, figure) or 0))


def _day_key(value: date, zone: str) -> datetime:
    """The raw rows' key for a rollup day: its midnight in the slice's zone, as TruncDay
    (TruncWeek, TruncMonth) gives it."""
    return day_start(value, zone)


def rollup_breakdown(
    organization: Organization,
    slice_: Slice,
    dimension: Dimension,
    *,
    sort: str = "cost",
    limit: int = 200,
) -> list[BreakdownRow] | None:
    """breakdown() from a rollup (CacheDay, DimensionDay, ConversationDay), or None when
    none holds the slice and the grouping."""
    if dimension.name == "conversation" and slice_ == Slice(zone=slice_.zone):
        return _conversation_totals_breakdown(organization, sort=sort, limit=limit)
    source = _rollup_source(organization, slice_, dimension)
    if source is None:
        return None
    dated = dimension.name in PERIOD_KEYS
    sorts = {
        "cost": F("r_cost").desc(nulls_last=True),
        "calls": F("r_calls").desc(),
        "lost": F("r_lost").desc(nulls_last=True),
        "key": F("key").asc(nulls_last=True),
    }
    names = ["key"]
    rows = source.rows.annotate(key=source.key)
    if source.title is not None:
        rows = rows.annotate(title=source.title)
        names.append("title")
    order = sorts["key"] if dated else sorts.get(sort, sorts["cost"])
    grouped = rows.values(*names).annotate(**_R_FIGURES).order_by(order, "key")[:limit]
    out = [
        BreakdownRow(
            key=_day_key(row["key"], slice_.zone) if dated else row["key"],
            title=row.get("title"),
            **_figures(row),
        )
        for row in grouped
    ]
    if source.untagged:
        missing = _untagged(organization, slice_, source.rows)
        if missing is not None:
            out.append(missing)
            out.sort(key=_python_order(sort))
            out = out[:limit]
    return out


# The breakdown by conversation over the whole period, per sort: ConversationTotals' rows
# in the order raw_breakdown gives the groups (the conversation's code breaks ties). A cost
# is NULL exactly when no call is priced (is_priced false), so "cost, NULLs last" is
# is_priced then cost, which the index convtotals_org_cost walks backwards (the code is
# then sorted within equal costs, a few rows); calls walk convtotals_org_calls alike.
_TOTALS_SORTS: dict[str, tuple[Any, ...]] = {
    "cost": (F("is_priced").desc(), F("cost_total").desc(), "conversation__code"),
    "calls": (F("calls").desc(), "conversation__code"),
    "lost": (F("lost").desc(nulls_last=True), "conversation__code"),
    "key": ("conversation__code",),
}


def _conversation_totals_breakdown(
    organization: Organization, *, sort: str, limit: int
) -> list[BreakdownRow]:
    """breakdown() by conversation over all time, with no filter: the top ConversationTotals
    rows (one per conversation, no sums to make) instead of every ConversationDay row."""
    order = _TOTALS_SORTS.get(sort, _TOTALS_SORTS["cost"])
    rows = (
        ConversationTotals.objects.filter(organization=organization)
        .order_by(*order)
        .values("conversation__code", "conversation__title", *_TOTALS_FIGURES.values())[:limit]
    )
    return [
        BreakdownRow(
            key=row["conversation__code"],
            title=row["conversation__title"],
            **_figures({f"r_{name}": row[column] for name, column in _TOTALS_FIGURES.items()}),
        )
        for row in rows
    ]


def previous_shift(current: Slice, previous: Slice, dimension: Dimension) -> int | None:
    """How many days back a day's (a week's) group lies in the previous period, when the
    groups line up: days always, weeks when the period is whole weeks (a 10-day period's
    weeks would pair 3 days with 7), months never (a 30-day period is not a month). None
    when they do not, or when the period does not start at a local midnight."""
    if current.start is None or previous.start is None:
        return None
    zone = ZoneInfo(current.zone)
    first, before = _local_day(current.start, zone), _local_day(previous.start, zone)
    if first is None or before is None:
        return None
    days = (first - before).days
    if dimension.name == "day" or (dimension.name == "week" and days % 7 == 0):
        return days
    return None


def _nothing(key: Any, title: str | None) -> BreakdownRow:
    """A group with no call in its period: every figure 0, money known to be $0."""
    return BreakdownRow(
        key=key,
        title=title,
        calls=0,
        cost=Decimal(0),
        cost_uncached=Decimal(0),
        prompt=0,
        cached_tokens=0,
        completion_tokens=0,
        eligible=0,
        hits=0,
        unpriced=0,
        lost=Decimal(0),
    )


def beside_previous(
    rows: list[BreakdownRow],
    before: list[BreakdownRow],
    dimension: Dimension,
    shift: int | None,
    *,
    zone: str = "UTC",
    limit: int = BREAKDOWN_LIMIT,
) -> list[tuple[BreakdownRow, BreakdownRow | None]]:
    """Each group beside the same group of the previous period. A model or a tag is the
    same key; a day is the day `shift` days earlier (its key is another date), and a
    period that does not line up (shift None) has no partner for any row.

    Where both lists are whole (fewer than `limit` groups each), a group missing from one
    had no call in that period: it is set beside an empty row ($0), and a group of the
    previous period alone is listed too (after the others; days in their place), so the
    rows add up to both periods' totals. A cut list leaves a missing partner unknown."""
    whole = len(rows) < limit and len(before) < limit
    if dimension.name in PERIOD_KEYS and shift is None:
        return [(row, None) for row in rows]
    if dimension.name in PERIOD_KEYS:
        assert shift is not None

        def key_of(row: BreakdownRow) -> Any:
            return row.key.date()

        def now_key(row: BreakdownRow) -> Any:
            return day_start(row.key.date() + timedelta(days=shift), zone)

        then_of: dict[Any, BreakdownRow] = {
            row.key.date() + timedelta(days=shift): row for row in before
        }
    else:

        def key_of(row: BreakdownRow) -> Any:
            return row.key

        def now_key(row: BreakdownRow) -> Any:
            return row.key

        then_of = {row.key: row for row in before}
    paired: list[tuple[BreakdownRow, BreakdownRow | None]] = [
        (row, then_of.get(key_of(row)) or (_nothing(row.key, row.title) if whole else None))
        for row in rows
    ]
    if whole:
        seen = {key_of(row) for row in rows}
        gone = [(_nothing(now_key(then), then.title), then) for k, then in then_of.items()
                if k not in seen]  # fmt: skip
        paired += gone
        if dimension.name in PERIOD_KEYS:
            paired.sort(key=lambda pair: pair[0].key)
    return paired


def breakdown(
    organization: Organization,
    slice_: Slice,
    dimension: Dimension,
    *,
    sort: str = "cost",
    limit: int = BREAKDOWN_LIMIT,
) -> list[BreakdownRow]:
    """The first `limit` groups: from a rollup where one holds the slice (whole days of
    the organization, at most a model filter and one other), else one GROUP BY over the
    raw rows."""
    rolled = rollup_breakdown(organization, slice_, dimension, sort=sort, limit=limit)
    if rolled is not None:
        return rolled
    return raw_breakdown(organization, slice_, dimension, sort=sort, limit=limit)


def raw_breakdown(
    organization: Organization,
    slice_: Slice,
    dimension: Dimension,
    *,
    sort: str = "cost",
    limit: int = 200,
) -> list[BreakdownRow]:
    rows = breakdown_query(organization, slice_, dimension, sort=sort)[:limit]
    return [BreakdownRow(title=row.pop("title", None), **row) for row in rows]


def slice_totals(organization: Organization, slice_: Slice) -> BreakdownRow:
    """The figures of the whole slice, as one row (key None)."""
    days: QuerySet[Any] | None = cache_days(organization, slice_)
    if days is None:
        days = dimension_days(organization, slice_)
    if days is not None:
        row = days.aggregate(**_R_FIGURES)
        if row["r_calls"] is None:  # no day at all: the raw aggregate's zeros and NULLs
            return raw_slice_totals(organization, slice_)
        return BreakdownRow(key=None, title=None, **_figures(row))
    return raw_slice_totals(organization, slice_)


def raw_slice_totals(organization: Organization, slice_: Slice) -> BreakdownRow:
    row = slice_.records(organization).aggregate(**FIGURES)
    return BreakdownRow(key=None, title=None, **none_billed(row))


# Money of a slice with no call: nothing billed costs nothing (known, 0), as the overview's
# totals say; only billed calls none of which is priced make it unknown.
NOTHING_BILLED = {"cost": Decimal(0), "cost_uncached": Decimal(0), "lost": Decimal(0)}


def none_billed(figures: dict[str, Any]) -> dict[str, Any]:
    """`figures` of a slice, its money 0 when it has no call (its sums over no row are NULL)."""
    return figures | NOTHING_BILLED if not figures["calls"] else figures


# More tag names than a menu can show: the rest are still reachable by URL.
TAG_MENU_LIMIT = 100


def tag_keys(organization: Organization) -> list[str]:
    """The tag names the organization's billed calls carry, for the group-by menu: the
    DimensionDay kinds `tag:<name>`, walked one name at a time down its index (a probe per
    name, instead of reading every tagged conversation's tags)."""
    # A string sorts after its prefixes in any collation: the walk starts at "tag:".
    kinds = DimensionDay.objects.filter(organization=organization, kind__startswith=TAG_PREFIX)
    names: list[str] = []
    last: str | None = None
    while len(names) < TAG_MENU_LIMIT:
        after = kinds.filter(kind__gte=TAG_PREFIX) if last is None else kinds.filter(kind__gt=last)
        last = after.order_by("kind").values_list("kind", flat=True).first()
        if last is None:
            break
        names.append(last[len(TAG_PREFIX) :])
    return sorted(names)


# Export streams: one row per turn or per conversation, read through a server-side cursor.

TURN_COLUMNS = (
    ("conversation", "conversation__code"),
    ("title", "conversation__title"),
    ("source", "conversation__source"),
    ("turn", "turn_number"),
    ("occurred_at", "occurred_at"),
    ("model", "model"),
    ("prompt_cache_key", "turn__prompt_cache_key"),
    ("end_user", "turn__end_user"),
    ("api_key", "turn__api_key"),
    ("project", "turn__project"),
    ("usage_source", "source"),
    ("prompt_tokens", "prompt_tokens"),
    ("cached_tokens", "input_cached"),
    ("uncached_tokens", "input_uncached"),
    ("cache_write_tokens", "input_cache_write"),
    ("completion_tokens", "completion_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
    ("cost", "cost_total"),
    ("cost_without_cache", "cost_uncached"),
    ("cache_eligible", "cache_eligible"),
    ("miss_reason", "turn__miss_reason"),
    ("miss_detail", "turn__miss_detail"),
    ("latency_ms", "turn__latency_ms"),
    # What the call lost to a cache miss (LOST): the money the cache page sums, per call.
    ("money_lost_to_misses", "lost_money"),
)


def turn_export_rows(organization: Organization, slice_: Slice) -> Iterator[tuple[Any, ...]]:
    columns = [column for _, column in TURN_COLUMNS]
    records = (
        slice_.records(organization)
        .order_by("occurred_at", "id")
        # Numbered from 1, as the conversation page numbers its turns (stored from 0).
        .annotate(turn_number=F("turn__index") + 1, lost_money=LOST)
        .values_list(*columns)
    )
    yield from records.iterator(chunk_size=2000)


CONVERSATION_COLUMNS = (
    "conversation",
    "title",
    "source",
    "model",
    "tags",
    "calls",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "cost",
    "cost_without_cache",
    "unpriced_calls",
    "money_lost_to_misses",
)


def tags_text(tags: dict[str, Any]) -> str:
    return "; ".join(f"{key}={value}" for key, value in sorted(tags.items()))


def conversation_export_rows(
    organization: Organization, slice_: Slice
) -> Iterator[tuple[Any, ...]]:
    """One row per conversation with usage in the slice: grouped in the database, its
    title, model and tags read alongside (they depend on the conversation)."""
    rows = (
        slice_.records(organization)
        .values(
            "conversation__code",
            "conversation__title",
            "conversation__source",
            "conversation__model",
            "conversation__tags",
        )
        .annotate(**FIGURES)
        .order_by("conversation__code")
    )
    for row in rows.iterator(chunk_size=2000):
        yield (
            row["conversation__code"],
            row["conversation__title"],
            row["conversation__source"],
            row["conversation__model"],
            tags_text(row["conversation__tags"] or {}),
            row["calls"],
            row["prompt"],
            row["cached_tokens"],
            row["completion_tokens"],
            row["cost"],
            row["cost_uncached"],
            row["unpriced"],
            row["lost"],
        )


BREAKDOWN_COLUMNS = tuple(
    name for name in (f.name for f in fields(BreakdownRow)) if name not in ("title",)
)
# A breakdown's figures under the names the conversations' and calls' files give them: a
# program joining two exports read `prompt` in one and `prompt_tokens` in the other.
EXPORT_NAMES = {
    "calls": "calls",
    "cost": "cost",
    "cost_uncached": "cost_without_cache",
    "prompt": "prompt_tokens",
    "cached_tokens": "cached_tokens",
    "completion_tokens": "completion_tokens",
    "eligible": "eligible_calls",
    "hits": "hit_calls",
    "unpriced": "unpriced_calls",
    "lost": "money_lost_to_misses",
}
PREVIOUS_COLUMNS = ("previous_cost", "previous_calls")


def compared(current: Slice, previous: Slice | None, dimension: Dimension) -> bool:
    """Whether a breakdown has a previous period to set beside it: a comparison asked for,
    with groups that line up (not months; weeks of whole weeks)."""
    if previous is None:
        return False
    return dimension.name not in PERIOD_KEYS or (
        previous_shift(current, previous, dimension) is not None
    )


def breakdown_export_rows(
    organization: Organization,
    slice_: Slice,
    dimension: Dimension,
    previous: Slice | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Every group; with `previous` (when `compared`), its previous cost and calls beside
    it, and the previous period's groups alone listed too, as the page lists them."""
    titled = dimension.title is not None
    rows: Iterable[tuple[BreakdownRow, BreakdownRow | None]]
    if previous is not None and compared(slice_, previous, dimension):
        # Both whole: an export has no limit (the groups, not the calls, are in memory).
        current = list(breakdown_rows(organization, slice_, dimension))
        before = list(breakdown_rows(organization, previous, dimension))
        shift = previous_shift(slice_, previous, dimension)
        limit = max(len(current), len(before)) + 1
        rows = beside_previous(current, before, dimension, shift, zone=slice_.zone, limit=limit)
    else:
        previous = None
        rows = ((row, None) for row in breakdown_rows(organization, slice_, dimension))
    for row, then in rows:
        key = row.key.date() if isinstance(row.key, datetime) else row.key
        figures = [getattr(row, name) for name in BREAKDOWN_COLUMNS[1:]]
        if previous is not None:
            figures += [then.cost, then.calls] if then is not None else [None, None]
        yield (key, row.title, *figures) if titled else (key, *figures)


def breakdown_export_header(dimension: Dimension, *, with_previous: bool = False) -> list[str]:
    """The key's column, a title only where the key has one (a conversation's code), then
    the figures: a title column empty on every row was noise in a model's export."""
    titled = ["title"] if dimension.title is not None else []
    names = [EXPORT_NAMES[name] for name in BREAKDOWN_COLUMNS[1:]]
    return [dimension.name, *titled, *names, *(PREVIOUS_COLUMNS if with_previous else ())]
