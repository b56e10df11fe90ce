"""Two rollups of the insights pages (issue 14), so that they read a few thousand rollup rows
instead of joining a million usage rows through their turns and conversations:

- DimensionDay: an organization's usage per day and model, grouped by one more dimension
  (source, prompt_cache_key, end user, API key, project, each tag name), for the breakdowns;
- BreakerDay: per conversation, day and model, the calls whose prefix changed at one place
  (message, 128-token block), for the cache page's prefix breakers.

Kept by the same write paths as the other rollups, in their transactions, through hooks in
services/rollups.py (new rows add their sums; changed or removed rows recompute the days
and models they reach) and services/tags.py (a tag edit recomputes the conversation's days).
A module of its own so that those files change by one call each; it does not import
rollups.py (which imports it), so its upsert is its own, the same INSERT ... SELECT ... ON
CONFLICT DO UPDATE, computed by the database from the rows just written. The SQL is built
by the ORM, so it runs on SQLite as well as PostgreSQL.

A record counts once under each kind; under `tag:<name>` only when its conversation has
that tag (the breakdowns derive the group of calls without it from the CacheDay totals).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection
from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum, TextField, Value
from django.db.models.functions import Cast, Coalesce, TruncDate

from ..breakdowns import LOST, TAG_PREFIX, tag_text
from ..cache_report import BLOCK, TOOLS_MESSAGE
from ..models import BreakerDay, Conversation, DimensionDay, MissReason, Organization, UsageRecord
from .rollup_drift import compare, normal
from .rollup_lock import organization_lock
from .upsert_sql import ADD, GREATEST, LEAST, MONEY, on_conflict_combine, quote

# The kinds every record is counted under, and the value that groups it.
KINDS: dict[str, Any] = {
    "source": F("conversation__source"),
    "key": F("turn__prompt_cache_key"),
    "end_user": F("turn__end_user"),
    "api_key": F("turn__api_key"),
    "project": F("turn__project"),
}
KEYS = ("organization_id", "kind", "day", "model", "value")
# Sums as SQL's SUM gives them: NULL until a non-NULL value is added.
NULLABLE = {"cost_total", "cost_uncached", "lost"}
IDS_PER_STATEMENT = 5000


def _sums() -> dict[str, Any]:
    """The figures of a breakdown row (breakdowns.FIGURES), under the rollup's names."""
    priced = Q(cost_total__isnull=False)
    return {
        "calls": Count("id"),
        "priced_calls": Count("id", filter=priced),
        "eligible_calls": Count("id", filter=Q(cache_eligible=True)),
        "hit_calls": Count("id", filter=Q(cache_eligible=True, input_cached__gt=0)),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "input_cached": Coalesce(Sum("input_cached"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "cost_total": Sum("cost_total"),
        "cost_uncached": Sum("cost_uncached", filter=priced),
        "lost": Sum(LOST),
    }


SUMS = tuple(_sums())


def tag_value(name: str) -> Any:
    """A tag's value as text: what the breakdowns' tag filter compares."""
    return Cast(tag_text(name), TextField())


def tag_kind(name: str) -> str:
    return f"{TAG_PREFIX}{name}"


def _alias(column: str) -> str:
    # A sum named as a field (cost_total) would make the other sums' filters read it.
    return f"sum_{column}"


def _tag_names(conversations: QuerySet[Conversation]) -> list[str]:
    """The tag names of these conversations (few: tags are analysts' labels), read from
    the tagged ones only."""
    names: set[str] = set()
    tagged = conversations.exclude(tags={})
    for tags in tagged.values_list("tags", flat=True).iterator(chunk_size=2000):
        names.update(tags)
    return sorted(names)


def _dimension_rows(
    organization: Organization,
    records: QuerySet[UsageRecord],
    *,
    many: bool = False,
    tags: Sequence[str] | None = None,
) -> tuple[str, str, list[Any]]:
    """Every kind's rows as SQL: a WITH clause that sums the records once per day, model
    and combination of the dimensions' values (one scan, one ORM query to build), and a
    body that regroups it per kind (a UNION ALL: the kinds never share a key). Returns the
    WITH clause, the body and their parameters. `many`: the records are a large part of the
    organization's (a rebuild, a recompute by day span), so the tag names are read from all
    its conversations (a superset: a name no record has gives no row), not through them.
    `tags`: the names, when the caller has read them (tag_names_sql)."""
    if tags is None:
        conversations = Conversation.objects.filter(organization=organization)
        if not many:
            records_of = records.values("conversation_id").order_by()
            conversations = conversations.filter(pk__in=records_of)
        tags = _tag_names(conversations)
    columns = {f"v_{kind}": value for kind, value in KINDS.items()}
    kinds = dict(zip(columns, KINDS, strict=True))
    for n, name in enumerate(tags):
        columns[f"t_{n}"] = tag_value(name)
        kinds[f"t_{n}"] = tag_kind(name)
    grouped = (
        records.annotate(day=TruncDate("occurred_at", tzinfo=ZoneInfo(organization.time_zone)))
        .annotate(**columns)
        .values("organization_id", "day", "model", *columns)
        .annotate(**{_alias(c): v for c, v in _sums().items()})
        .order_by()
    )
    inner, params = grouped.query.sql_with_params()
    sums = ", ".join(f"SUM(g.{quote(_alias(c))}) AS {quote(_alias(c))}" for c in SUMS)
    parts = []
    for column in columns:
        value = f"g.{quote(column)}"
        parts.append(
            f"SELECT g.{quote('organization_id')}, %s AS {quote('kind')}, g.{quote('day')}, "
            f"g.{quote('model')}, {value} AS {quote('value')}, {sums} FROM g "
            f"WHERE {value} IS NOT NULL "
            f"GROUP BY g.{quote('organization_id')}, g.{quote('day')}, g.{quote('model')}, "
            f"{value}"
        )
    return f"WITH g AS ({inner}) ", " UNION ALL ".join(parts), [*params, *kinds.values()]


# BreakerDay: its keys, the keys its upsert meets, and how each figure combines.
BREAKER_KEYS = ("organization_id", "conversation_id", "day", "model", "message", "block")
BREAKER_CONFLICT = BREAKER_KEYS[1:]
BREAKER_COMBINE = {
    "first_token": LEAST,
    "last_token": GREATEST,
    "first_turn": LEAST,
    "last_turn": GREATEST,
}


def _breaker_sums() -> dict[str, Any]:
    return {
        "calls": Count("id"),
        "lost": Sum(LOST),
        "first_token": Min("turn__miss_token"),
        "last_token": Max("turn__miss_token"),
        "first_turn": Min("turn_id"),
        "last_turn": Max("turn_id"),
    }


def _breaker_rows(organization: Organization, records: QuerySet[UsageRecord]) -> QuerySet[Any]:
    """The BreakerDay rows the records give: calls that missed because the prefix changed
    at a known token, grouped as cache_report.prefix_breakers groups them."""
    zone = ZoneInfo(organization.time_zone)
    rows: QuerySet[Any] = (
        records.filter(turn__miss_reason=MissReason.PREFIX_CHANGED, turn__miss_token__isnull=False)
        .annotate(
            day=TruncDate("occurred_at", tzinfo=zone),
            message=Coalesce(F("turn__miss_message"), Value(TOOLS_MESSAGE)),
            block=F("turn__miss_token") / BLOCK,
        )
        .values(*BREAKER_KEYS)
        .annotate(**{_alias(c): v for c, v in _breaker_sums().items()})
        .order_by()
    )
    return rows


def _upsert(
    table: str,
    rows: tuple[str, str, Sequence[Any]],
    keys: tuple[str, ...],
    sums: Iterable[str],
    *,
    conflict: tuple[str, ...] | None,
    combine: dict[str, str] | None = None,
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(*_upsert_sql(table, rows, keys, sums, conflict=conflict, combine=combine))


def _upsert_sql(
    table: str,
    rows: tuple[str, str, Sequence[Any]],
    keys: tuple[str, ...],
    sums: Iterable[str],
    *,
    conflict: tuple[str, ...] | None,
    combine: dict[str, str] | None = None,
) -> tuple[str, Sequence[Any]]:
    """INSERT the rows a query computes (its WITH clause, body and parameters); with
    `conflict`, a key already there gets the new figures combined with its own: added
    (costs: NULL + x = x, as SUM has it), or the least or the greatest of the two."""
    sums = list(sums)
    columns = [*keys, *sums]
    names = ", ".join(quote(c) for c in columns)
    select = ", ".join(f"delta.{quote(c if c in keys else _alias(c))}" for c in columns)
    prefix, inner, params = rows
    target = quote(table)
    # WHERE true: SQLite needs it to tell an upsert's ON from a join's. The keys in order,
    # so two writers never wait on each other in a cycle.
    sql = (
        f"{prefix}INSERT INTO {target} ({names}) SELECT {select} FROM ({inner}) delta WHERE true "
        f"ORDER BY {', '.join(f'delta.{quote(k)}' for k in keys)}"
    )
    if conflict is not None:
        how = combine or {}
        kinds = [(c, how.get(c) or (MONEY if c in NULLABLE else ADD)) for c in sums]
        sql += on_conflict_combine(table, conflict, kinds)
    return sql, params


def _insert(
    organization: Organization, records: QuerySet[UsageRecord], *, add: bool, many: bool = False
) -> None:
    """Both rollups' rows from the records: every kind of DimensionDay in one statement,
    then BreakerDay's."""
    rows = _dimension_rows(organization, records, many=many)
    _upsert(DimensionDay._meta.db_table, rows, KEYS, SUMS, conflict=KEYS if add else None)
    _upsert(
        BreakerDay._meta.db_table,
        ("", *_breaker_rows(organization, records).query.sql_with_params()),
        BREAKER_KEYS,
        _breaker_sums(),
        conflict=BREAKER_CONFLICT if add else None,
        combine=BREAKER_COMBINE,
    )


def dimension_sums(
    organization: Organization, records: QuerySet[UsageRecord]
) -> list[tuple[Any, ...]]:
    """DimensionDay's rows of the records as the SQL sums them, read rather than written
    (an import adds them with the rest of its sums, in one upsert): KEYS, then SUMS."""
    prefix, body, params = _dimension_rows(organization, records)
    columns = ", ".join(
        [*(f"delta.{quote(k)}" for k in KEYS), *(f"delta.{quote(_alias(c))}" for c in SUMS)]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"{prefix}SELECT {columns} FROM ({body}) delta", params)
        return [tuple(row) for row in cursor.fetchall()]


def breakers_added(*, organization: Organization, records: QuerySet[UsageRecord]) -> None:
    """Add BreakerDay's rows of billing records just written (per conversation: no other
    writer shares them)."""
    _upsert(
        BreakerDay._meta.db_table,
        ("", *_breaker_rows(organization, records).query.sql_with_params()),
        BREAKER_KEYS,
        _breaker_sums(),
        conflict=BREAKER_CONFLICT,
        combine=BREAKER_COMBINE,
    )


def _billing(organization: Organization) -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(organization=organization, is_billing=True)


# --- write paths (called by services/rollups.py and services/tags.py) ---------------------


def records_added(*, organization: Organization, records: QuerySet[UsageRecord]) -> None:
    """Add the sums of billing records just written (an import's chunk, a recorded call)."""
    _insert(organization, records, add=True)


def records_added_sql(
    organization: Organization, records: QuerySet[UsageRecord], tags: Sequence[str]
) -> list[tuple[str, Sequence[Any]]]:
    """The statements of records_added for records of conversations whose tag names are
    `tags` (a superset is as correct): what services/rollups.py builds once per process for
    a live call (its statements with stand-ins) and runs with the call's ids."""
    return [
        _upsert_sql(
            DimensionDay._meta.db_table,
            _dimension_rows(organization, records, tags=tags),
            KEYS,
            SUMS,
            conflict=KEYS,
        ),
        _upsert_sql(
            BreakerDay._meta.db_table,
            ("", *_breaker_rows(organization, records).query.sql_with_params()),
            BREAKER_KEYS,
            _breaker_sums(),
            conflict=BREAKER_CONFLICT,
            combine=BREAKER_COMBINE,
        ),
    ]


def tag_names_sql(
    organization: Organization, conversation_ids: Sequence[int]
) -> list[tuple[str, Sequence[Any]]]:
    """The statement that reads these conversations' tags (their JSON objects, tagged ones
    only); tag_names_of gives the names from its rows."""
    tagged = Conversation.objects.filter(organization=organization, pk__in=conversation_ids)
    sql, params = tagged.exclude(tags={}).values_list("tags").query.sql_with_params()
    return [(sql, params)]


def tag_names_of(rows: Iterable[tuple[Any, ...]]) -> list[str]:
    """The sorted tag names of tag_names_sql's rows (a JSON object each, or its text)."""
    names: set[str] = set()
    for (tags,) in rows:
        names.update(json.loads(tags) if isinstance(tags, str | bytes) else tags)
    return sorted(names)


def _day_start(organization: Organization, day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZoneInfo(organization.time_zone))


def span_recompute(
    *, organization: Organization, first: date, last: date, models: Iterable[str]
) -> None:
    """Recompute every row of these days and models from the raw rows (after re-pricing,
    a delete, a tag edit): a superset of the keys a change reaches, and as correct."""
    models = sorted(set(models))
    for table in (DimensionDay, BreakerDay):
        table.objects.filter(
            organization=organization, day__gte=first, day__lte=last, model__in=models
        ).delete()
    records = _billing(organization).filter(
        occurred_at__gte=_day_start(organization, first),
        occurred_at__lt=_day_start(organization, last + timedelta(days=1)),
        model__in=models,
    )
    _insert(organization, records, add=False, many=True)


def conversations_retagged(*, organization: Organization, conversation_ids: list[int]) -> None:
    """After conversations' tags changed: recompute the days and models their usage is on,
    in the caller's transaction."""
    organization_lock(organization.pk, shared=False)
    zone = ZoneInfo(organization.time_zone)
    for start in range(0, len(conversation_ids), IDS_PER_STATEMENT):
        batch = conversation_ids[start : start + IDS_PER_STATEMENT]
        spans = (
            _billing(organization)
            .filter(conversation_id__in=batch)
            .values("model")
            .annotate(first=Min("occurred_at"), last=Max("occurred_at"))
            .order_by()
        )
        for row in spans:
            span_recompute(
                organization=organization,
                first=row["first"].astimezone(zone).date(),
                last=row["last"].astimezone(zone).date(),
                models=[row["model"]],
            )


def organization_forget(*, organization: Organization) -> None:
    DimensionDay.objects.filter(organization=organization).delete()
    BreakerDay.objects.filter(organization=organization).delete()


def organization_rebuild(*, organization: Organization) -> None:
    """Every row again from the raw rows; the caller owns the transaction."""
    organization_forget(organization=organization)
    _insert(organization, _billing(organization), add=False, many=True)


# --- verification -------------------------------------------------------------------------


def _keyed(
    rows: Iterable[dict[str, Any]], keys: tuple[str, ...], sums: Iterable[str]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    keyed = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        keyed[key] = {c: normal(row[c] if c in row else row[_alias(c)]) for c in sums}
    return keyed


def organization_drift(*, organization: Organization) -> list[str]:
    """Every DimensionDay and BreakerDay row that differs from the raw rows, one line each."""
    keys = KEYS[1:]
    stored = DimensionDay.objects.filter(organization=organization).values(*keys, *SUMS)
    prefix, body, params = _dimension_rows(organization, _billing(organization), many=True)
    with connection.cursor() as cursor:
        cursor.execute(f"{prefix}SELECT * FROM ({body}) delta", params)
        names = [column[0] for column in cursor.description]
        raw_rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in raw_rows:  # SQLite gives a day as text
        if isinstance(row["day"], str):
            row["day"] = date.fromisoformat(row["day"])
    drift = compare("dimensionday", _keyed(stored, keys, SUMS), _keyed(raw_rows, keys, SUMS))
    places, figures = BREAKER_KEYS[1:], tuple(_breaker_sums())
    breakers = BreakerDay.objects.filter(organization=organization).values(*places, *figures)
    drift += compare(
        "breakerday",
        _keyed(breakers, places, figures),
        _keyed(_breaker_rows(organization, _billing(organization)), places, figures),
    )
    return drift
