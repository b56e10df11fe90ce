"""The DimensionDay rollup: an organization's usage per day and model, grouped by one more
dimension (source, prompt_cache_key, end user, API key, project, each tag name), so that the
breakdowns by those dimensions read a few thousand rollup rows instead of joining a million
usage rows through their turns and conversations (issue 14).

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

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection
from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, TruncDate

from ..breakdowns import LOST, TAG_PREFIX
from ..models import Conversation, DimensionDay, Organization, UsageRecord

# The kinds every record is counted under, and the value that groups it.
KINDS: dict[str, Any] = {
    "source": F("conversation__source"),
    "key": F("turn__prompt_cache_key"),
    "user": F("turn__end_user"),
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
    return Cast(KeyTextTransform(name, "conversation__tags"), TextField())


def tag_kind(name: str) -> str:
    return f"{TAG_PREFIX}{name}"


def _alias(column: str) -> str:
    # A sum named as a field (cost_total) would make the other sums' filters read it.
    return f"sum_{column}"


def _kind_rows(
    organization: Organization, records: QuerySet[UsageRecord], kind: str, value: Any
) -> QuerySet[Any]:
    """The rollup rows of one kind as the records give them (a values() queryset)."""
    zone = ZoneInfo(organization.time_zone)
    rows: QuerySet[Any] = (
        records.annotate(
            day=TruncDate("occurred_at", tzinfo=zone),
            kind=Value(kind, output_field=TextField()),
            value=value,
        )
        .filter(value__isnull=False)
        .values(*KEYS)
        .annotate(**{_alias(c): v for c, v in _sums().items()})
        .order_by()
    )
    return rows


def _tag_names(records: QuerySet[UsageRecord]) -> list[str]:
    """The tag names of the conversations these records belong to (few: tags are
    analysts' labels), read from the tagged conversations only."""
    names: set[str] = set()
    tagged = Conversation.objects.filter(
        pk__in=records.values("conversation_id").order_by()
    ).exclude(tags={})
    for tags in tagged.values_list("tags", flat=True).iterator(chunk_size=2000):
        names.update(tags)
    return sorted(names)


def _all_rows(organization: Organization, records: QuerySet[UsageRecord]) -> list[QuerySet[Any]]:
    rows = [_kind_rows(organization, records, kind, value) for kind, value in KINDS.items()]
    for name in _tag_names(records):
        tagged = records.filter(conversation__tags__has_key=name)
        rows.append(_kind_rows(organization, tagged, tag_kind(name), tag_value(name)))
    return rows


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _insert(parts: list[QuerySet[Any]], *, add: bool) -> None:
    """INSERT the rows of every kind in one statement (a UNION ALL: the kinds never share
    a key); with `add`, a key already there gets the new sums added to its own."""
    if not parts:
        return
    rows = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
    columns = [*KEYS, *SUMS]
    names = ", ".join(_quote(c) for c in columns)
    select = ", ".join(f"delta.{_quote(c if c in KEYS else _alias(c))}" for c in columns)
    inner, params = rows.query.sql_with_params()
    table = _quote(DimensionDay._meta.db_table)
    # WHERE true: SQLite needs it to tell an upsert's ON from a join's. The keys in order,
    # so two writers never wait on each other in a cycle.
    sql = (
        f"INSERT INTO {table} ({names}) SELECT {select} FROM ({inner}) delta WHERE true "
        f"ORDER BY {', '.join(f'delta.{_quote(k)}' for k in KEYS)}"
    )
    if add:
        updates = []
        for column in SUMS:
            mine, theirs = f"{table}.{_quote(column)}", f"excluded.{_quote(column)}"
            if column in NULLABLE:
                updates.append(f"{_quote(column)} = COALESCE({mine} + {theirs}, {mine}, {theirs})")
            else:
                updates.append(f"{_quote(column)} = {mine} + {theirs}")
        sql += f" ON CONFLICT ({', '.join(_quote(k) for k in KEYS)}) DO UPDATE SET "
        sql += ", ".join(updates)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _billing(organization: Organization) -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(organization=organization, is_billing=True)


# --- write paths (called by services/rollups.py and services/tags.py) ---------------------


def records_added(*, organization: Organization, records: QuerySet[UsageRecord]) -> None:
    """Add the sums of billing records just written (an import's chunk, a recorded call)."""
    _insert(_all_rows(organization, records), add=True)


def _day_start(organization: Organization, day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZoneInfo(organization.time_zone))


def span_recompute(
    *, organization: Organization, first: date, last: date, models: Iterable[str]
) -> None:
    """Recompute every row of these days and models from the raw rows (after re-pricing,
    a delete, a tag edit): a superset of the keys a change reaches, and as correct."""
    models = sorted(set(models))
    DimensionDay.objects.filter(
        organization=organization, day__gte=first, day__lte=last, model__in=models
    ).delete()
    records = _billing(organization).filter(
        occurred_at__gte=_day_start(organization, first),
        occurred_at__lt=_day_start(organization, last + timedelta(days=1)),
        model__in=models,
    )
    _insert(_all_rows(organization, records), add=False)


def conversations_retagged(*, organization: Organization, conversation_ids: list[int]) -> None:
    """After conversations' tags changed: recompute the days and models their usage is on,
    in the caller's transaction."""
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


def organization_rebuild(*, organization: Organization) -> None:
    """Every row again from the raw rows; the caller owns the transaction."""
    organization_forget(organization=organization)
    _insert(_all_rows(organization, _billing(organization)), add=False)


# --- verification -------------------------------------------------------------------------


def _normal(value: Any) -> Any:
    """A sum to the rollup's 12 places without trailing zeros (SQLite sums decimals as
    floats and carries more)."""
    if isinstance(value, float | Decimal):
        return Decimal(str(value)).quantize(Decimal("1e-12")).normalize()
    return value


def _keyed(rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    keyed = {}
    for row in rows:
        key = tuple(row[k] for k in KEYS[1:])
        keyed[key] = {c: _normal(row.get(c, row.get(_alias(c)))) for c in SUMS}
    return keyed


def organization_drift(*, organization: Organization) -> list[str]:
    """Every DimensionDay row that differs from the raw rows, one line each."""
    stored = _keyed(DimensionDay.objects.filter(organization=organization).values(*KEYS[1:], *SUMS))
    raw: dict[tuple[Any, ...], dict[str, Any]] = {}
    for part in _all_rows(organization, _billing(organization)):
        raw.update(_keyed(part))
    drift = []
    for key in sorted(set(stored) | set(raw), key=repr):
        mine, truth = stored.get(key), raw.get(key)
        if mine is None:
            drift.append(f"dimensionday {key}: missing (raw rows sum to {truth})")
        elif truth is None:
            drift.append(f"dimensionday {key}: {mine} but no raw rows")
        elif mine != truth:
            shown = ", ".join(f"{c} {mine[c]} != {truth[c]}" for c in SUMS if mine[c] != truth[c])
            drift.append(f"dimensionday {key}: {shown} (rollup != raw)")
    return drift
