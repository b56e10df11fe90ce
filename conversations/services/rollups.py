"""Rollups: the sums pages read instead of the raw usage (design.md 2.10).

Six tables (conversations/models.py): UsageDay (organization x day x model, calibration sums
included), CalibrationGap (its estimate-gap histogram), CacheDay (organization x day x model x
miss reason, for the cache page), ConversationDay (conversation x day x model),
ConversationTotals (conversation) and DimensionDay (organization x day x model x one more
dimension, kept by services/dimension_rollups.py through the hooks here). They are written in
the transaction that writes or changes the usage they sum, so a page never sees one without the
other:

- new rows add their sums: one INSERT ... SELECT ... ON CONFLICT DO UPDATE per table,
  computed by the database from the rows just written (`turns_added` for a recorded call,
  `conversations_added` for an import's chunk on SQLite or through the ORM); on PostgreSQL an
  import's chunk is summed in Python from its rows in memory (`chunk_added`,
  services/chunk_sums.py) and only the sums are written, and so is a chat turn's
  (`turn_sums`, which its writer adds in the statement that writes the turn);
- changed or deleted rows recompute the keys they touch from the raw rows
  (`conversations_recompute` after re-pricing, `conversations_removed` around a delete);
- `organization_rebuild` starts over, `organization_drift` compares with the raw rows
  (manage.py rollups_rebuild, rollups_verify).

Days are in the organization's time zone (Organization.time_zone). The SQL is built by the
ORM, so it runs on SQLite as well as PostgreSQL; the upserts take their keys in order, and an
import adds its organization-day sums once, at its end (`staged`), so two writers never wait
on each other in a cycle; the writers that recompute rows instead take the organization's
lock exclusive (`organization_lock`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    FloatField,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Abs, Cast, Coalesce, Round, TruncDate
from django.db.models.lookups import GreaterThan

from ..breakdowns import LOST, MISSED_TOKENS, OTHER_KEY
from ..models import (
    BreakerDay,
    CacheDay,
    CalibrationGap,
    Conversation,
    ConversationDay,
    ConversationTotals,
    DimensionDay,
    Organization,
    Turn,
    UsageDay,
    UsageRecord,
    UsageSource,
)
from . import chunk_sums, dimension_rollups
from .rollup_drift import compare, normal
from .rollup_lock import organization_lock, organization_lock_keys
from .upsert_sql import ADD, EITHER, MONEY, on_conflict_combine, quote

# Ids per statement: well under PostgreSQL's 65,535 parameters.
ID_BATCH = 5000


def _int_sum(name: str, **extra: Any) -> Coalesce:
    return Coalesce(Sum(name, **extra), 0)


def _usage_day_sums() -> dict[str, Any]:
    priced = Q(cost_total__isnull=False)
    hit = Q(input_cached__gt=0)
    return {
        "calls": Count("id"),
        "priced_calls": Count("id", filter=priced),
        "prompt_tokens": _int_sum("prompt_tokens"),
        "completion_tokens": _int_sum("completion_tokens"),
        "total_tokens": _int_sum("total_tokens"),
        "input_uncached": _int_sum("input_uncached"),
        "input_cached": _int_sum("input_cached"),
        "input_cache_write": _int_sum("input_cache_write"),
        "output": _int_sum("output"),
        "cost_total": Sum("cost_total"),
        "cost_input_uncached": Sum("cost_input_uncached"),
        "cost_input_cached": Sum("cost_input_cached"),
        "cost_input_cache_write": Sum("cost_input_cache_write"),
        "cost_output": Sum("cost_output"),
        "cost_uncached": Sum("cost_uncached", filter=priced),
        "eligible_calls": Count("id", filter=Q(cache_eligible=True)),
        # A hit is an eligible call that read cached tokens (design.md 2.8); a call that read
        # cached tokens is always eligible (services/usage.py).
        "hit_calls": Count("id", filter=Q(cache_eligible=True) & hit),
        **_latency_sums(hit),
        **_calibration_sums(),
    }


def _latency_sums(hit: Q) -> dict[str, Any]:
    """Latency sums and counts of hits and of eligible misses (UsageDay and CacheDay):
    the cache page's latency reduction is their means' ratio."""
    miss = Q(input_cached=0, cache_eligible=True)
    return {
        "latency_hit_ms": _int_sum("turn__latency_ms", filter=hit),
        "latency_hit_calls": Count("turn__latency_ms", filter=hit),
        "latency_miss_ms": _int_sum("turn__latency_ms", filter=miss),
        "latency_miss_calls": Count("turn__latency_ms", filter=miss),
    }


def _calibration_sums() -> dict[str, Any]:
    """What engine/calibration.py computes per model, as sums (its percentile comes from
    CalibrationGap)."""
    reported = Q(source=UsageSource.REPORTED)
    estimated = F("turn__estimated_prompt_tokens")
    simulated = F("turn__simulated_cached_tokens")
    agree = Q(input_cached__gt=0, turn__simulated_cached_tokens__gt=0) | Q(
        input_cached=0, turn__simulated_cached_tokens=0
    )
    return {
        "reported_calls": Count("id", filter=reported),
        "estimate_exact_calls": Count("id", filter=reported & Q(prompt_tokens=estimated)),
        "estimate_gap_sum": Sum(_gap(signed=True), filter=reported & Q(prompt_tokens__gt=0)),
        "estimate_gap_calls": Count("id", filter=reported & Q(prompt_tokens__gt=0)),
        "cached_exact_calls": Count("id", filter=reported & Q(input_cached=simulated)),
        "hit_agreement_calls": Count("id", filter=reported & agree),
        "simulated_cached": _int_sum("turn__simulated_cached_tokens", filter=reported),
        "reported_cached": _int_sum("input_cached", filter=reported),
    }


def _gap(*, signed: bool) -> Any:
    """(estimated - reported) / reported prompt tokens of a row, rounded to 12 places."""
    difference: Any = F("turn__estimated_prompt_tokens") - F("prompt_tokens")
    if not signed:
        difference = Abs(difference)
    exact: DecimalField[Decimal, Decimal] = DecimalField(max_digits=30, decimal_places=12)
    # SQLite's NUMERIC keeps an integer an integer (and divides it as one): divide as floats.
    kind: Any = FloatField() if connection.vendor == "sqlite" else exact
    return Round(
        ExpressionWrapper(Cast(difference, kind) / F("prompt_tokens"), output_field=kind),
        12,
        output_field=exact,
    )


def _conversation_totals_sums() -> dict[str, Any]:
    return {
        "calls": Count("id"),
        "priced_calls": Count("id", filter=Q(cost_total__isnull=False)),
        "cost_total": Sum("cost_total"),
        "total_tokens": _int_sum("total_tokens"),
        "prompt_tokens": _int_sum("prompt_tokens"),
        "input_cached": _int_sum("input_cached"),
    }


def _conversation_day_sums() -> dict[str, Any]:
    """ConversationTotals' sums and the rest of a breakdown row (the breakdown by
    conversation), with the same filters as breakdowns.FIGURES."""
    priced = Q(cost_total__isnull=False)
    return {
        **_conversation_totals_sums(),
        "cost_uncached": Sum("cost_uncached", filter=priced),
        "completion_tokens": _int_sum("completion_tokens"),
        "eligible_calls": Count("id", filter=Q(cache_eligible=True)),
        "hit_calls": Count("id", filter=Q(cache_eligible=True, input_cached__gt=0)),
        "lost": Sum(LOST),
    }


def _cache_day_sums() -> dict[str, Any]:
    """What cache_report.py's summary and lost-by-reason/day/model sum (the same filters)."""
    priced = Q(cost_total__isnull=False)
    hit = Q(input_cached__gt=0)
    missed = Q(cache_eligible=True) & Q(GreaterThan(MISSED_TOKENS, 0))
    other_key = Q(turn__miss_reason="cold", turn__miss_detail__startswith=OTHER_KEY)
    no_key = Q(turn__prompt_cache_key="")
    return {
        "calls": Count("id"),
        "priced_calls": Count("id", filter=priced),
        "eligible_calls": Count("id", filter=Q(cache_eligible=True)),
        "hit_calls": Count("id", filter=Q(cache_eligible=True) & hit),
        "prompt_tokens": _int_sum("prompt_tokens"),
        "input_cached": _int_sum("input_cached"),
        "completion_tokens": _int_sum("completion_tokens"),
        "cost_total": Sum("cost_total"),
        "cost_uncached": Sum("cost_uncached", filter=priced),
        "lost": Sum(LOST),
        "missed_tokens": Coalesce(Sum(MISSED_TOKENS), 0),
        "missed_calls": Count("id", filter=missed),
        "missed_lost": Sum(LOST, filter=missed),
        "other_key_calls": Count("id", filter=missed & other_key),
        "other_key_lost": Sum(LOST, filter=missed & other_key),
        "no_key_calls": Count("id", filter=missed & no_key),
        "no_key_lost": Sum(LOST, filter=missed & no_key),
        **_latency_sums(hit),
    }


# ConversationTotals carries every ConversationDay sum (the breakdown by conversation over
# the whole period reads it), each the sum of the conversation's ConversationDay rows.
TOTALS_COLUMNS = tuple(_conversation_day_sums())
# Columns whose sums follow SQL's SUM: NULL until a non-NULL value is added.
NULLABLE_COLUMNS = {
    name
    for name in (*_usage_day_sums(), *_cache_day_sums(), *_conversation_day_sums())
    if "cost_" in name or "_sum" in name or name.endswith("lost")
}


def _billing(organization: Organization) -> QuerySet[UsageRecord]:
    # Every rollup statement starts from the organization (its index leads with it).
    return UsageRecord.objects.filter(organization=organization, is_billing=True)


def _local_day(organization: Organization) -> TruncDate:
    return TruncDate("occurred_at", tzinfo=ZoneInfo(organization.time_zone))


@dataclass(frozen=True)
class Table:
    model: type[models.Model]
    keys: tuple[str, ...]
    sums: dict[str, Any]
    conflict: tuple[str, ...]  # the unique constraint an upsert meets
    # Key columns computed from each record besides the organization, conversation, model.
    computed: dict[str, Any] = field(default_factory=dict)
    only: Q = field(default_factory=Q)  # the records it sums, of the billing ones

    @property
    def name(self) -> str:
        return self.model._meta.db_table

    def rows(self, organization: Organization, records: QuerySet[UsageRecord]) -> QuerySet[Any]:
        """The table's rows as the raw records give them (a values() queryset)."""
        rows: QuerySet[Any] = (
            records.filter(self.only)
            .annotate(day=_local_day(organization), **self.computed)
            .values(*self.keys)
            .annotate(**_aliased(self.sums))
            .order_by()
        )
        return rows


USAGE_DAY = Table(
    UsageDay,
    keys=("organization_id", "day", "model"),
    sums=_usage_day_sums(),
    conflict=("organization_id", "day", "model"),
)
CALIBRATION_GAP = Table(
    CalibrationGap,
    keys=("organization_id", "day", "model", "gap_permille"),
    sums={"calls": Count("id")},
    conflict=("organization_id", "day", "model", "gap_permille"),
    computed={
        "gap_permille": Cast(
            Round(
                ExpressionWrapper(
                    _gap(signed=False) * 1000,
                    output_field=DecimalField(max_digits=30, decimal_places=12),
                )
            ),
            BigIntegerField(),
        )
    },
    only=Q(source=UsageSource.REPORTED, prompt_tokens__gt=0),
)
CONVERSATION_DAY = Table(
    ConversationDay,
    keys=("organization_id", "conversation_id", "day", "model"),
    sums=_conversation_day_sums(),
    conflict=("conversation_id", "day", "model"),
)
CACHE_DAY = Table(
    CacheDay,
    keys=("organization_id", "day", "model", "miss_reason"),
    sums=_cache_day_sums(),
    conflict=("organization_id", "day", "model", "miss_reason"),
    computed={"miss_reason": F("turn__miss_reason")},
)
# Tables keyed by the organization's days: recomputed by day span (`_recompute`).
ORG_DAY_TABLES = (USAGE_DAY, CALIBRATION_GAP, CACHE_DAY)


def _alias(column: str) -> str:
    """The sums' names in a query: a name equal to a field's (cost_total) would make the
    other sums' filters read the sum instead of the field."""
    return f"sum_{column}"


def _aliased(sums: dict[str, Any]) -> dict[str, Any]:
    return {_alias(column): value for column, value in sums.items()}


def _insert_sql(table: Table, rows: QuerySet[Any], *, add: bool) -> tuple[str, Sequence[Any]]:
    """INSERT the rows a values() queryset computes; with `add`, a key already there gets
    the new sums added to its own (costs: NULL + x = x, as SUM would have it)."""
    inner, params = rows.query.sql_with_params()
    return _select_insert_sql(table, inner, params, add=add)


def _select_insert_sql(
    table: Table, inner: str, params: Sequence[Any], *, add: bool
) -> tuple[str, Sequence[Any]]:
    """_insert_sql of rows a SELECT gives: the table's keys and its sums under their aliases."""
    columns = [*table.keys, *table.sums]
    names = ", ".join(quote(c) for c in columns)
    select = ", ".join(f"delta.{quote(c if c in table.keys else _alias(c))}" for c in columns)
    # WHERE true: SQLite needs it to tell an upsert's ON from a join's.
    sql = (
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {select} FROM ({inner}) delta "
        f"WHERE true ORDER BY {', '.join(f'delta.{quote(k)}' for k in table.keys)}"
    )
    if add:
        kinds = [(c, MONEY if c in NULLABLE_COLUMNS else ADD) for c in table.sums]
        sql += on_conflict_combine(table.name, table.conflict, kinds)
    return sql, params


def _insert(table: Table, rows: QuerySet[Any], *, add: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute(*_insert_sql(table, rows, add=add))


def _totals_insert_sql(
    organization: Organization, conversation_ids: list[int] | None
) -> tuple[str, Sequence[Any]]:
    """ConversationTotals summed from ConversationDay rows (a few per conversation): simpler
    than a second upsert, and it cannot drift from them. None: every conversation."""
    days = ConversationDay.objects.filter(organization=organization)
    if conversation_ids is not None:
        days = days.filter(conversation_id__in=conversation_ids)
    sums = (
        days.values("conversation_id", "organization_id")
        .annotate(**{_alias(c): Sum(c) for c in TOTALS_COLUMNS})
        .annotate(
            sum_is_priced=Case(When(sum_priced_calls__gt=0, then=Value(True)), default=Value(False))
        )
        .order_by()
    )
    inner, params = sums.query.sql_with_params()
    keys = ("conversation_id", "organization_id")
    columns = (*TOTALS_COLUMNS, "is_priced")
    names = ", ".join(quote(c) for c in (*keys, *columns))
    select = ", ".join(quote(c) for c in (*keys, *map(_alias, columns)))
    sql = (
        f"INSERT INTO {quote(ConversationTotals._meta.db_table)} ({names}) "
        f"SELECT {select} FROM ({inner}) totals WHERE true ORDER BY conversation_id"
    )
    return sql, params


def _totals_insert(organization: Organization, conversation_ids: list[int] | None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(*_totals_insert_sql(organization, conversation_ids))


def _totals_refresh(organization: Organization, conversation_ids: list[int]) -> None:
    for batch in _batches(conversation_ids):
        ConversationTotals.objects.filter(
            organization=organization, conversation_id__in=batch
        ).delete()
        _totals_insert(organization, batch)


def _batches(ids: Iterable[int]) -> Iterator[list[int]]:
    items = sorted(set(ids))
    for start in range(0, len(items), ID_BATCH):
        yield items[start : start + ID_BATCH]


def _by_organization(conversation_ids: Iterable[int]) -> dict[Organization, list[int]]:
    grouped: dict[int, list[int]] = defaultdict(list)
    for batch in _batches(conversation_ids):
        for pk, org_id in Conversation.objects.filter(pk__in=batch).values_list(
            "pk", "organization_id"
        ):
            grouped[org_id].append(pk)
    organizations = Organization.objects.in_bulk(list(grouped))
    return {organizations[org_id]: ids for org_id, ids in grouped.items()}


# --- new rows: add their sums -------------------------------------------------------------


def conversations_added(*, conversation_ids: list[int], staged: Staged | None = None) -> None:
    """Add the usage of conversations whose rows were all just written (an import's chunk)
    to the rollups. Call once per chunk, after its usage records, in the same transaction.
    `staged`: the organization-day sums wait there until the import's last chunk."""
    for organization, ids in _by_organization(conversation_ids).items():
        if staged is None:
            organization_lock(organization.pk, shared=True)
        else:
            staged.organizations.add(organization.pk)
        for batch in _batches(ids):
            records = _billing(organization).filter(conversation_id__in=batch)
            for table in ORG_DAY_TABLES:
                if staged is None:
                    _insert(table, table.rows(organization, records), add=True)
                else:
                    staged.add(table, table.rows(organization, records))
            # The conversations are new: their rows are this transaction's alone.
            _insert(CONVERSATION_DAY, CONVERSATION_DAY.rows(organization, records), add=True)
            if staged is None:
                dimension_rollups.records_added(organization=organization, records=records)
            else:
                staged.add_dimensions(organization, batch)
        _totals_refresh(organization, ids)


def chunk_added(
    *, organization: Organization, chunk: chunk_sums.ChunkInput, staged: Staged
) -> None:
    """conversations_added for an import's chunk on PostgreSQL, from the rows in memory
    (services/chunk_sums.py): the conversations' own rollups go in now by COPY, the shared
    sums wait in `staged` until the import's end. A chunk chunk_sums cannot sum exactly
    takes the SQL path."""
    staged.organizations.add(organization.pk)
    try:
        shared, own = chunk_sums.chunk_sums(
            chunk, time_zone=organization.time_zone, rates=staged.rates
        )
    except chunk_sums.Unsupported:
        conversations_added(conversation_ids=list(chunk.conversation_ids), staged=staged)
        return
    chunk_sums.own_write(own)
    for shape in (*chunk_sums.ORG_DAY_SHAPES, chunk_sums.DIMENSION_DAY):
        staged.sums.merge(shape, shared)


_STAGES = itertools.count()


class Staged:
    """An import's sums for the organization-day rollups (UsageDay, CalibrationGap,
    CacheDay), gathered chunk by chunk in temporary tables of the transaction, then added to
    the rollups by one upsert per table, keys in order (`staged()` does it on the way out).

    Why: an upsert locks its row until commit. Added chunk by chunk, two imports into one
    organization could each hold keys of their first chunks and wait for the other's (a
    deadlock, which PostgreSQL ends by failing one import). Added at once, every writer takes
    these rows table by table in ORG_DAY_TABLES order and, within a table, in key order
    (`_insert` sorts too), so no two wait on each other in a cycle; and the rows stay locked
    only from the end of the import to its commit. SQLite locks the whole database for a
    writer: there the sums go straight in."""

    def __init__(self) -> None:
        self.tables: dict[str, str] = {}  # rollup table -> its temporary table
        # Chunks summed in Python (chunk_sums, PostgreSQL): their shared sums, and the
        # price rows' figures they read.
        self.sums = chunk_sums.Sums()
        self.rates = chunk_sums.PriceRates()
        self.organizations: set[int] = set()  # whose rollups it adds to
        # DimensionDay is shared by the organization's writers too (a day, model and key
        # or source), so an import adds it at the end as well, in one statement (keys in
        # order); BreakerDay, per conversation, comes along with it.
        self.dimensions: dict[Organization, list[int]] = defaultdict(list)

    def add_dimensions(self, organization: Organization, conversation_ids: list[int]) -> None:
        if connection.vendor != "postgresql":  # one writer at a time: no order to keep
            records = _billing(organization).filter(conversation_id__in=conversation_ids)
            dimension_rollups.records_added(organization=organization, records=records)
            return
        self.dimensions[organization].extend(conversation_ids)

    def add(self, table: Table, rows: QuerySet[Any]) -> None:
        if connection.vendor != "postgresql":
            _insert(table, rows, add=True)
            return
        columns = ", ".join(quote(c) for c in _staged_columns(table))
        inner, params = rows.query.sql_with_params()
        select = f"SELECT {columns} FROM ({inner}) delta"
        stage = self.tables.get(table.name)
        if stage is None:
            stage = self.tables[table.name] = f"rollup_stage_{next(_STAGES)}_{table.name}"
            sql = f"CREATE TEMPORARY TABLE {quote(stage)} ON COMMIT DROP AS {select}"
        else:
            sql = f"INSERT INTO {quote(stage)} ({columns}) {select}"
        with connection.cursor() as cursor:
            cursor.execute(sql, params)

    def fold(self) -> None:
        """Add what was staged to the rollups, DimensionDay first, then the tables in
        ORG_DAY_TABLES order: the order a live call takes them in (turns_added); one upsert
        a table, keys in order. What chunks summed in SQL (a chunk chunk_sums could not
        sum) is read back and joins the Python sums first, so that even a mixed import
        takes each table's rows in one ordered pass. The organizations' rollup locks
        first, shared (see organization_lock)."""
        for organization_id in sorted(self.organizations):
            organization_lock(organization_id, shared=True)
        for organization, ids in self.dimensions.items():
            records = _billing(organization).filter(conversation_id__in=ids)
            dimension_rollups.breakers_added(organization=organization, records=records)
            width = len(chunk_sums.DIMENSION_DAY.keys)
            for row in dimension_rollups.dimension_sums(organization, records):
                self.sums.add(chunk_sums.DIMENSION_DAY, row[:width], row[width:])
        self.dimensions.clear()
        for table, shape in zip(ORG_DAY_TABLES, chunk_sums.ORG_DAY_SHAPES, strict=True):
            assert shape.table == table.name, "chunk_sums' tables in ORG_DAY_TABLES' order"
            stage = self.tables.pop(table.name, None)
            if stage is None:
                continue
            keys = ", ".join(quote(k) for k in table.keys)
            sums = ", ".join(f"SUM({quote(_alias(name))})" for name, _ in shape.figures)
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {keys}, {sums} FROM {quote(stage)} GROUP BY {keys}")
                for row in cursor.fetchall():
                    self.sums.add(shape, tuple(row[: len(table.keys)]), row[len(table.keys) :])
                cursor.execute(f"DROP TABLE {quote(stage)}")
        for shape in (chunk_sums.DIMENSION_DAY, *chunk_sums.ORG_DAY_SHAPES):
            chunk_sums.shared_upsert(shape, self.sums)


def _staged_columns(table: Table) -> list[str]:
    return [*table.keys, *map(_alias, table.sums)]


@contextmanager
def staged() -> Iterator[Staged]:
    """Stage an import's organization-day sums (see Staged); they go into the rollups when
    the block ends without an exception (with one, the transaction rolls them back). In a
    transaction of its own when the caller has none (demo data, tests): the staging tables
    last until commit, which in autocommit is the end of the statement that made them."""
    with transaction.atomic(savepoint=False):
        stage = Staged()
        yield stage
        stage.fold()


def turns_added(
    *, organization: Organization, turn_ids: list[int], conversation_ids: list[int] | None = None
) -> None:
    """Add the usage of turns just recorded in existing conversations (a live call).
    `conversation_ids`: the conversations of those turns' billing records, when the caller
    has just written them (a query saved per call)."""
    records = _billing(organization).filter(turn_id__in=turn_ids)
    if conversation_ids is None:
        conversation_ids = list(records.values_list("conversation_id", flat=True).distinct())
    if not conversation_ids:  # a request that got no reply is billed nowhere
        return
    organization_lock(organization.pk, shared=True)
    conversations = sorted(set(conversation_ids))
    # DimensionDay and BreakerDay first: an import adds them per chunk and its
    # organization-day sums only at its end: taking them in the same order means a live call
    # and an import never each hold what the other waits for.
    if len(turn_ids) > TEMPLATE_IDS or len(conversations) > TEMPLATE_IDS:
        dimension_rollups.records_added(organization=organization, records=records)
        for table in (*ORG_DAY_TABLES, CONVERSATION_DAY):
            _insert(table, table.rows(organization, records), add=True)
        _totals_refresh(organization, conversations)
        return
    # Their statement's shape follows the conversations' tag names: read first (a statement
    # built once too), they are part of its template's key.
    tags = _tag_names(organization, conversations)
    key = ("turns_added", connection.alias, organization.time_zone, tags)
    template = _template(
        key, partial(_turns_added_sql, tags=tags), organization.time_zone, turn_ids, conversations
    )
    statements = list(template.statements(organization.pk, turn_ids, conversations))
    if settings.COSTLAB_DB_PREPARE_ROLLUPS and connection.vendor == "postgresql":
        _run_prepared(statements)
        return
    with connection.cursor() as cursor:
        if _several_per_execute(cursor):  # one round trip instead of six
            joined = "; ".join(sql for sql, _ in statements)
            cursor.execute(joined, [value for _, params in statements for value in params])
            return
        for sql, params in statements:
            cursor.execute(sql, params)


@dataclass(frozen=True)
class TableSums:
    """Rows to add to one rollup table: each row its keys then its figures, combined with
    a stored row of the same keys by each figure's kind (upsert_sql)."""

    model: type[models.Model]
    keys: tuple[str, ...]
    conflict: tuple[str, ...]  # the columns of the table's unique constraint (of `keys`)
    figures: tuple[tuple[str, str], ...]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class TurnSums:
    """What one live turn adds to the rollups, summed in Python: the organization's rollup
    lock to take (shared) first, then the tables in the order every adder takes them."""

    lock: tuple[int, int]
    tables: list[TableSums]


# turns_added's order: the conversation's own rows, DimensionDay and BreakerDay, then the
# organization-day tables (ORG_DAY_TABLES' order). With each, its unique constraint's
# columns (conversations/models.py) where they are not all its keys.
_TURN_SHAPES: tuple[tuple[type[models.Model], chunk_sums.Shape, tuple[str, ...] | None], ...] = (
    (ConversationDay, chunk_sums.CONVERSATION_DAY, ("conversation_id", "day", "model")),
    (ConversationTotals, chunk_sums.CONVERSATION_TOTALS, ("conversation_id",)),
    (DimensionDay, chunk_sums.DIMENSION_DAY, None),
    (
        BreakerDay,
        chunk_sums.BREAKER_DAY,
        ("conversation_id", "day", "model", "message", "block"),
    ),
    (UsageDay, chunk_sums.USAGE_DAY, None),
    (CalibrationGap, chunk_sums.CALIBRATION_GAP, None),
    (CacheDay, chunk_sums.CACHE_DAY, None),
)


def _defaults(model: type[models.Model], row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` with every column it leaves out at its default, as the row is stored."""
    full = {f.attname: f.get_default() for f in model._meta.concrete_fields}
    full.update(row)
    return full


def turn_sums(
    *,
    organization: Organization,
    conversation: Conversation,
    turn: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    rates: chunk_sums.PriceRates,
) -> TurnSums | None:
    """The sums turns_added would add for one turn about to be written (`turn` and its
    usage `records` as their columns, by attribute name; `turn_id` may stand for the id it
    will get), computed from those rows in memory (chunk_sums, as an import's chunk), so
    that a writer can add them in the statement that writes the turn: no statement reading
    the new rows back, grouping them and joining their turn and conversation, eight times.
    None where turns_added must run instead: SQLite (chunk_sums is PostgreSQL's numeric),
    a turn chunk_sums does not sum exactly, or one with no billing record."""
    if connection.vendor != "postgresql" or not any(r["is_billing"] for r in records):
        return None
    chunk = chunk_sums.ChunkInput(
        conversations=[{"source": conversation.source, "tags": conversation.tags}],
        conversation_ids=[conversation.pk],
        turns=[_defaults(Turn, turn)],
        turn_conversation=[0],
        records=[_defaults(UsageRecord, record) for record in records],
        record_turn=[0] * len(records),
    )
    try:
        shared, own = chunk_sums.chunk_sums(chunk, time_zone=organization.time_zone, rates=rates)
    except chunk_sums.Unsupported:
        return None
    tables = []
    for model, shape, conflict in _TURN_SHAPES:
        sums = own if shape.table in own.tables else shared
        rows = sums.rows(shape)
        figures = shape.figures
        if shape is chunk_sums.CONVERSATION_TOTALS:  # and its flag, as own_write has it
            priced = shape.columns.index("priced_calls")
            rows = [(*row, row[priced] > 0) for row in rows]
            figures = (*figures, ("is_priced", EITHER))
        if rows:
            tables.append(TableSums(model, shape.keys, conflict or shape.keys, figures, rows))
    return TurnSums(organization_lock_keys(organization.pk), tables)


_PREPARE_WHEN_ASKED = 2**31 - 1


def _run_prepared(statements: list[tuple[str, list[Any]]]) -> None:
    """Run `statements` as statements prepared once per session, all sent in one round trip
    (psycopg's pipeline). PostgreSQL planned these upserts afresh every call: ~2 ms of its
    CPU per live call against ~1 ms to run them (EXPLAIN ANALYZE), most of it while the
    organization-day rows they had locked so far, which every call of the organization
    waits for, stayed locked. Logged as Django logs what it runs (tests read them)."""
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # psycopg prepares nothing, not even what is asked for, without a threshold (Django
        # leaves it unset). Django's cursors bind client-side and never prepare: only a
        # statement run with prepare=True is prepared.
        raw.prepare_threshold = _PREPARE_WHEN_ASKED
    with connection.wrap_database_errors, raw.pipeline(), psycopg.Cursor(raw) as cursor:
        for sql, params in statements:
            cursor.execute(sql, params, prepare=True)
    if connection.queries_logged:
        connection.queries_log.extend({"sql": sql, "time": "0.000"} for sql, _ in statements)


def _several_per_execute(cursor: Any) -> bool:
    """Whether one execute may carry several statements: PostgreSQL with psycopg's
    client-side binding (Django's default); not server-side binding, nor SQLite."""
    if connection.vendor != "postgresql":
        return False
    import psycopg

    return isinstance(cursor.cursor, psycopg.ClientCursor)


def _tag_names(organization: Organization, conversation_ids: list[int]) -> tuple[str, ...]:
    key = ("tag_names", connection.alias)
    template = _template(
        key, dimension_rollups.tag_names_sql, organization.time_zone, conversation_ids
    )
    ((sql, params),) = template.statements(organization.pk, conversation_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return tuple(dimension_rollups.tag_names_of(cursor.fetchall()))


def _turns_added_sql(
    organization: Organization,
    turn_ids: list[int],
    conversation_ids: list[int],
    *,
    tags: Sequence[str],
) -> list[tuple[str, Sequence[Any]]]:
    """The statements of turns_added, built by the ORM: the conversations' own rows first
    (ConversationDay's upsert, their totals afresh), then DimensionDay's and BreakerDay's
    upserts (for conversations tagged `tags`) and each organization-day table's. Every call
    of the organization waits for the organization-day rows' locks, held from their upsert
    to the commit: the conversations' rows, which only this conversation's calls write (one
    at a time) and an import never does (its conversations are new), are not written while
    holding them."""
    records = _billing(organization).filter(turn_id__in=turn_ids)
    marks = ", ".join(["%s"] * len(conversation_ids))
    statements: list[tuple[str, Sequence[Any]]] = [
        _insert_sql(CONVERSATION_DAY, CONVERSATION_DAY.rows(organization, records), add=True),
        (
            f"DELETE FROM {quote(ConversationTotals._meta.db_table)} "
            f"WHERE organization_id = %s AND conversation_id IN ({marks})",
            [organization.pk, *conversation_ids],
        ),
        _totals_insert_sql(organization, conversation_ids),
    ]
    statements += dimension_rollups.records_added_sql(organization, records, tags)
    statements += [
        _insert_sql(table, table.rows(organization, records), add=True) for table in ORG_DAY_TABLES
    ]
    return statements


# --- statements built once per process ------------------------------------------------------
# A live call adds one turn, and the statements that add it are the same every time but for
# the organization and the ids (and DimensionDay's shape, which follows the conversation's tag
# names: part of the key). Building them with the ORM cost more than running them
# (py-spy on a worker: about a third of its time per call went to compiling the upserts), so
# they are built once per process with stand-in values, which are then swapped for the real
# ones. The stand-ins are numbers no row can have; a statement that does not carry each one
# as a parameter (inlined in its text, or not at all) is refused, never half-substituted.
TEMPLATE_IDS = 8  # more ids than this: built afresh (an import's chunk, a rare batch)
_STAND_IN = -(2**62)  # organization; then + 1000 * (group) + position for the id lists


@dataclass(frozen=True)
class _Template:
    statements_sql: tuple[tuple[str, tuple[Any, ...]], ...]
    # Per statement, the parameters to swap: (position, group, index); group 0 is the
    # organization, 1 the first id list, 2 the second.
    slots: tuple[tuple[tuple[int, int, int], ...], ...]

    def statements(
        self, organization_id: int, *groups: Sequence[int]
    ) -> Iterator[tuple[str, list[Any]]]:
        values: tuple[Sequence[int], ...] = ((organization_id,), *groups)
        for (sql, params), slots in zip(self.statements_sql, self.slots, strict=True):
            bound = list(params)
            for position, group, index in slots:
                bound[position] = values[group][index]
            yield sql, bound


_templates: dict[tuple[Any, ...], _Template] = {}


def _stand_in(group: int, index: int) -> int:
    return _STAND_IN + 1000 * group + index


def _template(
    key: tuple[Any, ...],
    build: Callable[..., list[tuple[str, Sequence[Any]]]],
    time_zone: str,
    *groups: Sequence[int],
) -> _Template:
    """The statements `build(organization, *id_lists)` returns, built once for `key` and
    the lists' lengths (`key` holds whatever else shapes them: the database, the time zone)."""
    key = (*key, *(len(ids) for ids in groups))
    found = _templates.get(key)
    if found is not None:
        return found
    organization = Organization(pk=_stand_in(0, 0), time_zone=time_zone)
    stand_ins = [[_stand_in(g + 1, i) for i in range(len(ids))] for g, ids in enumerate(groups)]
    where = {_stand_in(0, 0): (0, 0)}
    for g, ids in enumerate(stand_ins):
        where.update({value: (g + 1, i) for i, value in enumerate(ids)})
    built: list[tuple[str, tuple[Any, ...]]] = []
    slots: list[tuple[tuple[int, int, int], ...]] = []
    seen: set[int] = set()
    for sql, params in build(organization, *stand_ins):
        if str(_STAND_IN)[1:8] in sql:
            raise RuntimeError(f"a stand-in was written into the statement's text: {sql}")
        mine = tuple(
            (position, *where[value])
            for position, value in enumerate(params)
            if type(value) is int and value in where
        )
        seen.update(_stand_in(g, i) for _, g, i in mine)
        built.append((sql, tuple(params)))
        slots.append(mine)
    if seen != set(where):
        raise RuntimeError("a stand-in is missing from the statements' parameters")
    found = _templates[key] = _Template(tuple(built), tuple(slots))
    return found


# --- changed or removed rows: recompute what they touch -----------------------------------


@dataclass
class Touched:
    """The UsageDay keys some conversations reach: per organization, a day span and models.
    Recomputing the span x models is a superset of the exact keys, and as correct."""

    first: date | None = None
    last: date | None = None
    models: set[str] = field(default_factory=set)

    def add(self, first: date, last: date, model: str) -> None:
        self.first = first if self.first is None else min(self.first, first)
        self.last = last if self.last is None else max(self.last, last)
        self.models.add(model)


def _touched(organization: Organization, ids: list[int]) -> Touched:
    """What the raw rows of these conversations reach, and what the rollups hold for them
    (a drifted rollup row is mended too)."""
    zone = ZoneInfo(organization.time_zone)
    touched = Touched()
    for batch in _batches(ids):
        spans = (
            _billing(organization)
            .filter(conversation_id__in=batch)
            .values("model")
            .annotate(first=Min("occurred_at"), last=Max("occurred_at"))
            .order_by()
        )
        for row in spans:
            first, last = row["first"].astimezone(zone), row["last"].astimezone(zone)
            touched.add(first.date(), last.date(), row["model"])
        held = (
            ConversationDay.objects.filter(organization=organization, conversation_id__in=batch)
            .values("model")
            .annotate(first=Min("day"), last=Max("day"))
            .order_by()
        )
        for row in held:
            touched.add(row["first"], row["last"], row["model"])
    return touched


def _day_start(organization: Organization, day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZoneInfo(organization.time_zone))


def _recompute(organization: Organization, ids: list[int], touched: Touched) -> None:
    for batch in _batches(ids):
        ConversationDay.objects.filter(
            organization=organization, conversation_id__in=batch
        ).delete()
        records = _billing(organization).filter(conversation_id__in=batch)
        _insert(CONVERSATION_DAY, CONVERSATION_DAY.rows(organization, records), add=False)
    _totals_refresh(organization, ids)
    if touched.first is None or touched.last is None:
        return
    records = _billing(organization).filter(
        occurred_at__gte=_day_start(organization, touched.first),
        occurred_at__lt=_day_start(organization, touched.last + timedelta(days=1)),
        model__in=touched.models,
    )
    for table in ORG_DAY_TABLES:
        table.model.objects.filter(  # type: ignore[attr-defined]
            organization=organization,
            day__gte=touched.first,
            day__lte=touched.last,
            model__in=touched.models,
        ).delete()
        _insert(table, table.rows(organization, records), add=False)
    dimension_rollups.span_recompute(
        organization=organization, first=touched.first, last=touched.last, models=touched.models
    )


def conversations_recompute(*, conversation_ids: Iterable[int]) -> None:
    """Recompute every rollup row these conversations reach from the raw rows: after their
    usage changed in place (re-pricing). Same transaction as the change."""
    for organization, ids in sorted(_by_organization(conversation_ids).items(), key=_org_pk):
        organization_lock(organization.pk, shared=False)
        _recompute(organization, ids, _touched(organization, ids))


def _org_pk(item: tuple[Organization, list[int]]) -> int:
    return int(item[0].pk)


@contextmanager
def conversations_removed(*, conversation_ids: list[int]) -> Iterator[None]:
    """Around deleting conversations' rows: notes what they reach before, recomputes it
    from the rows that remain after."""
    plan = [
        (organization, ids, _touched(organization, ids))
        for organization, ids in _by_organization(conversation_ids).items()
    ]
    yield
    # After the delete: it has locked the rows it removed (a live call into one of those
    # conversations waits for it before it asks for this lock, never while holding it).
    for organization, ids, touched in sorted(plan, key=lambda p: int(p[0].pk)):
        organization_lock(organization.pk, shared=False)
        _recompute(organization, ids, touched)


def organization_forget(*, organization: Organization) -> None:
    """Every rollup row of an organization about to be deleted (one DELETE each). The
    caller owns the transaction, and has locked the organization's row if it deletes it
    (deletion.organization_delete)."""
    organization_lock(organization.pk, shared=False)
    for model in (ConversationTotals, ConversationDay, UsageDay, CalibrationGap, CacheDay):
        model.objects.filter(organization=organization).delete()
    dimension_rollups.organization_forget(organization=organization)


def organization_rebuild(*, organization: Organization) -> None:
    """All of an organization's rollups again from its raw rows. The caller owns the
    transaction."""
    organization_forget(organization=organization)
    records = _billing(organization)
    for table in (*ORG_DAY_TABLES, CONVERSATION_DAY):
        _insert(table, table.rows(organization, records), add=False)
    _totals_insert(organization, None)
    dimension_rollups.organization_rebuild(organization=organization)


# --- verification -------------------------------------------------------------------------


def _rows(
    queryset: Iterable[dict[str, Any]], keys: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = {}
    for row in queryset:
        key = tuple(row[k] for k in keys)
        rows[key] = {c.removeprefix("sum_"): normal(v) for c, v in row.items() if c not in keys}
    return rows


def organization_drift(*, organization: Organization) -> list[str]:
    """Every rollup row of the organization that differs from its raw rows, one line each;
    empty when the rollups are exact."""
    records = _billing(organization)
    drift = []
    for table in (*ORG_DAY_TABLES, CONVERSATION_DAY):
        keys = tuple(k for k in table.keys if k != "organization_id")
        stored = table.model.objects.filter(organization=organization)  # type: ignore[attr-defined]
        drift += compare(
            table.model._meta.model_name or table.name,
            _rows(stored.values(*keys, *table.sums), keys),
            _rows(table.rows(organization, records).values(*keys, *map(_alias, table.sums)), keys),
        )
    raw_totals = (
        records.values("conversation_id")
        .annotate(**_aliased(_conversation_day_sums()))
        .annotate(
            sum_is_priced=Case(When(sum_priced_calls__gt=0, then=Value(True)), default=Value(False))
        )
        .order_by()
        .values("conversation_id", *map(_alias, (*TOTALS_COLUMNS, "is_priced")))
    )
    drift += compare(
        "conversationtotals",
        _rows(
            ConversationTotals.objects.filter(organization=organization).values(
                "conversation_id", *TOTALS_COLUMNS, "is_priced"
            ),
            ("conversation_id",),
        ),
        _rows(raw_totals, ("conversation_id",)),
    )
    return drift + dimension_rollups.organization_drift(organization=organization)
