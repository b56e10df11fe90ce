"""Rows updated by their primary key, or inserted, with statements built once per process.

A chat call updates its ApiCall and CallAttempt rows three times (the claim, the answer, the
answered attempt). Through the ORM each of those built its query and compiled it afresh
(~0.2-0.4 ms of a worker's CPU each, more than PostgreSQL took to run it); here the text is
built once per model, columns and condition, and each value is prepared by its field as the
ORM's update prepares it (`get_db_prep_save`; None as SQL NULL, as the ORM writes it).

Its turn (and a replayed one) inserts three kinds of rows (the reply's Message, the Turn, its
UsageRecords): the ORM built a model instance, an insert query and its compiled text for each
(~0.5 ms of the worker's CPU for the three); `rows_insert` writes every column as the ORM's insert does
(a field not given takes its default) with a statement built once per model and row count.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, connections, models, transaction
from django.db.models.fields import AutoFieldMixin

from conversations.services.upsert_sql import on_conflict_combine

_statements: dict[tuple[Any, ...], str] = {}
_MISSING = object()
_M = TypeVar("_M", bound=models.Model)


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field), f"{model.__name__}.{name} is not a column"
    return field


def row_update(
    *,
    model: type[models.Model],
    pk: int,
    values: Mapping[str, Any],
    increment: Sequence[str] = (),
    status_in: Sequence[str] = (),
) -> int:
    """UPDATE the row `pk` of `model`: `values` by field name (a foreign key by its field's
    name, given the id), each `increment` field plus one, and only while its `status` is one
    of `status_in` when given. How many rows it changed (0 or 1)."""
    fields = [_field(model, name) for name in values]
    nulls = tuple(value is None for value in values.values())
    key = (connection.alias, model, tuple(values), nulls, tuple(increment), len(status_in))
    sql = _statements.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        sets = [
            f"{quote(field.column)} = {'NULL' if null else '%s'}"
            for field, null in zip(fields, nulls, strict=True)
        ]
        for name in increment:
            column = quote(_field(model, name).column)
            sets.append(f"{column} = {column} + 1")
        pk_field = model._meta.pk
        assert pk_field is not None
        where = f"{quote(pk_field.column)} = %s"
        if status_in:
            marks = ", ".join(["%s"] * len(status_in))
            where += f" AND {quote(_field(model, 'status').column)} IN ({marks})"
        table = quote(model._meta.db_table)
        sql = _statements[key] = f"UPDATE {table} SET {', '.join(sets)} WHERE {where}"
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values.values(), strict=True)
        if value is not None
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, pk, *status_in])
        return int(cursor.rowcount)


def _insert_fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """The columns an insert writes: every concrete one but an automatic primary key. The
    ORM's `pre_save` is not called, so no field may set itself when saved (auto_now)."""
    fields = []
    for field in model._meta.concrete_fields:
        if isinstance(field, AutoFieldMixin):
            continue
        assert not getattr(field, "auto_now", False) and not getattr(field, "auto_now_add", False)
        fields.append(field)
    return fields


_insert_columns: dict[type[models.Model], tuple[list[models.Field[Any, Any]], frozenset[str]]] = {}


def _insert_known(
    model: type[models.Model],
) -> tuple[list[models.Field[Any, Any]], frozenset[str]]:
    """The columns an insert writes and the names a row may give them by (kept per model)."""
    known = _insert_columns.get(model)
    if known is None:
        fields = _insert_fields(model)
        names = frozenset(name for field in fields for name in (field.name, field.attname))
        known = _insert_columns[model] = (fields, names)
    return known


def rows_insert(*, model: type[models.Model], rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """INSERT `rows` of `model` in one statement and return their primary keys: in the rows'
    order on PostgreSQL (as bulk_create assumes there); SQLite does not promise RETURNING's
    order, so a caller pairing the ids of several rows with its rows must not rely on it.
    A row gives values by field name or column attribute (`turn` or `turn_id`, the id); a
    field it leaves out takes its default, as `Model.objects.create` would. A unique
    constraint's violation raises IntegrityError (Django's cursor wraps it), as the ORM's."""
    fields, names = _insert_known(model)
    key = (connection.alias, "insert", model, len(rows))
    sql = _statements.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        pk_field = model._meta.pk
        assert pk_field is not None
        columns = ", ".join(quote(field.column) for field in fields)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql = _statements[key] = (
            f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "
            f"VALUES {', '.join([row] * len(rows))} RETURNING {quote(pk_field.column)}"
        )
    params = []
    for values in rows:
        unknown = values.keys() - names
        assert not unknown, f"{model.__name__} has no columns {sorted(unknown)}"
        for field in fields:
            value = values.get(field.attname, _MISSING)
            if value is _MISSING:
                value = values.get(field.name, _MISSING)
            if value is _MISSING:
                value = field.get_default()
            params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [int(row[0]) for row in cursor.fetchall()]


def instance_insert(obj: _M) -> _M:
    """INSERT the unsaved `obj` (built as `Model(...)`, so every field it was not given holds
    its default) with `rows_insert`'s statement, and give it its primary key and the state
    the ORM's `save` leaves: what `Model.objects.create` does, minus building and compiling
    an insert query per call (~0.3 ms of a process's CPU each, py-spy on bench/calls.py)."""
    [pk] = rows_insert(model=type(obj), rows=[instance_row(obj)])
    return instance_saved(obj, pk)


def instance_row(obj: models.Model) -> dict[str, Any]:
    """The unsaved `obj`'s columns, as a row of rows_insert (or an Insert step)."""
    fields, _ = _insert_known(type(obj))
    return {f.attname: getattr(obj, f.attname) for f in fields}


def instance_saved(obj: _M, pk: int) -> _M:
    """`obj`, inserted as row `pk`: its key and the state the ORM's `save` leaves."""
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = connection.alias
    return obj


# psycopg prepares only what is asked for (prepare=True) above this threshold: Django leaves
# it unset, and unset, psycopg prepares nothing at all (as conversations/services/rollups.py).
_PREPARE_WHEN_ASKED = 2**31 - 1


def rows_fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one read built once per process and return its rows (as Django's cursor gives
    them: convert them as the ORM does). On PostgreSQL it is prepared once per session
    (COSTLAB_DB_PREPARE_CALLS): planned afresh, the claim's read (three joins) took 0.35-0.40
    ms of PostgreSQL's CPU to plan against 0.07 ms to run, a send's state (four subqueries)
    0.17-0.22 against 0.04 (EXPLAIN ANALYZE, warm session, bench/calls.py's database).
    Logged as Django logs what it runs (tests count statements)."""
    if not (settings.COSTLAB_DB_PREPARE_CALLS and connection.vendor == "postgresql"):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    import psycopg
    from psycopg.pq import ExecStatus

    db = connections[connection.alias]  # the connection itself: its proxy costs per use
    db.ensure_connection()
    raw = db.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _PREPARE_WHEN_ASKED
    # A raw cursor takes the text as PostgreSQL's ($1, $2...), converted here once per
    # statement: psycopg converts "%s" placeholders on every execute and caches only short
    # statements with few parameters, and a turn's statement (its rows and rollup sums) is
    # neither: its conversion was ~8 % of a worker's samples (py-spy, bench/calls.py).
    with db.wrap_database_errors, psycopg.RawCursor(raw) as cursor:
        cursor.execute(_numbered(sql), params, prepare=True)
        # Whether it returned rows, from its result's status: `description` would build
        # a Column per column first.
        result = cursor.pgresult
        rows = cursor.fetchall() if result and result.status == ExecStatus.TUPLES_OK else []
    if db.queries_logged:
        db.queries_log.append({"sql": sql, "time": "0.000"})
    return rows


_numbered_texts: dict[str, bytes] = {}
_PLACEHOLDER = re.compile(r"%[s%]")


def _numbered(sql: str) -> bytes:
    """`sql` with its "%s" placeholders numbered as PostgreSQL's ($1, $2...) and "%%" as
    "%" (the one escape Django's SQL has), encoded: built once per statement text."""
    found = _numbered_texts.get(sql)
    if found is None:
        numbers = itertools.count(1)

        def numbered(mark: re.Match[str]) -> str:
            return "%" if mark.group() == "%%" else f"${next(numbers)}"

        found = _numbered_texts[sql] = _PLACEHOLDER.sub(numbered, sql).encode()
    return found


def insert_select_sql(model: type[models.Model], computed: Mapping[str, str], source: str) -> str:
    """`INSERT INTO <model's table> (<every column an insert writes>) SELECT ... FROM source`:
    a column named in `computed` takes its SQL expression (read from `source`), every other
    a parameter (insert_select_params gives them, in order)."""
    fields, _ = _insert_known(model)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    values = ", ".join(computed.get(field.attname, "%s") for field in fields)
    return f"INSERT INTO {quote(model._meta.db_table)} ({columns}) SELECT {values} FROM {source}"


def insert_select_params(
    model: type[models.Model], row: Mapping[str, Any], computed: Mapping[str, str]
) -> list[Any]:
    """The parameters of insert_select_sql's statement for `row` (as rows_insert's: a
    column it leaves out takes its default)."""
    fields, names = _insert_known(model)
    unknown = row.keys() - names
    assert not unknown, f"{model.__name__} has no columns {sorted(unknown)}"
    db = connections[connection.alias]
    return [
        _prepared(field, _insert_value(field, row), db)
        for field in fields
        if field.attname not in computed
    ]


# --- several writes, one statement ------------------------------------------------------------
# A chat turn writes its reply's Message, the Turn (pointing at that message), the Turn's
# UsageRecords, and marks its ApiCall and the answered CallAttempt (pointing at the turn):
# five statements, each a round trip (~0.15 ms of CPU for the worker and PostgreSQL together
# on a bare `SELECT 1`, bench/calls.py's machine) and a statement for PostgreSQL to parse and
# plan. On PostgreSQL they are one statement (data-modifying WITH, prepared once per session);
# elsewhere (SQLite has no INSERT inside WITH) they run one after the other, as before.


@dataclass(frozen=True, order=True)
class Written:
    """The primary key of the first row that step `step` of `rows_write_together` wrote: a
    value of a later step (a foreign key to that row). Ordered, so that sums taking the
    least or greatest of several (rollups' first and last turn) can hold one."""

    step: int


@dataclass(frozen=True)
class Insert:
    model: type[models.Model]
    rows: Sequence[Mapping[str, Any]]  # as rows_insert's
    # Written only if step `when` wrote or changed a row (one row then).
    when: int | None = None


@dataclass(frozen=True)
class Update:
    model: type[models.Model]
    pk: int
    values: Mapping[str, Any]  # as row_update's arguments
    increment: tuple[str, ...] = ()
    status_in: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lock:
    """A shared advisory lock of the transaction (rollup_lock.organization_lock's, taken
    shared): `keys` are its two 32-bit keys. The steps after it run once it is held."""

    keys: tuple[int, int]


@dataclass(frozen=True)
class Check:
    """Whether the row `pk` of `model` still holds `values`, read once every earlier step is
    done and locked FOR SHARE: 1, or 0 when a writer changed it meanwhile. Under READ
    COMMITTED a locking read finds a row's latest committed version, even one committed
    after the statement took its snapshot (while it waited for a Lock step, say)."""

    model: type[models.Model]
    pk: int
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Upsert:
    """Rows added to a sums table (a rollup): each row's `columns` values, the keys first;
    a row whose keys are there already has its figures combined with the stored ones, each
    by its kind (upsert_sql.on_conflict_combine; `keys` are the table's unique constraint).
    Written in key order, once every earlier step is done: writers of one table take its
    rows in one order, so none waits on another in a cycle."""

    model: type[models.Model]
    keys: tuple[str, ...]
    figures: tuple[tuple[str, str], ...]
    rows: Sequence[Sequence[Any]]
    conflict: tuple[str, ...] = ()  # the unique constraint's columns, if not all of `keys`


Step = Insert | Update | Lock | Check | Upsert


def _step_shape(step: Step) -> tuple[Any, ...]:
    """What shapes a step's statement text: its kind, model, columns, and which values are
    another step's key (or, for an update, NULL)."""
    if isinstance(step, Lock):
        return ("lock",)
    if isinstance(step, Check):
        return ("check", step.model, tuple(step.values))
    if isinstance(step, Upsert):
        written = tuple(
            tuple((i, value.step) for i, value in enumerate(row) if isinstance(value, Written))
            for row in step.rows
        )
        return ("upsert", step.model, step.keys, step.figures, step.conflict, written)
    if isinstance(step, Insert):
        refs = tuple(
            tuple(sorted((k, v.step) for k, v in row.items() if isinstance(v, Written)))
            for row in step.rows
        )
        return ("insert", step.model, refs, step.when)
    marks = tuple(
        ("ref", v.step) if isinstance(v, Written) else v is None for v in step.values.values()
    )
    return ("update", step.model, tuple(step.values), marks, step.increment, len(step.status_in))


def _insert_value(field: models.Field[Any, Any], row: Mapping[str, Any]) -> Any:
    value = row.get(field.attname, _MISSING)
    if value is _MISSING:
        value = row.get(field.name, _MISSING)
    return field.get_default() if value is _MISSING else value


def _value_sql(steps: Sequence[Step], number: int, value: Any, null: bool = False) -> str:
    """A value's place in step `number`'s text: another step's key (a subquery of its
    RETURNING), NULL, or a parameter."""
    if isinstance(value, Written):
        step = steps[value.step]
        assert isinstance(step, Insert) and value.step < number, "a step reads an earlier insert"
        written = step.model._meta.pk
        assert written is not None
        return f"(SELECT {connection.ops.quote_name(written.column)} FROM s{value.step} LIMIT 1)"
    return "NULL" if null else "%s"


def _upsert_columns(step: Upsert) -> list[models.Field[Any, Any]]:
    by_column = {field.column: field for field in step.model._meta.concrete_fields}
    return [by_column[name] for name in (*step.keys, *(name for name, _ in step.figures))]


def _upsert_sql(steps: Sequence[Step], number: int, step: Upsert) -> str:
    """INSERT ... SELECT its rows (each value cast to its column's type: in a VALUES list
    of its own, a parameter's type is not inferred from the column), in key order, after
    the step before it (its count, read in the WHERE, makes PostgreSQL finish that step
    first), ON CONFLICT combining the figures."""
    quote = connection.ops.quote_name
    fields = _upsert_columns(step)
    casts = [f"::{field.db_type(connection)}" for field in fields]
    rows = [
        ", ".join(
            _value_sql(steps, number, value) if isinstance(value, Written) else "%s" + cast
            for value, cast in zip(row, casts, strict=True)
        )
        for row in step.rows
    ]
    columns = ", ".join(quote(field.column) for field in fields)
    after = f" WHERE (SELECT count(*) FROM s{number - 1}) >= 0" if number else ""
    order = ", ".join(str(i + 1) for i in range(len(step.keys)))
    combine = on_conflict_combine(
        step.model._meta.db_table, step.conflict or step.keys, step.figures
    )
    return (
        f"INSERT INTO {quote(step.model._meta.db_table)} ({columns}) "
        f"SELECT * FROM (VALUES {', '.join(f'({row})' for row in rows)}) AS v"
        f"{after} ORDER BY {order}{combine} RETURNING 1"
    )


def _check_sql(number: int, step: Check) -> str:
    quote = connection.ops.quote_name
    pk = step.model._meta.pk
    assert pk is not None
    same = [
        f"{quote(_field(step.model, name).column)} IS NOT DISTINCT FROM %s" for name in step.values
    ]
    after = [f"(SELECT count(*) FROM s{number - 1}) >= 0"] if number else []
    where = " AND ".join([f"{quote(pk.column)} = %s", *same, *after])
    return f"SELECT 1 FROM {quote(step.model._meta.db_table)} WHERE {where} FOR SHARE"


def _together_sql(steps: Sequence[Step]) -> str:
    quote = connection.ops.quote_name
    parts = []
    selects = []
    for number, step in enumerate(steps):
        if isinstance(step, Lock | Check | Upsert):
            if isinstance(step, Lock):
                body = "SELECT pg_advisory_xact_lock_shared(%s, %s)"
            elif isinstance(step, Check):
                body = _check_sql(number, step)
            else:
                body = _upsert_sql(steps, number, step)
            parts.append(f"s{number} AS ({body})")
            selects.append(f"(SELECT count(*) FROM s{number})")
            continue
        table = quote(step.model._meta.db_table)
        pk_field = step.model._meta.pk
        assert pk_field is not None
        pk = quote(pk_field.column)

        value_sql = partial(_value_sql, steps, number)
        if isinstance(step, Insert):
            fields, _ = _insert_known(step.model)
            columns = ", ".join(quote(field.column) for field in fields)
            rows = [
                ", ".join(value_sql(_insert_value(f, row)) for f in fields) for row in step.rows
            ]
            if step.when is None:
                values = "VALUES " + ", ".join(f"({row})" for row in rows)
            else:
                assert len(rows) == 1 and step.when < number, "one row, after its condition"
                values = f"SELECT {rows[0]} WHERE EXISTS (SELECT FROM s{step.when})"
            body = f"INSERT INTO {table} ({columns}) {values} RETURNING {pk}"
            selects.append(f"(SELECT min({pk}) FROM s{number})")
        else:
            sets = [
                f"{quote(_field(step.model, name).column)} = {value_sql(value, value is None)}"
                for name, value in step.values.items()
            ]
            for name in step.increment:
                column = quote(_field(step.model, name).column)
                sets.append(f"{column} = {column} + 1")
            where = f"{pk} = %s"
            if step.status_in:
                marks = ", ".join(["%s"] * len(step.status_in))
                where += f" AND {quote(_field(step.model, 'status').column)} IN ({marks})"
            body = f"UPDATE {table} SET {', '.join(sets)} WHERE {where} RETURNING {pk}"
            selects.append(f"(SELECT count(*) FROM s{number})")
        parts.append(f"s{number} AS ({body})")
    return f"WITH {', '.join(parts)} SELECT {', '.join(selects)}"


# Field classes whose get_db_prep_save gives a value of one exact Python type (or None)
# back unchanged, on PostgreSQL as on SQLite (an int for the integer fields, a str, a bool):
# such values skip it. It was ~14 % of a worker's CPU samples, most of it reaching
# `django.db.connection` (a proxy, a thread-local lookup per use) on each of a turn's
# ~150 values (py-spy --gil on bench/calls.py).
_PLAIN_FIELDS: dict[type[models.Field[Any, Any]], type] = {
    **dict.fromkeys(
        (
            models.IntegerField,
            models.BigIntegerField,
            models.SmallIntegerField,
            models.PositiveIntegerField,
            models.PositiveBigIntegerField,
            models.PositiveSmallIntegerField,
            models.AutoField,
            models.BigAutoField,
        ),
        int,
    ),
    models.CharField: str,
    models.TextField: str,
    models.BooleanField: bool,
}
_plain_types: dict[models.Field[Any, Any], type | None] = {}


def _plain_type(field: models.Field[Any, Any]) -> type | None:
    """The Python type whose values `field` stores as they are (see _PLAIN_FIELDS); None
    when every value goes through get_db_prep_save. A foreign key is its target's."""
    if field not in _plain_types:
        target = field.target_field if isinstance(field, models.ForeignKey) else field
        _plain_types[field] = _PLAIN_FIELDS.get(type(target))
    return _plain_types[field]


def _prepared(field: models.Field[Any, Any], value: Any, db: Any) -> Any:
    plain = _plain_type(field)
    if plain is not None and (value is None or type(value) is plain):
        return value
    return field.get_db_prep_save(value, db)


def _together_params(steps: Sequence[Step]) -> list[Any]:
    db = connections[connection.alias]  # the connection itself, not its proxy
    params: list[Any] = []
    for step in steps:
        if isinstance(step, Lock):
            params += step.keys
        elif isinstance(step, Check):
            params.append(step.pk)
            params += [
                _field(step.model, name).get_db_prep_save(value, db)
                for name, value in step.values.items()
            ]
        elif isinstance(step, Upsert):
            # Sums (rollups.turn_sums): ints, Decimals, dates, strs, bools and None, which
            # PostgreSQL's adapters take as they are (only PostgreSQL runs this statement).
            for values in step.rows:
                params += [value for value in values if not isinstance(value, Written)]
        elif isinstance(step, Insert):
            fields, names = _insert_known(step.model)
            for row in step.rows:
                unknown = row.keys() - names
                assert not unknown, f"{step.model.__name__} has no columns {sorted(unknown)}"
                for field in fields:
                    value = _insert_value(field, row)
                    if not isinstance(value, Written):
                        params.append(_prepared(field, value, db))
        else:
            for name, value in step.values.items():
                if value is not None and not isinstance(value, Written):
                    params.append(_prepared(_field(step.model, name), value, db))
            params += [step.pk, *step.status_in]
    return params


def rows_write_together(steps: Sequence[Step]) -> list[int]:
    """Write `steps` in order, as rows_insert and row_update would one by one, all or
    nothing: per step, the key of the first row an Insert wrote (0 when its condition
    said no), or how many rows an Update (or an Upsert) changed. A value `Written(n)` is the key step n
    wrote. On PostgreSQL one statement (prepared once per session, COSTLAB_DB_PREPARE_CALLS;
    outside a transaction, its own, with no BEGIN and COMMIT round trips); a unique
    constraint's violation raises IntegrityError and writes nothing."""
    if connection.vendor != "postgresql":
        with transaction.atomic():
            return _one_by_one(steps)
    key = (connection.alias, "together", tuple(_step_shape(step) for step in steps))
    sql = _statements.get(key)
    if sql is None:
        sql = _statements[key] = _together_sql(steps)
    [row] = rows_fetch(sql, _together_params(steps))
    return [int(value or 0) for value in row]


def _one_by_one(steps: Sequence[Step]) -> list[int]:
    """The steps one statement each, in order (SQLite). Lock, Check and Upsert are
    PostgreSQL's: only a turn whose sums rollups.turn_sums computed has them, and it computes
    none elsewhere (SQLite takes rollups.turns_added)."""
    done: list[int] = []

    def resolved(values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: done[v.step] if isinstance(v, Written) else v for k, v in values.items()}

    for step in steps:
        if isinstance(step, Lock | Check | Upsert):
            raise NotImplementedError(f"{type(step).__name__} steps run on PostgreSQL only")
        if isinstance(step, Insert):
            if step.when is not None and not done[step.when]:
                done.append(0)
                continue
            rows = [resolved(row) for row in step.rows]
            done.append(rows_insert(model=step.model, rows=rows)[0])
        else:
            changed = row_update(
                model=step.model,
                pk=step.pk,
                values=resolved(step.values),
                increment=step.increment,
                status_in=step.status_in,
            )
            done.append(changed)
    return done
