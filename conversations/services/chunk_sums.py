"""An import chunk's rollup sums, computed in Python from the rows it has just written.

The chunk's rows are in memory when their COPY ends (services/transcripts.py). Summing them
here instead of aggregating the just-copied rows in SQL (rollups.conversations_added, still
the path on SQLite and with the ORM) saves a statement per table and chunk, and takes the
planner out of the import: it has no statistics for the import's uncommitted rows, and in
one database state chose a nested loop that rescanned the turn index per usage record
(17-28 s a chunk, issue 13).

The sums are the same SQL's: every figure follows services/rollups.py and
services/dimension_rollups.py (counts, SUM's NULL until a non-NULL value, COALESCE'd token
sums), and the two per-record figures with numeric division, breakdowns.LOST and rollups'
estimate gap, round as PostgreSQL's numeric does (`pg_div`, `round_places`), so that the
rollups stay exact: rollups_verify compares them with the SQL over the raw rows, and the
tests do after every import.

PostgreSQL only: SQLite divides and rounds its own way, and there the SQL path runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection
from psycopg import sql

from pricing.models import ModelPrice

from ..breakdowns import DEFAULT_STEP, OTHER_KEY
from ..cache_report import BLOCK, TOOLS_MESSAGE
from ..models import MissReason, UsageSource
from .upsert_sql import ADD, GREATEST, LEAST, MONEY, on_conflict_combine, quote

# --- PostgreSQL's numeric arithmetic, where a figure divides -------------------------------

NBASE_DIGITS = 4  # numeric stores base-10000 digits
MIN_SIG_DIGITS = 16  # NUMERIC_MIN_SIG_DIGITS
MAX_DISPLAY_SCALE = 1000
MONEY_PLACES = 12  # the cost columns' and rollups' scale
# Sums of up to 30 digits (the rollups' columns) must add without rounding.
PRECISION = 80


def _weight_first(value: Decimal) -> tuple[int, int]:
    """Weight and first digit of a non-zero value in base 10000, as numeric holds it."""
    weight = value.adjusted() // NBASE_DIGITS
    return weight, int(abs(value).scaleb(-NBASE_DIGITS * weight))


def _div_scale(a: Decimal, a_scale: int, b: Decimal, b_scale: int) -> int:
    """The scale PostgreSQL gives a numeric quotient (select_div_scale in numeric.c)."""
    weight1, first1 = (0, 0) if a == 0 else _weight_first(a)
    weight2, first2 = _weight_first(b)
    qweight = weight1 - weight2
    if first1 <= first2:
        qweight -= 1
    scale = max(MIN_SIG_DIGITS - qweight * NBASE_DIGITS, a_scale, b_scale, 0)
    return min(scale, MAX_DISPLAY_SCALE)


def _rounded_quotient(numerator: int, denominator: int) -> int:
    """numerator / denominator, rounded half away from zero (numeric's rounding)."""
    quotient, remainder = divmod(abs(numerator), abs(denominator))
    if 2 * remainder >= abs(denominator):
        quotient += 1
    return -quotient if (numerator < 0) != (denominator < 0) else quotient


def pg_div(a: Decimal, a_scale: int, b: Decimal, b_scale: int) -> Decimal:
    """a / b as PostgreSQL's numeric division gives it: exact, rounded half away from zero
    to the scale select_div_scale picks from the operands (`*_scale`: their display scale,
    the column's for a stored value). `b` is not zero (the SQL has NULLIF)."""
    scale = _div_scale(a, a_scale, b, b_scale)
    # a / b * 10^scale, each operand as its exact integer ratio (a finite Decimal is one)
    a_num, a_den = a.as_integer_ratio()
    b_num, b_den = b.as_integer_ratio()
    quotient = _rounded_quotient(a_num * b_den * 10**scale, a_den * b_num)
    return Decimal(quotient).scaleb(-scale)


EXACT = Context(prec=PRECISION, rounding=ROUND_HALF_UP)
_PLACES = {places: Decimal(1).scaleb(-places) for places in (0, 12)}
_MONEY_STEP = _PLACES[MONEY_PLACES]
_quantize = EXACT.quantize


def round_places(value: Decimal, places: int) -> Decimal:
    """numeric's ROUND(value, places): half away from zero."""
    step = _PLACES.get(places)
    return EXACT.quantize(value, Decimal(1).scaleb(-places) if step is None else step)


def _money(value: Decimal | None) -> Decimal | None:
    """A cost as its numeric(24, 12) column stores it."""
    return None if value is None else round_places(value, MONEY_PLACES)


def _gap(estimated: int, reported: int, *, signed: bool) -> Decimal:
    """rollups._gap: ROUND(CAST(estimated - reported AS numeric(30, 12)) / reported, 12)."""
    difference = estimated - reported if signed else abs(estimated - reported)
    return round_places(pg_div(Decimal(difference), 12, Decimal(reported), 0), 12)


@dataclass(frozen=True)
class _Rates:
    """A price row's figures that breakdowns.LOST reads: its cache step, its input rate per
    token (where a record's own uncached input gives none) and the share of it a cached
    token saves (None: no cached rate, nothing lost)."""

    step: int
    base_rate: Decimal
    saved: Decimal | None

    @classmethod
    def of(cls, input_per_1m: Decimal, cached_input_per_1m: Decimal | None, step: int) -> _Rates:
        scale = _INPUT_SCALE  # a stored value's display scale is its column's
        saved = None
        if cached_input_per_1m is not None and input_per_1m != 0:
            cached = round_places(cached_input_per_1m, MONEY_PLACES)  # ::numeric(24, 12)
            share = pg_div(cached, MONEY_PLACES, input_per_1m, scale)
            saved = EXACT.subtract(Decimal(1), share)
        return cls(step, pg_div(input_per_1m, scale, Decimal(1_000_000), 0), saved)


_INPUT_SCALE: int = ModelPrice._meta.get_field("input_per_1m").decimal_places


def _lost(
    rates: _Rates | None,
    *,
    eligible: bool,
    prompt: int,
    cached: int,
    cost_total: Decimal | None,
    uncached_cost: Decimal | None,
    uncached: int,
    ceiling: int | None,
) -> tuple[Decimal | None, int]:
    """breakdowns.LOST and MISSED_TOKENS of one record (`cost_total` and `uncached_cost`
    as their numeric(24, 12) columns store them; `ceiling` its cache_ceiling)."""
    step = rates.step if rates is not None else DEFAULT_STEP
    if not eligible:
        cacheable = 0
    elif ceiling is None:
        cacheable = int(prompt / step) * step
    else:
        cacheable = ceiling
    missed = max(cacheable - cached, 0)
    if cost_total is None:
        return None, missed
    if not eligible:
        return Decimal(0), missed
    if rates is None or rates.saved is None:  # no price row, or no cached rate: NULL
        return None, missed
    if uncached_cost is not None and uncached != 0:
        rate = pg_div(uncached_cost, MONEY_PLACES, Decimal(uncached), 0)
    else:
        rate = rates.base_rate
    product = EXACT.multiply(EXACT.multiply(Decimal(missed), rate), rates.saved)
    return _quantize(product, _MONEY_STEP), missed


# --- the tables' figures ------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A rollup table as summed here: its key columns, and each figure's combination."""

    table: str
    keys: tuple[str, ...]
    figures: tuple[tuple[str, str], ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.keys, *(name for name, _ in self.figures))


def _reduce(kind: str, column: Sequence[Any]) -> Any:
    """One figure over several rows, as SQL's aggregate: NULLs skipped, NULL if all are."""
    values = [value for value in column if value is not None]
    if not values:
        return None
    if kind == LEAST:
        return min(values)
    if kind == GREATEST:
        return max(values)
    return sum(values)  # money: in `reduced`'s exact context, never rounded


class Sums:
    """Per table, key -> the figures of each row under it (a list in the shape's order);
    summed once, when read (`reduced`): appending is all the per-record work."""

    def __init__(self) -> None:
        self.tables: dict[str, defaultdict[tuple[Any, ...], list[Sequence[Any]]]] = {}

    def table(self, shape: Shape) -> defaultdict[tuple[Any, ...], list[Sequence[Any]]]:
        """The table's rows by key, to append a row's figures to: `table[key].append(row)`."""
        rows = self.tables.get(shape.table)
        if rows is None:
            rows = self.tables[shape.table] = defaultdict(list)
        return rows

    def add(self, shape: Shape, key: tuple[Any, ...], values: Sequence[Any]) -> None:
        self.table(shape)[key].append(values)

    def reduced(self, shape: Shape) -> dict[tuple[Any, ...], list[Any]]:
        kinds = [kind for _, kind in shape.figures]
        result = {}
        with localcontext(EXACT):
            for key, rows in self.tables.get(shape.table, {}).items():
                if len(rows) == 1:
                    result[key] = list(rows[0])
                else:
                    columns = zip(*rows, strict=True)
                    result[key] = [_reduce(k, c) for k, c in zip(kinds, columns, strict=True)]
        return result

    def merge(self, shape: Shape, other: Sums) -> None:
        for key, values in other.reduced(shape).items():
            self.add(shape, key, values)

    def rows(self, shape: Shape) -> list[tuple[Any, ...]]:
        """The table's rows, keys in order (every writer takes them in that order)."""
        rows = self.reduced(shape)
        return [(*key, *rows[key]) for key in sorted(rows, key=_sort_key)]


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    # A NULL key part (none in these tables) would not compare; str keys compare by code
    # point here and by collation in PostgreSQL: the order only has to be the same for
    # every writer of this code, and the SQL upsert sorts again.
    return tuple((part is None, part) for part in key)


def _figures(*names: str, kind: str = ADD) -> tuple[tuple[str, str], ...]:
    return tuple((name, kind) for name in names)


USAGE_DAY = Shape(
    "conversations_usageday",
    ("organization_id", "day", "model"),
    (
        *_figures(
            "calls", "priced_calls", "prompt_tokens", "completion_tokens", "total_tokens",
            "input_uncached", "input_cached", "input_cache_write", "output",
        ),
        *_figures(
            "cost_total", "cost_input_uncached", "cost_input_cached", "cost_input_cache_write",
            "cost_output", "cost_uncached", kind=MONEY,
        ),
        *_figures(
            "eligible_calls", "hit_calls", "latency_hit_ms", "latency_hit_calls",
            "latency_miss_ms", "latency_miss_calls", "reported_calls", "estimate_exact_calls",
        ),
        ("estimate_gap_sum", MONEY),
        *_figures(
            "estimate_gap_calls", "cached_exact_calls", "hit_agreement_calls",
            "simulated_cached", "reported_cached",
        ),
    ),
)  # fmt: skip
CALIBRATION_GAP = Shape(
    "conversations_calibrationgap",
    ("organization_id", "day", "model", "gap_permille"),
    _figures("calls"),
)
CACHE_DAY = Shape(
    "conversations_cacheday",
    ("organization_id", "day", "model", "miss_reason"),
    (
        *_figures(
            "calls", "priced_calls", "eligible_calls", "hit_calls", "prompt_tokens",
            "input_cached", "completion_tokens",
        ),
        *_figures("cost_total", "cost_uncached", "lost", kind=MONEY),
        *_figures("missed_tokens", "missed_calls"),
        ("missed_lost", MONEY),
        ("other_key_calls", ADD),
        ("other_key_lost", MONEY),
        ("no_key_calls", ADD),
        ("no_key_lost", MONEY),
        *_figures("latency_hit_ms", "latency_hit_calls", "latency_miss_ms", "latency_miss_calls"),
    ),
)  # fmt: skip
CONVERSATION_DAY = Shape(
    "conversations_conversationday",
    ("organization_id", "conversation_id", "day", "model"),
    (
        *_figures("calls", "priced_calls"),
        ("cost_total", MONEY),
        *_figures("total_tokens", "prompt_tokens", "input_cached"),
        ("cost_uncached", MONEY),
        *_figures("completion_tokens", "eligible_calls", "hit_calls"),
        ("lost", MONEY),
    ),
)
# The conversation's ConversationDay rows summed: the same columns (rollups.TOTALS_COLUMNS),
# since the whole-period breakdown by conversation reads its figures from here.
CONVERSATION_TOTALS = Shape(
    "conversations_conversationtotals",
    ("conversation_id", "organization_id"),
    CONVERSATION_DAY.figures,
)
DIMENSION_DAY = Shape(
    "conversations_dimensionday",
    ("organization_id", "kind", "day", "model", "value"),
    (
        *_figures(
            "calls", "priced_calls", "eligible_calls", "hit_calls", "prompt_tokens",
            "input_cached", "completion_tokens",
        ),
        *_figures("cost_total", "cost_uncached", "lost", kind=MONEY),
    ),
)  # fmt: skip
BREAKER_DAY = Shape(
    "conversations_breakerday",
    ("organization_id", "conversation_id", "day", "model", "message", "block"),
    (
        ("calls", ADD),
        ("lost", MONEY),
        ("first_token", LEAST),
        ("last_token", GREATEST),
        ("first_turn", LEAST),
        ("last_turn", GREATEST),
    ),
)
# Not a table: DimensionDay's figures per day, model and combination of every kind's value
# (and the conversation's tags), in a chunk.
DIMENSION_COMBINATION = Shape(
    "dimension combinations",
    ("organization_id", "day", "model", "values", "tags"),
    DIMENSION_DAY.figures,
)
ORG_DAY_SHAPES = (USAGE_DAY, CALIBRATION_GAP, CACHE_DAY)  # rollups.ORG_DAY_TABLES' order
# DimensionDay's kinds (dimension_rollups.KINDS), in the order `_record_add` reads their
# values: the conversation's source, then the turn's columns.
KINDS = ("source", "key", "end_user", "api_key", "project")
TURN_KIND_COLUMNS = ("prompt_cache_key", "end_user", "api_key", "project")
_TURN_KIND_VALUES = itemgetter(*TURN_KIND_COLUMNS)
TAG_PREFIX = "tag:"


class Unsupported(Exception):
    """A chunk whose sums this module does not reproduce exactly: the SQL path takes it."""


def _tag_text(value: Any) -> str | None:
    """A tag's value as `tags ->> name` gives it; only strings and JSON null are taken."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    raise Unsupported(f"tag value of type {type(value).__name__}")


@dataclass
class ChunkInput:
    """What the sums read: the chunk's rows with their ids (services/transcripts.ChunkRows
    once written), and where each row's parent is."""

    conversations: Sequence[Mapping[str, Any]]
    conversation_ids: Sequence[int]
    turns: Sequence[Mapping[str, Any]]
    turn_conversation: Sequence[int]
    records: Sequence[Mapping[str, Any]]
    record_turn: Sequence[int]


class PriceRates:
    """Price rows' LOST figures, read once per import."""

    def __init__(self) -> None:
        self.known: dict[int, _Rates] = {}

    def load(self, ids: Iterable[int]) -> None:
        missing = {pk for pk in ids if pk is not None and pk not in self.known}
        if not missing:
            return
        rows = ModelPrice.objects.filter(pk__in=missing).values_list(
            "pk", "input_per_1m", "cached_input_per_1m", "cache_policy__step_tokens"
        )
        for pk, input_rate, cached_rate, step in rows:
            self.known[pk] = _Rates.of(
                input_rate, cached_rate, DEFAULT_STEP if step is None else step
            )

    def remember(self, rows: Iterable[ModelPrice]) -> None:
        """Rows already in memory (a price book's, its cache policies read with them), so
        that `load` reads none of them again."""
        for row in rows:
            policy = row.cache_policy if row.cache_policy_id is not None else None
            step = None if policy is None else policy.step_tokens
            self.known[row.pk] = _Rates.of(
                row.input_per_1m, row.cached_input_per_1m, DEFAULT_STEP if step is None else step
            )

    def get(self, pk: int | None) -> _Rates | None:
        return None if pk is None else self.known[pk]


def _is(value: Any, other: Any) -> bool:
    """SQL's `=` in a filter: NULL never matches."""
    return value is not None and other is not None and value == other


def chunk_sums(chunk: ChunkInput, *, time_zone: str, rates: PriceRates) -> tuple[Sums, Sums]:
    """The chunk's sums: (organization-day tables and DimensionDay, which an import adds at
    its end; per-conversation tables, which it writes with the chunk). Raises Unsupported
    for a chunk it cannot sum exactly."""
    zone = ZoneInfo(time_zone)
    shared, own = Sums(), Sums()
    rates.load(record["price_id"] for record in chunk.records if record["is_billing"])
    tag_names: dict[int, tuple[tuple[str, str | None], ...]] = {}
    for position, conversation in enumerate(chunk.conversations):
        tags = conversation.get("tags") or {}
        if not isinstance(tags, dict):
            raise Unsupported("tags that are not an object")
        tag_names[position] = tuple((f"{TAG_PREFIX}{k}", _tag_text(v)) for k, v in tags.items())
    # A conversation's id, source and tags, by its position in the chunk.
    conversations = [
        (conversation_id, conversation["source"], tag_names[position])
        for position, (conversation, conversation_id) in enumerate(
            zip(chunk.conversations, chunk.conversation_ids, strict=True)
        )
    ]
    tables = _Tables.of(shared, own, zone)
    turns, turn_conversation = chunk.turns, chunk.turn_conversation
    with localcontext(prec=PRECISION):
        for record, turn_position in zip(chunk.records, chunk.record_turn, strict=True):
            if not record["is_billing"]:
                continue
            _record_add(
                tables,
                record,
                turns[turn_position],
                conversations[turn_conversation[turn_position]],
                rates.get(record["price_id"]),
            )
        _dimensions_fan_out(own, shared)
        for key, values in own.reduced(CONVERSATION_DAY).items():
            organization_id, conversation_id = key[0], key[1]
            figures = dict(zip((n for n, _ in CONVERSATION_DAY.figures), values, strict=True))
            own.add(
                CONVERSATION_TOTALS,
                (conversation_id, organization_id),
                [figures[name] for name, _ in CONVERSATION_TOTALS.figures],
            )
    return shared, own


def _dimensions_fan_out(own: Sums, shared: Sums) -> None:
    """DimensionDay's rows from the chunk's combinations: each combination's sums under
    each kind's value (a NULL value counts under none, as `WHERE value IS NOT NULL`)."""
    kinds = KINDS
    combinations = own.reduced(DIMENSION_COMBINATION)
    own.tables.pop(DIMENSION_COMBINATION.table, None)
    for (organization_id, day, model, values, tags), figures in combinations.items():
        for kind, value in (*zip(kinds, values, strict=True), *tags):
            if value is not None:
                shared.add(DIMENSION_DAY, (organization_id, kind, day, model, value), figures)


def _day(at: datetime, zone: ZoneInfo) -> date:
    if at.tzinfo is None:  # written as UTC (Django's connection time zone)
        at = at.replace(tzinfo=UTC)
    return at.astimezone(zone).date()


Rows = defaultdict[tuple[Any, ...], list[Sequence[Any]]]


@dataclass
class _Tables:
    """A chunk's tables as `_record_add` appends to them, and its records' days by time
    (records of a turn, and turns of a file without timestamps, share one)."""

    usage: Rows
    gaps: Rows
    cache: Rows
    combinations: Rows
    conversation_days: Rows
    breakers: Rows
    zone: ZoneInfo
    days: dict[datetime, date]

    @classmethod
    def of(cls, shared: Sums, own: Sums, zone: ZoneInfo) -> _Tables:
        return cls(
            shared.table(USAGE_DAY),
            shared.table(CALIBRATION_GAP),
            shared.table(CACHE_DAY),
            own.table(DIMENSION_COMBINATION),
            own.table(CONVERSATION_DAY),
            own.table(BREAKER_DAY),
            zone,
            {},
        )


# A record that is not the API's report: its UsageDay figures from reported_calls on.
_NOT_REPORTED = (0, 0, None, 0, 0, 0, 0, 0)


def _record_add(
    tables: _Tables,
    record: Mapping[str, Any],
    turn: Mapping[str, Any],
    conversation: tuple[int, str, tuple[tuple[str, str | None], ...]],
    rates: _Rates | None,
) -> None:
    """One billing record's figures, appended under its key in each table. The figures
    are the SQL's for one row (rollups.py, dimension_rollups.py): a count is 1 or 0 (never
    a bool), a cost is its column's value (rounded to 12 places), a NULL stays None."""
    conversation_id, source, tags = conversation
    organization_id = record["organization_id"]
    at = record["occurred_at"]
    day = tables.days.get(at)
    if day is None:
        day = tables.days[at] = _day(at, tables.zone)
    model = record["model"]
    prompt, cached = record["prompt_tokens"], record["input_cached"]
    completion = record["completion_tokens"]
    cost_total = record["cost_total"]
    if cost_total is None:
        priced, cost_uncached = 0, None
    else:
        priced, cost_total = 1, _quantize(cost_total, _MONEY_STEP)
        cost_uncached = record["cost_uncached"]
        if cost_uncached is not None:
            cost_uncached = _quantize(cost_uncached, _MONEY_STEP)
    cost_input_uncached = _money(record["cost_input_uncached"])
    eligible = bool(record["cache_eligible"])
    hit = cached > 0
    eligible_hit = 1 if eligible and hit else 0
    latency = turn["latency_ms"]
    hit_ms = hit_calls = miss_ms = miss_calls = 0
    if latency is not None:
        if hit:
            hit_ms, hit_calls = latency, 1
        elif cached == 0 and eligible:
            miss_ms, miss_calls = latency, 1
    miss_reason = turn["miss_reason"]
    other_key_cold = miss_reason == "cold" and str(turn["miss_detail"]).startswith(OTHER_KEY)
    lost, missed_tokens = _lost(
        rates,
        eligible=eligible,
        prompt=prompt,
        cached=cached,
        cost_total=cost_total,
        uncached_cost=cost_input_uncached,
        uncached=record["input_uncached"],
        ceiling=record["cache_ceiling"],
    )
    breakdown = [
        1, priced, 1 if eligible else 0, eligible_hit, prompt, cached, completion,
        cost_total, cost_uncached, lost,
    ]  # fmt: skip
    key = (organization_id, day, model)
    tables.usage[key].append(
        [
            1, priced, prompt, completion, record["total_tokens"],
            record["input_uncached"], cached, record["input_cache_write"], record["output"],
            cost_total, cost_input_uncached,
            _money(record["cost_input_cached"]), _money(record["cost_input_cache_write"]),
            _money(record["cost_output"]), cost_uncached,
            breakdown[2], eligible_hit, hit_ms, hit_calls, miss_ms, miss_calls,
            *(
                _NOT_REPORTED
                if record["source"] != UsageSource.REPORTED
                else _reported(tables, key, turn, prompt, cached)
            ),
        ]
    )  # fmt: skip
    missed = eligible and missed_tokens > 0
    other_key = missed and other_key_cold
    no_key = missed and turn["prompt_cache_key"] == ""
    tables.cache[(organization_id, day, model, miss_reason)].append(
        [
            *breakdown,
            missed_tokens, 1 if missed else 0, lost if missed else None,
            1 if other_key else 0, lost if other_key else None,
            1 if no_key else 0, lost if no_key else None,
            hit_ms, hit_calls, miss_ms, miss_calls,
        ]
    )  # fmt: skip
    # Every kind's value at once (KINDS' order): the chunk's records share a few
    # combinations, which `_dimensions_fan_out` sums once and then counts under each kind.
    values = (source, *_TURN_KIND_VALUES(turn))
    tables.combinations[(organization_id, day, model, values, tags)].append(breakdown)
    tables.conversation_days[(organization_id, conversation_id, day, model)].append(
        [
            1, priced, cost_total, record["total_tokens"], prompt, cached, cost_uncached,
            completion, breakdown[2], eligible_hit, lost,
        ]
    )  # fmt: skip
    token = turn["miss_token"]
    if miss_reason == MissReason.PREFIX_CHANGED and token is not None:
        message = turn["miss_message"]
        turn_id = record["turn_id"]
        block = int(token / BLOCK)
        tables.breakers[
            (
                organization_id,
                conversation_id,
                day,
                model,
                TOOLS_MESSAGE if message is None else message,
                block,
            )
        ].append([1, lost, token, token, turn_id, turn_id])


def _reported(
    tables: _Tables,
    key: tuple[Any, ...],
    turn: Mapping[str, Any],
    prompt: int,
    cached: int,
) -> tuple[Any, ...]:
    """A reported record's UsageDay figures from reported_calls on, and its CalibrationGap
    row."""
    estimated = turn["estimated_prompt_tokens"]
    simulated = turn["simulated_cached_tokens"]
    hit = cached > 0
    if prompt > 0:
        if estimated is None:  # NULL gap: SQL groups it under NULL, not reproduced here
            raise Unsupported("a reported record whose turn has no estimate")
        permille = round_places(_gap(estimated, prompt, signed=False) * 1000, 0)
        tables.gaps[(*key, int(permille))].append([1])
    agrees = simulated is not None and ((hit and simulated > 0) or (cached == 0 and simulated == 0))
    return (
        1,
        1 if _is(prompt, estimated) else 0,
        _gap(estimated, prompt, signed=True) if prompt > 0 and estimated is not None else None,
        1 if prompt > 0 else 0,
        1 if _is(cached, simulated) else 0,
        1 if agrees else 0,
        simulated or 0,
        cached,
    )


# --- writing them -------------------------------------------------------------------------


def _copy(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    statement = sql.SQL("COPY {table} ({columns}) FROM STDIN").format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
    )
    connection.ensure_connection()
    with (
        connection.wrap_database_errors,
        connection.connection.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def own_write(own: Sums) -> None:
    """The per-conversation rollups of a chunk's new conversations: plain COPY (no other
    writer has rows of conversations this transaction has just created)."""
    for shape in (CONVERSATION_DAY, BREAKER_DAY):
        _copy(shape.table, shape.columns, own.rows(shape))
    totals = own.rows(CONVERSATION_TOTALS)
    priced = CONVERSATION_TOTALS.columns.index("priced_calls")
    _copy(
        CONVERSATION_TOTALS.table,
        (*CONVERSATION_TOTALS.columns, "is_priced"),
        ((*row, row[priced] > 0) for row in totals),
    )


_STAGE_NAMES = iter(range(1 << 62))


def shared_upsert(shape: Shape, sums: Sums) -> None:
    """Add an import's sums of a shared table to it: COPY into a temporary table of the
    transaction, then one INSERT ... ON CONFLICT DO UPDATE, keys in order."""
    rows = sums.rows(shape)
    if not rows:
        return
    stage = f"chunk_sums_{next(_STAGE_NAMES)}_{shape.table}"
    columns = ", ".join(quote(c) for c in shape.columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE {quote(stage)} ON COMMIT DROP AS "
            f"SELECT {columns} FROM {quote(shape.table)} WITH NO DATA"
        )
    _copy(stage, shape.columns, rows)
    keys = ", ".join(quote(k) for k in shape.keys)
    names = ", ".join(quote(name) for name, _ in shape.figures)
    # Each table's unique constraint is its keys (conversations/models.py).
    combine = on_conflict_combine(shape.table, shape.keys, shape.figures)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(shape.table)} ({keys}, {names}) "
            f"SELECT {keys}, {names} FROM {quote(stage)} ORDER BY {keys}{combine}"
        )
        cursor.execute(f"DROP TABLE {quote(stage)}")
